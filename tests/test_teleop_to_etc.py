"""`etc-vla teleop to-etc`: recorded teleop episodes -> target-scene ETC (through the ETC engine) + Stage-3 snippet."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import yaml

from etc_ros.core import spec as robot_spec
from etc_ros.core.camera import CameraIntrinsics, CameraModel, look_at
from etc_ros.core.kinematics import WidowXKinematics
from etc_ros.teleop.recorder import RecorderConfig, RecordingSession
from etc_training.cli import main

KIN = WidowXKinematics.from_urdf()
CAM = CameraModel(CameraIntrinsics(), look_at([0.7, 0.3, 0.45], [0.25, 0.0, 0.08]), "primary")
DOWN = (0.0, math.pi / 2, 0.0)


def _pick_place_joints(offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Joint path of a pick-and-place (EE waypoints, gripper down) and the gripper command per frame."""
    way = [((0.28, 0.0, 0.16), 1), ((0.30, 0.05 + offset, 0.05), 1), ((0.30, 0.05 + offset, 0.05), 0),
           ((0.30, 0.05 + offset, 0.12), 0), ((0.25, -0.08, 0.12), 0), ((0.25, -0.08, 0.06), 0),
           ((0.25, -0.08, 0.06), 1), ((0.25, -0.08, 0.14), 1)]
    qs, gs = [], []
    q = robot_spec.READY_POSE.copy()
    for (p0, g0), (p1, g1) in zip(way[:-1], way[1:]):
        for s in np.linspace(0, 1, 6)[1:]:
            res = KIN.ik_position_orientation(np.array(p0) + s * (np.array(p1) - np.array(p0)), DOWN, q)
            assert res.success, res.message
            q = res.q
            qs.append(q)
            gs.append(g1 if s > 0.5 else g0)
    return np.array(qs), np.array(gs, dtype=float)


@pytest.fixture(scope="module")
def episodes(tmp_path_factory):
    root = tmp_path_factory.mktemp("teleop") / "episodes"
    task = {"family": "pick_place", "object": "red cube", "target": "blue bowl"}
    core = RecordingSession(RecorderConfig(root=str(root), image_height=96, image_width=128, min_free_mb=1.0,
                                           task=task),
                            camera_models={"primary": CAM})
    t = 1_700_000_000_000_000_000
    img = np.full((480, 640, 3), 120, np.uint8)
    for k in range(2):
        qs, cmd = _pick_place_joints(0.02 * k)
        opening = np.empty(len(cmd))
        o = 1.0
        for i, c in enumerate(cmd):  # the fingers follow the command within ~2 frames
            o = o + np.clip(c - o, -0.4, 0.4)
            opening[i] = o
        core.start("put the red cube in the blue bowl")
        for q, g, c in zip(qs, opening, cmd):
            t += 200_000_000
            assert core.add_sample({"primary": img}, q, g, t, c)
        assert core.stop(success=True)[0]
    core.close()
    return root


def test_to_etc_without_annotations(episodes, tmp_path, capsys):
    out = tmp_path / "etc"
    assert main(["teleop", "to-etc", "--episodes", str(episodes), "--out", str(out), "stride=3", "overlays=0"]) == 0
    text = capsys.readouterr().out
    assert "validation OK" in text and "action-aligned + task-oriented ETC only" in text
    index = json.loads((out / "index.json").read_text())
    by_sub = index["counts"]["by_subtype"]
    assert by_sub.get("trajectory", 0) > 5 and by_sub.get("plan", 0) >= 1 and by_sub.get("affordance_grasp", 0) >= 1
    assert not {"point", "box", "objects", "relation", "goal"} & set(by_sub)  # no scene grounding without annotations
    assert (out / "samples" / "target").is_dir()
    snippet = yaml.safe_load((out / "stage3_mixture.yaml").read_text())
    st3 = snippet["stages"]["stage3"]
    assert st3["action_splits"] == ["target"]
    assert st3["etc_sources"][0] == {"name": "target", "kind": "etc", "path": str(out.resolve()),
                                     "splits": ["target"], "weight": 0.9}
    assert st3["etc_sources"][1]["name"] == "ood" and st3["etc_sources"][1]["weight"] == 0.1
    # a valid piece of the training config
    from etc_ros.core.config import load_config
    from etc_training.recipe.config import TrainConfig

    cfg = load_config(TrainConfig, out / "stage3_mixture.yaml")
    assert cfg.stages.stage3.etc_sources[0].path == str(out.resolve())


def test_to_etc_with_annotations_updates_an_existing_snippet(episodes, tmp_path, capsys):
    ann = {"format": "etc_annotations/1", "episodes": {"0": {"frames": {"0": {"primary": [
        {"name": "red cube", "point": [60.0, 55.0], "box": [54, 50, 66, 60]},
        {"name": "blue bowl", "box": [20, 40, 44, 62]}]}}}}}
    ann_path = tmp_path / "ann.json"
    ann_path.write_text(json.dumps(ann))
    mix = tmp_path / "stage3.yaml"
    mix.write_text(yaml.safe_dump({"stages": {"stage3": {"steps": 7, "etc_sources": [
        {"name": "general", "kind": "general", "path": "/data/vqa", "weight": 0.2},
        {"name": "target", "kind": "etc", "path": "/old", "splits": ["target"], "weight": 0.5}]}}}))
    out = tmp_path / "etc"
    assert main(["teleop", "to-etc", "--episodes", str(episodes), "--out", str(out), "--annotations", str(ann_path),
                 "--mixture", str(mix), "--ood-weight", "0", "stride=4", "overlays=0"]) == 0
    by_sub = json.loads((out / "index.json").read_text())["counts"]["by_subtype"]
    assert by_sub.get("point", 0) >= 1 and by_sub.get("box", 0) >= 1 and by_sub.get("trajectory", 0) > 3
    st3 = yaml.safe_load(mix.read_text())["stages"]["stage3"]
    assert st3["steps"] == 7  # other keys kept
    names = [s["name"] for s in st3["etc_sources"]]
    assert names == ["target", "general"]  # target replaced, no ood (weight 0), general kept
    assert st3["etc_sources"][0]["path"] == str(out.resolve())


def test_to_etc_refuses_a_broken_dataset(tmp_path, capsys):
    bad = tmp_path / "bad"
    (bad / "meta").mkdir(parents=True)
    (bad / "meta" / "info.json").write_text("{}")
    assert main(["teleop", "to-etc", "--episodes", str(bad), "--out", str(tmp_path / "etc")]) == 2
    assert "not a valid episode dataset" in capsys.readouterr().err
