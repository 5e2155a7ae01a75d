"""ETC builder end to end on small generated datasets: all categories, validation against ground truth, OOD and
teleop (target-scene) episodes, the CLI, overlays and stats."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from etc_ros.core.errors import CalibrationError, UserError
from etc_training.etc import coords
from etc_training.etc.builder import build_etc
from etc_training.etc.config import ALL_SUBTYPES, EtcConfig
from etc_training.etc.store import load_samples
from etc_training.etc.synthetic import MemoryReader, make_episode, teleop_version, write_dataset
from etc_training.etc.validate import validate_etc

FAMILIES = ("pick_place", "pick_up", "stack", "push")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    eps = [make_episode(10 + i, fam) for i, fam in enumerate(FAMILIES)]
    eps.append(make_episode(20, "pick_place", split="ood", n_distractors=2))
    return write_dataset(tmp_path_factory.mktemp("etc_ds") / "episodes", eps)


@pytest.fixture(scope="module")
def built(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("etc_out") / "etc"
    cfg = EtcConfig(stride=3, overlays=4)
    summary = build_etc(dataset, out, cfg, progress=False)
    return out, summary


def test_build_covers_every_category_and_subtype(built):
    out, summary = built
    assert summary["n_episodes"] == 5
    assert all(summary["by_category"][c] > 0 for c in ("scene_grounding", "task_oriented", "action_planning"))
    assert set(summary["by_subtype"]) == set(ALL_SUBTYPES)
    assert summary["segmentation"]["events_agree"] == 5
    samples = load_samples(out)
    assert len(samples) == summary["n_samples"]
    templates = {}
    for s in samples:
        templates.setdefault(s["subtype"], set()).add(s["template"])
    assert all(len(v) >= 2 for v in templates.values()), templates  # paraphrases are used
    assert len({s["id"] for s in samples}) == len(samples)


def test_build_validates_with_zero_errors(built, dataset):
    out, summary = built
    rep = validate_etc(out)
    assert rep["n_errors"] == 0, rep["errors"][:5]
    assert rep["n_checked_against_dataset"] == summary["n_samples"] > 300
    assert (out / "validation.json").is_file()


def test_outputs_index_stats_overlays(built):
    out, summary = built
    idx = json.loads((out / "index.json").read_text())
    assert idx["format"] == "etc_samples/1" and idx["config"]["stride"] == 3
    assert {f["split"] for f in idx["files"]} == {"train", "ood"}
    for f in idx["files"]:
        assert (out / f["path"]).is_file()
    stats = json.loads((out / "stats.json").read_text())
    assert stats["n_samples"] == summary["n_samples"]
    assert abs(sum(stats["category_fraction"].values()) - 1.0) < 1e-3
    assert "| trajectory |" in (out / "stats.md").read_text()
    pngs = sorted((out / "overlays").glob("*.png"))
    assert len(pngs) == 4
    from PIL import Image

    with Image.open(pngs[0]) as im:
        assert im.size[0] >= 448
    assert "trajectory" in pngs[0].name  # geometric subtypes are drawn first


def test_images_are_referenced_not_copied(built, dataset):
    out, _ = built
    assert not list(out.joinpath("samples").rglob("*.png"))
    from etc_ros.data import DatasetReader

    r = DatasetReader(dataset)
    s = next(x for x in load_samples(out) if x["subtype"] == "point")
    ref = s["images"][0]
    assert set(ref) >= {"episode", "frame", "camera", "dataset"}
    assert Path(ref["dataset"]) == dataset.resolve()
    frame = r.episode_frame(ref["episode"], ref["frame"])["observation.images." + ref["camera"]]
    # the referenced pixel is the drawn object's colour in the synthetic images
    u, v = coords.loc_to_point(coords.parse_answer("point", s["answer"]), 160, 120)
    assert tuple(frame[int(round(v)), int(round(u))]) != (200, 200, 200)


def test_trajectory_is_fk_projected_through_the_calibration(built, dataset):
    """Recompute one trajectory by hand: FK of the recorded joints, pinhole projection, 0..1023 grid."""
    from etc_ros.core.kinematics import WidowXKinematics
    from etc_ros.data import DatasetReader

    out, _ = built
    r = DatasetReader(dataset)
    s = next(x for x in load_samples(out) if x["subtype"] == "trajectory" and x["images"][0]["frame"] > 0)
    ref = s["images"][0]
    ep = r.load_episode(ref["episode"], images=False)
    cam = ep.cameras[ref["camera"]]
    t = ref["frame"]
    frames = [int(np.floor(x + 0.5)) for x in np.linspace(t, min(t + 20, len(ep.state) - 1), 5)]
    kin = WidowXKinematics.from_urdf()
    K = cam.intrinsics
    want = []
    for f in frames:
        p = kin.fk(ep.state[f, :6].astype(float))[:3, 3]
        pc = np.linalg.inv(cam.T_base_cam) @ np.append(p, 1.0)
        u, v = K.fx * pc[0] / pc[2] + K.cx, K.fy * pc[1] / pc[2] + K.cy
        g = 1 if ep.state[f, 6] >= 0.5 else 0
        want.append([int(np.floor((u + 0.5) / K.width * 1023 + 0.5)), int(np.floor((v + 0.5) / K.height * 1023 + 0.5)),
                     g])
    assert coords.parse_answer("trajectory", s["answer"]) == want
    assert s["target"]["frames"][0] == t  # starts at the gripper's current position


def test_ood_split_is_marked_from_the_episode(built):
    out, summary = built
    ood = load_samples(out, splits=["ood"])
    assert ood and all(s["split"] == "ood" and s["source_episode"] == "episode_000004" for s in ood)
    assert summary["by_split"]["ood"] == len(ood)
    assert {s["category"] for s in ood} == {"scene_grounding", "task_oriented", "action_planning"}


def test_ood_without_action_labels(tmp_path):
    ep = make_episode(5, "stack", split="ood")
    ep.action = None  # OOD scenes need no action labels
    summary = build_etc(MemoryReader([ep]), tmp_path / "etc", EtcConfig(stride=4, overlays=1), progress=False)
    assert summary["by_split"] == {"ood": summary["n_samples"]} and summary["n_samples"] > 0
    assert validate_etc(tmp_path / "etc", reader=MemoryReader([ep]))["n_errors"] == 0


def test_teleop_episode_without_calibration_is_a_clear_error(tmp_path):
    ds = write_dataset(tmp_path / "teleop", [teleop_version(make_episode(7, "pick_place"))])
    with pytest.raises(CalibrationError) as ei:
        build_etc(ds, tmp_path / "etc", EtcConfig(overlays=0), progress=False)
    msg = str(ei.value)
    for needle in ("episode_000000", "calibration", "'primary'", "trajectory", "T_base_cam"):
        assert needle in msg, msg


def test_teleop_target_scene_etc_with_annotations(tmp_path):
    """No calibration, no objects: task-oriented ETC from joints + gripper alone, scene grounding from the
    operator annotation file; trajectory ETC skipped when asked to."""
    base = make_episode(8, "pick_place")
    ds = write_dataset(tmp_path / "teleop", [teleop_version(base)])
    objs = [o for o in base.objects[0]]
    ann = {"format": "etc_annotations/1", "episodes": {"0": {"frames": {"0": {"primary": [
        {"name": o["name"], "point": o["cameras"]["primary"]["point"], "box": o["cameras"]["primary"]["box"]}
        for o in objs]}}}}}
    ann_path = tmp_path / "ann.json"
    ann_path.write_text(json.dumps(ann))
    cfg = EtcConfig(stride=4, overlays=0, on_missing_calibration="skip", annotations=str(ann_path))
    summary = build_etc(ds, tmp_path / "etc", cfg, progress=False)
    subs = summary["by_subtype"]
    assert "trajectory" not in subs and "affordance_grasp" not in subs
    assert subs["plan"] >= 1 and subs["next_subtask"] > 3 and subs["done"] > 3
    assert subs["point"] >= 1 and subs["box"] >= 1 and subs["objects"] == 1 and subs["relation"] == 1
    sg = load_samples(tmp_path / "etc", categories=["scene_grounding"])
    assert {s["images"][0]["frame"] for s in sg if s["subtype"] != "goal"} == {0}
    rep = validate_etc(tmp_path / "etc")
    assert rep["n_errors"] == 0, rep["errors"][:5]
    # the plan came from the gripper signal alone and matches the hidden ground truth events
    plan = next(s for s in load_samples(tmp_path / "etc") if s["subtype"] == "plan")
    grasp = [x["start"] for x in plan["target"]["steps"] if x["phase"] == "grasp"]
    assert [abs(a - e["frame"]) <= 1 for a, e in zip(grasp, [e for e in base.metadata["gripper_events"]
                                                             if e["type"] == "close"])] == [True]


def _rewrite(out: Path, fn) -> None:
    for p in (out / "samples").rglob("*.jsonl"):
        recs = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
        p.write_text("".join(json.dumps(fn(r)) + "\n" for r in recs))


@pytest.mark.parametrize("subtype,corrupt,check", [
    ("point", lambda r: {**r, "answer": "[1, 2, 3]"}, "parse"),
    ("box", lambda r: {**r, "answer": coords.fmt_box([0, 0, 5, 5])}, "parse"),
    ("trajectory", "shift", "trajectory_projection"),
    ("point", "off_object", "on_object"),
    ("plan", "move_grasp", "plan_events"),
    ("done", "flip", "done"),
    ("relation", "swap", "relation"),
    ("objects", "drop", "objects"),
    ("affordance_grasp", "event", "affordance"),
])
def test_validator_catches_corrupted_records(built, tmp_path, subtype, corrupt, check):
    src, _ = built
    out = tmp_path / "etc"
    shutil.copytree(src, out)
    hit = []

    def fn(r):
        if r["subtype"] != subtype or hit:
            return r
        hit.append(r["id"])
        if callable(corrupt):
            return corrupt(r)
        r = copy.deepcopy(r)
        tg = r["target"]
        if corrupt == "shift":
            tg["loc"] = [[min(1023, a + 40), b] for a, b in tg["loc"]]
            tg["pixel"] = [[coords.from_loc(a, 160), coords.from_loc(b, 120)] for a, b in tg["loc"]]
            r["answer"] = coords.fmt_trajectory([[a, b, g] for (a, b), g in zip(tg["loc"], tg["gripper"])])
        elif corrupt == "off_object":
            tg["pixel"] = [0.0, 0.0]
            tg["loc"] = coords.point_to_loc(tg["pixel"], 160, 120)
            tg["box_pixel"] = None
            r["answer"] = coords.fmt_point(tg["loc"])
        elif corrupt == "move_grasp":
            steps = tg["steps"]
            k = next(i for i, s in enumerate(steps) if s["phase"] == "grasp")
            steps[k - 1]["end"] = steps[k]["start"] = steps[k]["start"] - 6
        elif corrupt == "flip":
            tg["done"] = not tg["done"]
            r["answer"] = coords.fmt_done(tg["done"])
        elif corrupt == "swap":
            rel = {"left_of": "right_of", "right_of": "left_of"}
            tg["relations"] = [rel.get(x, x) for x in tg["relations"]]
            if tg["relations"] == r["target"]["relations"] and "left_of" not in tg["relations"] and \
                    "right_of" not in tg["relations"]:
                tg["relations"] = ["left_of"] if tg["du_px"] > 0 else ["right_of"]
            r["answer"] = coords.fmt_relation(tg["relations"])
        elif corrupt == "drop":
            tg["names"], tg["loc"] = tg["names"][:-1], tg["loc"][:-1]
            r["answer"] = coords.fmt_list(tg["names"])
        elif corrupt == "event":
            tg["event_frame"] = max(0, tg["event_frame"] - 8)
        return r

    _rewrite(out, fn)
    assert hit, f"no {subtype} record to corrupt"
    rep = validate_etc(out)
    assert rep["n_errors"] >= 1
    assert check in rep["errors_by_check"], rep["errors_by_check"]
    assert all(e["id"] == hit[0] for e in rep["errors"]), rep["errors"][:3]


def test_deterministic_and_workers_agree(dataset, tmp_path):
    a = build_etc(dataset, tmp_path / "a", EtcConfig(stride=4, overlays=0), progress=False, write_extras=False)
    b = build_etc(dataset, tmp_path / "b", EtcConfig(stride=4, overlays=0, workers=2), progress=False,
                  write_extras=False)
    assert a["n_samples"] == b["n_samples"]
    for f in a["files"]:
        assert (tmp_path / "a" / f["path"]).read_text() == (tmp_path / "b" / f["path"]).read_text()


def test_subtype_selection_caps_and_bad_config(dataset, tmp_path):
    cfg = EtcConfig(stride=2, overlays=0, subtypes=["trajectory", "plan"], max_per_episode={"plan": 1},
                    waypoints=3, horizon=6)
    s = build_etc(dataset, tmp_path / "e", cfg, progress=False, write_extras=False)
    assert set(s["by_subtype"]) == {"trajectory", "plan"} and s["by_subtype"]["plan"] == 5
    traj = load_samples(tmp_path / "e", categories=["action_planning"])
    assert all(len(coords.parse_answer("trajectory", x["answer"])) == 3 for x in traj)
    for bad, match in ((dict(stride=0), "stride"), (dict(subtypes=["dance"]), "unknown subtypes"),
                       (dict(waypoints=5, horizon=2), "horizon"), (dict(cameras=["wrist"]), "wrist")):
        with pytest.raises(UserError, match=match):
            build_etc(dataset, tmp_path / "bad", EtcConfig(overlays=0, **bad), progress=False)
    with pytest.raises(UserError, match="not found"):
        build_etc(tmp_path / "nowhere", tmp_path / "bad", EtcConfig(), progress=False)


def test_cli_build_validate_overlays_stats(dataset, tmp_path, capsys):
    from etc_training.cli import main

    out = tmp_path / "cli"
    assert main(["etc", "build", "--episodes", str(dataset), "--out", str(out), "stride=6", "overlays=2"]) == 0
    text = capsys.readouterr().out
    assert "0 errors" in text and '"n_samples"' in text
    assert main(["etc", "validate", str(out)]) == 0
    assert main(["etc", "overlays", str(out), "--out", str(tmp_path / "ov"), "-n", "3"]) == 0
    assert len(list((tmp_path / "ov").glob("*.png"))) == 3
    assert main(["etc", "stats", str(out)]) == 0
    assert "# ETC statistics" in capsys.readouterr().out
    _rewrite(out, lambda r: {**r, "answer": "garbage"} if r["subtype"] == "box" else r)
    assert main(["etc", "validate", str(out)]) == 1
    assert main(["etc", "build", "--episodes", str(dataset), "--out", str(out), "stirde=3"]) == 2
    assert "stirde" in capsys.readouterr().err
    assert main(["etc", "validate", str(tmp_path / "nothing")]) == 2


def test_failed_episode_teaches_no_plan_or_affordance(tmp_path):
    ep = make_episode(9, "pick_place")
    ep.success = False
    s = build_etc(MemoryReader([ep]), tmp_path / "etc", EtcConfig(stride=3, overlays=0), progress=False)
    subs = s["by_subtype"]
    assert not {"plan", "next_subtask", "affordance_grasp", "affordance_place"} & set(subs)
    assert subs["trajectory"] > 0 and subs["point"] > 0
    done = load_samples(tmp_path / "etc", categories=["task_oriented"])
    assert done and all(x["subtype"] == "done" and x["answer"] == "no" for x in done)
    assert validate_etc(tmp_path / "etc", reader=MemoryReader([ep]))["n_errors"] == 0


def test_relative_dataset_reference_survives_moving_both(dataset, tmp_path):
    root = tmp_path / "bundle"
    shutil.copytree(dataset, root / "episodes")
    build_etc(root / "episodes", root / "etc", EtcConfig(stride=6, overlays=0, dataset_path="relative",
                                                         subtypes=["trajectory", "point"]), progress=False)
    ref = load_samples(root / "etc")[0]["images"][0]["dataset"]
    assert ref == "../episodes"
    moved = tmp_path / "moved"
    shutil.move(str(root), str(moved))
    rep = validate_etc(moved / "etc")
    assert rep["n_errors"] == 0 and rep["n_checked_against_dataset"] == rep["n_samples"] > 0


def test_calibrated_teleop_gives_action_aligned_and_task_etc_from_joints_alone(tmp_path):
    base = make_episode(11, "stack")
    ds = write_dataset(tmp_path / "teleop", [teleop_version(base, calibrated=True)])
    s = build_etc(ds, tmp_path / "etc", EtcConfig(stride=3, overlays=0), progress=False)
    subs = s["by_subtype"]
    assert {"trajectory", "affordance_grasp", "affordance_place", "plan", "next_subtask", "done"} <= set(subs)
    assert not {"point", "box", "objects", "relation"} & set(subs)  # no objects, no annotations
    assert validate_etc(tmp_path / "etc")["n_errors"] == 0
    # the grasp affordance is where the hidden ground-truth object was
    aff = next(x for x in load_samples(tmp_path / "etc") if x["subtype"] == "affordance_grasp")
    t = aff["images"][0]["frame"]
    box = next(o for o in base.objects[t] if o["name"] == base.metadata["task"]["object"])["cameras"]["primary"]["box"]
    u, v = aff["target"]["pixel"]
    assert box[0] <= u <= box[2] and box[1] <= v <= box[3]
