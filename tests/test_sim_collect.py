"""`etc-vla sim collect`: datasets that pass validation, ground truth and metadata, worker-count independence;
episode videos."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

from etc_ros.data import DatasetReader, validate_dataset
from etc_training.cli import main as cli_main
from etc_training.sim import SimConfig
from etc_training.sim.collect import collect

REQUIRED_META = {"source", "seed", "task", "gripper_events", "subtasks", "distractors", "split", "template_id"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim") / "ds1"
    cfg = SimConfig(episodes=2, workers=1, seed=5, families=["pick_place", "push"])
    summary = collect(cfg, out, progress=False)
    return out, summary


def test_collect_writes_a_valid_dataset(dataset):
    out, summary = dataset
    assert summary["episodes"] == 2 and summary["frames"] > 10
    assert validate_dataset(out) == []
    r = DatasetReader(out)
    assert r.cameras == ("primary",) and r.fps == 5.0
    for i in r.episodes():
        ep = r.load_episode(i)
        T = len(ep)
        meta = ep.metadata
        assert REQUIRED_META <= set(meta)
        assert meta["source"] == "sim" and meta["split"] == "train" and ep.success
        assert meta["task"]["family"] in ("pick_place", "push")
        assert meta["task"]["object"] in ep.instruction and meta["task"]["goal_text"].startswith("the ")
        assert meta["subtasks"][0]["start"] == 0 and meta["subtasks"][-1]["end"] <= T
        assert all(s["start"] < s["end"] for s in meta["subtasks"])
        assert ep.images["primary"].shape == (T, 224, 224, 3)
        assert np.all(np.abs(ep.action[:, :3]) <= 0.05 + 1e-6)
        assert ep.cameras["primary"].intrinsics.width == 224
        # ground truth per frame: every object, with pose and the primary camera's point / box / visibility
        names = {o["name"] for o in ep.objects[0]}
        assert meta["task"]["object"] in names and set(meta["distractors"]) <= names
        for frame in (ep.objects[0], ep.objects[-1]):
            for o in frame:
                assert len(o["pose"]) == 7 and len(o["size"]) == 3 and o["category"]
                c = o["cameras"]["primary"]
                assert len(c["point"]) == 2 and isinstance(c["visible"], bool)
        if meta["task"]["family"] == "pick_place":
            types = [e["type"] for e in meta["gripper_events"]]
            assert types[:2] == ["close", "open"]


def test_cli_collect_with_two_workers_gives_the_same_episodes(dataset, tmp_path):
    out1, _ = dataset
    out2 = tmp_path / "ds2"
    rc = cli_main(["sim", "collect", "--split", "train", "--episodes", "2", "--workers", "2", "--seed", "5",
                   "--out", str(out2), "--no-progress", "families=[pick_place,push]"])
    assert rc == 0
    assert validate_dataset(out2) == []
    r1, r2 = DatasetReader(out1), DatasetReader(out2)
    assert r1.episodes() == r2.episodes()
    for i in r1.episodes():
        e1, e2 = r1.load_episode(i, images=False), r2.load_episode(i, images=False)
        assert e1.instruction == e2.instruction
        assert np.array_equal(e1.action, e2.action)
        assert e1.metadata["seed"] == e2.metadata["seed"]


def test_cli_rejects_bad_input(tmp_path, capsys):
    rc = cli_main(["sim", "collect", "--split", "nope", "--episodes", "1", "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "unknown split" in capsys.readouterr().err
    rc = cli_main(["sim", "collect", "--episodes", "0", "--out", str(tmp_path / "y"), "--no-progress"])
    assert rc == 2


def test_save_episode_gif_and_mp4(dataset, tmp_path):
    from PIL import Image

    from etc_training.sim.video import VideoError, save_episode_gif

    out, _ = dataset
    ep = DatasetReader(out).load_episode(0)
    g = save_episode_gif(ep, tmp_path / "ep.gif", scale=2)
    with Image.open(g) as im:
        assert im.n_frames == len(ep) and im.size == (448, 448)
    m = save_episode_gif(ep.images["primary"], tmp_path / "ep.mp4", caption=False)
    import av

    with av.open(str(m)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == len(ep)
    with pytest.raises(VideoError):
        save_episode_gif(ep, tmp_path / "ep.avi")
    with pytest.raises(VideoError):
        save_episode_gif(np.zeros((3, 8, 8), dtype=np.uint8), tmp_path / "bad.gif")
