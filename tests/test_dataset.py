"""Episode dataset: write -> read round trips, random access, atomic commits / crash leftovers, corruption,
input validation, validate / repair, LeRobot v3 layout, CLI."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etc_ros.core.camera import CameraIntrinsics, CameraModel, look_at
from etc_ros.data import (
    DatasetError,
    DatasetReader,
    DatasetSpec,
    DatasetWriter,
    EpisodeData,
    repair_dataset,
    validate_dataset,
)
from etc_ros.data.schema import ROWS_PER_GROUP

REPO = Path(__file__).resolve().parents[1]
H, W = 24, 32


def spec_small(**kw) -> DatasetSpec:
    d = dict(fps=5.0, cameras={"primary": (H, W), "wrist": (16, 16)}, depth=("primary",))
    d.update(kw)
    return DatasetSpec(**d)


def cam_model(h: int = H, w: int = W) -> CameraModel:
    T = look_at(np.array([0.6, 0.0, 0.5]), np.array([0.3, 0.0, 0.0]))
    return CameraModel(CameraIntrinsics().resized(w, h), T, "primary")


def make_episode(seed: int, T: int, spec: DatasetSpec, instruction: str = "pick up the red cube",
                 split: str = "train", success: bool | None = True, with_ns: bool = True) -> EpisodeData:
    rng = np.random.default_rng(seed)
    images = {c: rng.integers(0, 256, (T, h, w, 3), dtype=np.uint8) for c, (h, w) in spec.cameras.items()}
    depth = {c: rng.integers(0, 5000, (T, *spec.cameras[c]), dtype=np.uint16) for c in spec.depth_cameras} or None
    state = rng.uniform(-1, 1, (T, 7)).astype(np.float32)
    state[:, 6] = rng.uniform(0, 1, T)
    action = rng.uniform(-0.05, 0.05, (T, 7)).astype(np.float32)
    action[:, 6] = rng.integers(0, 2, T)
    objects = [[{"name": "red_cube", "category": "cube", "color": "red",
                 "pose": [0.3, 0.01 * t, 0.02, 1.0, 0.0, 0.0, 0.0], "size": [0.04, 0.04, 0.04],
                 "cameras": {"primary": {"point": [10.5, 7.25], "box": [5, 3, 15, 12], "visible": bool(t % 2)}}}]
               for t in range(T)]
    ts = (np.arange(T) / spec.fps).astype(np.float32)
    ns = (1_700_000_000_000_000_000 + seed * 10**12 + np.arange(T) * 200_000_000).astype(np.int64) if with_ns else None
    return EpisodeData(
        images=images, state=state, ee_pose=rng.normal(size=(T, 6)).astype(np.float32), action=action,
        timestamp=ts, timestamp_ns=ns, objects=objects, depth=depth, instruction=instruction, split=split,
        success=success, cameras={"primary": cam_model(*spec.cameras["primary"])},
        metadata={"source": "sim", "seed": seed, "gripper_events": [{"frame": 1, "type": "close"}],
                  "subtasks": [{"name": "reach", "start": 0, "end": 2}], "task": {"kind": "pick", "n": 1}})


def assert_same_episode(a: EpisodeData, b: EpisodeData, exact_images: bool = True) -> None:
    assert sorted(a.images) == sorted(b.images)
    for c in a.images:
        assert a.images[c].dtype == np.uint8 and a.images[c].shape == b.images[c].shape
        if exact_images:
            np.testing.assert_array_equal(a.images[c], b.images[c])
    for k in ("state", "ee_pose", "action", "timestamp"):
        x, y = getattr(a, k), getattr(b, k)
        assert x.dtype == np.float32, k
        np.testing.assert_array_equal(x, np.asarray(y, dtype=np.float32), err_msg=k)
    if b.timestamp_ns is not None:
        np.testing.assert_array_equal(a.timestamp_ns, b.timestamp_ns)
    assert a.objects == (b.objects if b.objects is not None else [[] for _ in range(len(b))])
    if b.depth:
        for c in b.depth:
            assert a.depth[c].dtype == np.uint16
            np.testing.assert_array_equal(a.depth[c], b.depth[c])
    assert (a.instruction, a.split, a.success) == (b.instruction, b.split, b.success)
    assert a.metadata == b.metadata
    if b.cameras is None:
        assert a.cameras is None
    else:
        assert {k: v.to_dict() for k, v in a.cameras.items()} == {k: v.to_dict() for k, v in b.cameras.items()}


@pytest.fixture()
def dataset(tmp_path):
    spec = spec_small()
    eps = [make_episode(0, 3, spec), make_episode(1, 2 * ROWS_PER_GROUP + 3, spec, "open the drawer", "val", False),
           make_episode(2, 5, spec, "pick up the red cube", "train", None)]
    root = tmp_path / "ds"
    with DatasetWriter.create(root, spec) as w:
        for i, e in enumerate(eps):
            assert w.write_episode(e) == i
    return root, spec, eps


# ------------------------------------------------------------------------------------------ round trips
def test_write_read_identical(dataset):
    root, spec, eps = dataset
    r = DatasetReader(root)
    assert r.num_episodes == 3 and r.num_frames == sum(len(e) for e in eps)
    assert r.spec.to_dict() == spec.to_dict()
    for i, e in enumerate(eps):
        got = r.load_episode(i)
        assert got.episode_index == i
        assert_same_episode(got, e)
        m = r.episode_meta(i)
        assert m["length"] == len(e) and m["tasks"] == [e.instruction] and m["instruction"] == e.instruction
        assert m["success"] is e.success and m["split"] == e.split and m["metadata"] == e.metadata
    assert r.episodes() == [0, 1, 2] and r.episodes("val") == [1] and r.episodes("train") == [0, 2]
    assert r.tasks == {0: "pick up the red cube", 1: "open the drawer"}
    assert r.episode_meta(2)["task_index"] == 0 and r.episode_meta(1)["task_index"] == 1
    assert validate_dataset(root) == []


def test_random_access_frame_equals_load_episode(dataset):
    root, spec, eps = dataset
    r = DatasetReader(root)
    loaded = [r.load_episode(i) for i in range(r.num_episodes)]
    g = 0
    order = np.random.default_rng(0).permutation(r.num_frames)
    starts = np.cumsum([0] + [len(e) for e in loaded])
    for g in order:
        ep = int(np.searchsorted(starts, g, side="right") - 1)
        t = int(g - starts[ep])
        f = r.frame(int(g))
        assert (f["episode_index"], f["frame_index"], f["index"]) == (ep, t, int(g))
        e = loaded[ep]
        for c in spec.cameras:
            np.testing.assert_array_equal(f[f"observation.images.{c}"], e.images[c][t])
        np.testing.assert_array_equal(f["observation.depth.primary"], e.depth["primary"][t])
        np.testing.assert_array_equal(f["observation.state"], e.state[t])
        np.testing.assert_array_equal(f["observation.ee_pose"], e.ee_pose[t])
        np.testing.assert_array_equal(f["action"], e.action[t])
        assert f["timestamp"] == float(e.timestamp[t]) and f["timestamp_ns"] == int(e.timestamp_ns[t])
        assert f["annotations.objects"] == e.objects[t] and f["task"] == e.instruction
        assert f["task_index"] == r.episode_meta(ep)["task_index"]
    f = r.episode_frame(1, 2 * ROWS_PER_GROUP + 2, images=False)
    assert "observation.images.primary" not in f and f["frame_index"] == 2 * ROWS_PER_GROUP + 2
    for bad in (-1, r.num_frames):
        with pytest.raises(DatasetError, match="does not exist"):
            r.frame(bad)
    with pytest.raises(DatasetError, match="frames 0..2"):
        r.episode_frame(0, 3)
    with pytest.raises(DatasetError, match="does not exist"):
        r.load_episode(3)


def test_streaming_recorder_discard_and_synthetic_clock(tmp_path):
    spec = spec_small(depth=False, cameras={"primary": (H, W)})
    root = tmp_path / "ds"
    w = DatasetWriter.create(root, spec)
    e = make_episode(5, 4, spec, with_ns=False)
    rec = w.begin_episode(e.instruction, cameras=e.cameras, metadata={"source": "teleop"})
    for t in range(4):
        rec.add_frame(images={"primary": e.images["primary"][t]}, state=e.state[t], ee_pose=e.ee_pose[t],
                      action=e.action[t], timestamp=float(e.timestamp[t]))
    with pytest.raises(DatasetError, match="still being recorded"):
        w.begin_episode("another")
    rec.discard()
    assert not [p for p in root.rglob("*.tmp")], "discard leaves no temp files"
    assert w.num_episodes == 0
    rec = w.begin_episode("pick", metadata={"source": "teleop"})
    assert rec.episode_index == 0  # the discarded one consumed no index
    for t in range(4):
        rec.add_frame(images={"primary": e.images["primary"][t]}, state=e.state[t], ee_pose=e.ee_pose[t],
                      action=e.action[t], timestamp=float(e.timestamp[t]))
    assert rec.finalize() == 0
    with pytest.raises(DatasetError, match="already finalized"):
        rec.add_frame(images={"primary": e.images["primary"][0]}, state=e.state[0], ee_pose=e.ee_pose[0],
                      action=e.action[0], timestamp=9.0)
    w.close()
    got = DatasetReader(root).load_episode(0)
    ns = got.timestamp_ns
    assert np.all(ns > 1_600_000_000 * 10**9) and np.all(np.diff(ns) > 0)  # synthetic wall clock, never 0
    np.testing.assert_allclose(np.diff(ns) / 1e9, np.diff(e.timestamp), atol=1e-6)
    assert got.objects == [[], [], [], []] and got.cameras is None and got.success is None


def test_append_create_open_and_lock(tmp_path, dataset):
    root, spec, eps = dataset
    w = DatasetWriter.open(root)
    assert w.spec.to_dict() == spec.to_dict() and w.num_episodes == 3
    with pytest.raises(DatasetError, match="another DatasetWriter"):
        DatasetWriter.open(root)
    e = make_episode(7, 2, spec, "stack the blocks")
    assert w.write_episode(e) == 3
    w.close()
    with DatasetWriter.create(root, spec) as w2:  # same spec: appends
        assert w2.write_episode(make_episode(8, 2, spec)) == 4
    with pytest.raises(DatasetError, match="different spec"):
        DatasetWriter.create(root, spec_small(fps=10.0))
    r = DatasetReader(root)
    assert r.num_episodes == 5 and r.episode_meta(3)["task_index"] == 2 and r.episode_meta(4)["task_index"] == 0
    assert r.episode_meta(3)["dataset_from_index"] == sum(len(x) for x in eps)
    assert_same_episode(r.load_episode(3), e)
    assert validate_dataset(root) == []
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        DatasetWriter.create(foreign, spec)
    with pytest.raises(DatasetError, match="no such dataset"):
        DatasetWriter.open(tmp_path / "absent")


# ----------------------------------------------------------------------------------------- crash safety
_CHILD = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {repo!r}); sys.path.insert(0, {tests!r})
    from test_dataset import make_episode, spec_small
    from etc_ros.data import DatasetWriter
    spec = spec_small()
    w = DatasetWriter.create({root!r}, spec)
    w.write_episode(make_episode(0, 3, spec)); w.write_episode(make_episode(1, 4, spec, "open the drawer"))
    e = make_episode(2, 3 * {rows} + 1, spec)
    rec = w.begin_episode(e.instruction, cameras=e.cameras, metadata=e.metadata)
    for t in range(len(e)):
        rec.add_frame(images={{c: v[t] for c, v in e.images.items()}}, state=e.state[t], ee_pose=e.ee_pose[t],
                      action=e.action[t], timestamp=float(e.timestamp[t]), depth={{"primary": e.depth["primary"][t]}})
    print("ready", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_kill_mid_episode_keeps_finished_episodes(tmp_path):
    root = tmp_path / "ds"
    code = _CHILD.format(repo=str(REPO), tests=str(REPO / "tests"), root=str(root), rows=ROWS_PER_GROUP)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert p.returncode == -signal.SIGKILL, p.stderr
    assert "ready" in p.stdout
    temps = list(root.rglob("*.tmp"))
    assert temps, "the interrupted episode left its temp data file"
    spec = spec_small()
    r = DatasetReader(root)
    assert r.num_episodes == 2
    assert_same_episode(r.load_episode(0), make_episode(0, 3, spec))
    assert_same_episode(r.load_episode(1), make_episode(1, 4, spec, "open the drawer"))
    warnings: list[str] = []
    assert validate_dataset(root, warnings=warnings) == []
    assert any("temp file" in w for w in warnings)
    # the killed process's lock is gone: appending works, then repair cleans the leftovers
    with DatasetWriter.open(root) as w:
        assert w.write_episode(make_episode(3, 2, spec)) == 2
    actions = repair_dataset(root)
    assert any("removed temp file" in a for a in actions)
    warnings = []
    assert validate_dataset(root, warnings=warnings) == [] and warnings == []
    assert not list(root.rglob("*.tmp"))


def test_dropped_writer_and_orphan_data_file(dataset):
    root, spec, eps = dataset
    w = DatasetWriter.open(root)
    e = make_episode(9, ROWS_PER_GROUP + 2, spec)
    rec = w.begin_episode(e.instruction)
    for t in range(len(e)):
        rec.add_frame(images={c: v[t] for c, v in e.images.items()}, state=e.state[t], ee_pose=e.ee_pose[t],
                      action=e.action[t], timestamp=float(e.timestamp[t]), depth={"primary": e.depth["primary"][t]})
    del rec, w  # dropped without finalize (like a crash, minus the process exit)
    # a crash between the data rename and the meta commit leaves an orphan data file
    orphan = root / "data/chunk-000/file-003.parquet"
    orphan.write_bytes((root / "data/chunk-000/file-000.parquet").read_bytes())
    r = DatasetReader(root)
    assert r.num_episodes == 3
    for i, ep in enumerate(eps):
        assert_same_episode(r.load_episode(i), ep)
    warnings: list[str] = []
    assert validate_dataset(root, warnings=warnings) == []
    assert any("orphan" in w and "file-003" in w for w in warnings)
    with DatasetWriter.open(root) as w:  # the next episode takes index 3 and replaces the orphan
        assert w.write_episode(make_episode(10, 2, spec)) == 3
    assert_same_episode(DatasetReader(root).load_episode(3), make_episode(10, 2, spec))
    assert validate_dataset(root) == []


def test_truncated_parquet_is_named_and_others_readable(dataset):
    root, spec, eps = dataset
    bad = root / "data/chunk-000/file-001.parquet"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    r = DatasetReader(root)  # still opens
    assert r.num_episodes == 3
    with pytest.raises(DatasetError, match="file-001.parquet"):
        r.load_episode(1)
    with pytest.raises(DatasetError, match="file-001.parquet"):
        r.frame(len(eps[0]) + 1)
    assert_same_episode(r.load_episode(0), eps[0])
    assert_same_episode(r.load_episode(2), eps[2])
    errors = validate_dataset(root)
    assert len(errors) == 1 and "episode 1" in errors[0] and "file-001.parquet" in errors[0]
    # repair: quarantine + renumber; the survivors keep their content
    actions = repair_dataset(root)
    assert any("quarantine" in a for a in actions) and any("renumbered to 1" in a for a in actions)
    assert validate_dataset(root) == []
    r = DatasetReader(root)
    assert r.num_episodes == 2 and r.num_frames == len(eps[0]) + len(eps[2])
    assert_same_episode(r.load_episode(1), eps[2])
    assert r.frame(len(eps[0]))["index"] == len(eps[0])
    assert (root / "quarantine").is_dir()
    assert r.tasks == {0: "pick up the red cube"}


def test_corrupted_episode_meta_and_png(dataset):
    root, spec, eps = dataset
    (root / "meta/episodes/chunk-000/file-000.parquet").write_bytes(b"garbage")
    r = DatasetReader(root)
    assert r.num_episodes == 3 and r.episodes() == [1, 2] and 0 in r.broken_episodes
    with pytest.raises(DatasetError, match="meta/episodes/chunk-000/file-000.parquet"):
        r.episode_meta(0)
    assert_same_episode(r.load_episode(1), eps[1])
    errs = validate_dataset(root)
    assert any("episode 0" in e and "file-000.parquet" in e for e in errs)
    # a damaged PNG inside an otherwise valid parquet: named by validate with frame and column
    root2 = root.parent / "ds2"
    with DatasetWriter.create(root2, spec) as w:
        w.write_episode(eps[0])
    p = root2 / "data/chunk-000/file-000.parquet"
    t = pq.read_table(p)
    col = t.column("observation.images.wrist").combine_chunks()
    blobs = col.field("bytes").to_pylist()
    blobs[1] = blobs[1][:20]
    new = pa.StructArray.from_arrays([pa.array(blobs, pa.binary()), col.field("path")], names=["bytes", "path"])
    t = t.set_column(t.column_names.index("observation.images.wrist"), "observation.images.wrist", new)
    pq.write_table(t, p)
    errs = validate_dataset(root2)
    assert len(errs) == 1 and "frame 1" in errs[0] and "observation.images.wrist" in errs[0]
    assert validate_dataset(root2, deep=False) == []
    with pytest.raises(DatasetError, match="frame 1"):
        DatasetReader(root2).load_episode(0)


def test_validate_names_bad_values(dataset):
    root, spec, eps = dataset
    p = root / "data/chunk-000/file-002.parquet"
    t = pq.read_table(p)
    st = t.column("observation.state").combine_chunks().flatten().to_numpy().reshape(-1, 7).copy()
    st[3, 2] = np.nan
    t = t.set_column(t.column_names.index("observation.state"), "observation.state",
                     pa.FixedSizeListArray.from_arrays(pa.array(st.reshape(-1), pa.float32()), 7))
    ts = t.column("timestamp").to_numpy().copy()
    ts[2] = ts[1]
    t = t.set_column(t.column_names.index("timestamp"), "timestamp", pa.array(ts))
    objs = t.column("annotations.objects").to_pylist()
    objs[4] = json.dumps([{"name": "x", "pose": [1, 2, 3]}])
    t = t.set_column(t.column_names.index("annotations.objects"), "annotations.objects", pa.array(objs))
    pq.write_table(t, p)
    errs = validate_dataset(root)
    joined = "\n".join(errs)
    assert "episode 2" in joined and "'observation.state' has NaN/Inf at frames [3]" in joined
    assert "'timestamp' is not strictly increasing (frame 2)" in joined
    assert "frame 4: column 'annotations.objects'" in joined and "pose" in joined
    # a dtype change is named too
    t2 = pq.read_table(p).cast(pq.read_table(p).schema.set(
        pq.read_table(p).schema.get_field_index("timestamp"), pa.field("timestamp", pa.float64())))
    pq.write_table(t2, p)
    assert any("'timestamp' has type double, expected float" in e for e in validate_dataset(root))


def test_stale_derived_files_are_reported_and_repair_rebuilds(dataset):
    """Derived files: our reader never relies on them, LeRobot's does (len() and the episode list from info.json's
    totals, tasks by row position in tasks.parquet): stale totals or tasks are errors, a missing stats.json a
    warning; repair rebuilds all of them."""
    root, spec, eps = dataset
    info = root / "meta/info.json"
    good_info = json.loads(info.read_text())
    good_stats = json.loads((root / "meta/stats.json").read_text())
    stale = dict(good_info, total_episodes=2, total_frames=3)  # as if killed right after an episode commit
    info.write_text(json.dumps(stale))
    (root / "meta/stats.json").unlink()
    (root / "meta/tasks.parquet").write_bytes(b"junk")
    warnings: list[str] = []
    errs = validate_dataset(root, warnings=warnings)
    assert len(errs) == 2, errs
    assert "tasks.parquet: cannot read" in errs[0] and "run `etc-vla data repair`" in errs[0]
    assert "totals are stale" in errs[1] and "LeRobot" in errs[1]
    assert "stats.json is missing" in "\n".join(warnings)
    assert DatasetReader(root).num_episodes == 3  # the reader never relies on the derived files
    assert repair_dataset(root) == []  # nothing to move, only the derived files are rebuilt
    warnings = []
    assert validate_dataset(root, warnings=warnings) == [] and warnings == []
    assert json.loads(info.read_text()) == good_info
    assert json.loads((root / "meta/stats.json").read_text()) == good_stats


def test_reader_errors_on_broken_dataset(tmp_path, dataset):
    root, spec, _ = dataset
    with pytest.raises(DatasetError, match="no such dataset directory"):
        DatasetReader(tmp_path / "absent")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="info.json is missing"):
        DatasetReader(empty)
    info = root / "meta/info.json"
    good = info.read_text()
    info.write_text("{not json")
    with pytest.raises(DatasetError, match="not valid JSON"):
        DatasetReader(root)
    assert "not valid JSON" in validate_dataset(root)[0]
    d = json.loads(good)
    d["codebase_version"] = "v2.1"
    info.write_text(json.dumps(d))
    with pytest.raises(DatasetError, match="codebase_version must be 'v3.0'"):
        DatasetReader(root)
    info.unlink()
    actions = repair_dataset(root)  # info.json rebuilt from the spec stored in the parquet files
    assert any("rebuilt meta/info.json" in a for a in actions)
    assert validate_dataset(root) == [] and DatasetReader(root).num_episodes == 3


# --------------------------------------------------------------------------------------- input checks
def _good_frame(spec: DatasetSpec, t: float = 0.0) -> dict:
    return dict(images={c: np.zeros((h, w, 3), np.uint8) for c, (h, w) in spec.cameras.items()},
                state=np.zeros(7, np.float32), ee_pose=np.zeros(6, np.float32), action=np.zeros(7, np.float32),
                timestamp=t, depth={"primary": np.zeros((H, W), np.uint16)})


@pytest.mark.parametrize("change,match", [
    (lambda f: f["images"].update(primary=np.zeros((H, W + 1, 3), np.uint8)), r"\(H, W, 3\) = \(24, 32, 3\)"),
    (lambda f: f["images"].update(primary=np.zeros((H, W, 3), np.float32)), "must be uint8"),
    (lambda f: f["images"].pop("wrist"), r"missing \['wrist'\]"),
    (lambda f: f["images"].update(side=np.zeros((H, W, 3), np.uint8)), r"unknown \['side'\]"),
    (lambda f: f.update(state=np.zeros(6)), r"state must have shape \(7,\)"),
    (lambda f: f.update(state=np.array([0, 0, np.nan, 0, 0, 0, 0.5])), r"state has non-finite .* index \[2\]"),
    (lambda f: f.update(action=np.array([np.inf, 0, 0, 0, 0, 0, 1])), "action has non-finite"),
    (lambda f: f.update(ee_pose=np.zeros((2, 3))), r"ee_pose must have shape \(6,\)"),
    (lambda f: f.update(state=np.array(["a"] * 7)), "must be a float array"),
    (lambda f: f.update(action=np.array([0, 0, 0, 0, 0, 0, 1.5])), r"gripper value must be in \[0, 1\]"),
    (lambda f: f.update(timestamp=float("nan")), "timestamp must be finite"),
    (lambda f: f.update(timestamp_ns=0), "timestamp_ns must be > 0"),
    (lambda f: f.update(timestamp_ns=1.5), "timestamp_ns must be an int"),
    (lambda f: f.update(objects=[{"name": "cube", "pose": [0, 0, 0]}]), "pose"),
    (lambda f: f.update(objects=[{"name": "cube", "cameras": {"primary": {"box": [5, 5, 1, 1]}}}]), "x1 <= x2"),
    (lambda f: f.update(objects=[{"name": "cube", "cameras": {"top": {"visible": True}}}]), "unknown camera"),
    (lambda f: f.update(objects={"name": "cube"}), "must be a list"),
    (lambda f: f.update(objects=[{"name": "cube", "size": [float("nan")]}]), "size"),
    (lambda f: f["depth"].update(primary=np.zeros((H, W), np.float32)), "uint16 millimetres"),
    (lambda f: f.pop("depth"), "stores depth"),
])
def test_add_frame_rejects_bad_input(tmp_path, change, match):
    spec = spec_small()
    with DatasetWriter.create(tmp_path / "ds", spec) as w:
        rec = w.begin_episode("pick")
        rec.add_frame(**_good_frame(spec, 0.0))
        f = _good_frame(spec, 0.2)
        change(f)
        with pytest.raises(DatasetError, match=match):
            rec.add_frame(**f)
        assert len(rec) == 1  # the rejected frame changed nothing
        rec.add_frame(**_good_frame(spec, 0.4))
        assert rec.finalize(True) == 0
    assert DatasetReader(tmp_path / "ds").episode_meta(0)["length"] == 2
    assert validate_dataset(tmp_path / "ds") == []


def test_timestamps_must_increase(tmp_path):
    spec = spec_small()
    with DatasetWriter.create(tmp_path / "ds", spec) as w:
        rec = w.begin_episode("pick")
        rec.add_frame(**_good_frame(spec, 0.2), timestamp_ns=5_000)
        with pytest.raises(DatasetError, match="not after the previous"):
            rec.add_frame(**_good_frame(spec, 0.2))
        with pytest.raises(DatasetError, match="timestamp_ns 5000 is not after"):
            rec.add_frame(**_good_frame(spec, 0.4), timestamp_ns=5_000)


def test_episode_level_checks(tmp_path):
    spec = spec_small()
    w = DatasetWriter.create(tmp_path / "ds", spec)
    with pytest.raises(DatasetError, match="instruction must be a non-empty"):
        w.begin_episode("  ")
    with pytest.raises(DatasetError, match="split must be"):
        w.begin_episode("pick", split="my split")
    with pytest.raises(DatasetError, match=r"pass CameraModel.resized\(32, 24\)"):
        w.begin_episode("pick", cameras={"primary": CameraModel()})
    with pytest.raises(DatasetError, match="unknown camera 'top'"):
        w.begin_episode("pick", cameras={"top": cam_model()})
    with pytest.raises(DatasetError, match="gripper_events"):
        w.begin_episode("pick", metadata={"gripper_events": [{"frame": 0, "type": "squeeze"}]})
    with pytest.raises(DatasetError, match="metadata.source"):
        w.begin_episode("pick", metadata={"source": "youtube"})
    with pytest.raises(DatasetError, match="JSON serialisable"):
        w.begin_episode("pick", metadata={"x": object()})
    rec = w.begin_episode("pick", metadata={"subtasks": [{"name": "reach", "start": 0, "end": 5}]})
    with pytest.raises(DatasetError, match="without frames"):
        rec.finalize()
    rec.add_frame(**_good_frame(spec))
    with pytest.raises(DatasetError, match=r"subtasks\[0\] needs 0 <= start <= end <= length \(1\)"):
        rec.finalize()
    with pytest.raises(DatasetError, match="success must be"):
        rec.finalize(success="yes")
    rec.discard()
    e = make_episode(0, 4, spec)
    e.action = e.action[:3]
    with pytest.raises(DatasetError, match="action has 3 frames, state has 4"):
        w.write_episode(e)
    assert w.num_episodes == 0 and not list((tmp_path / "ds").rglob("*.tmp"))
    w.close()
    for bad, match in [(dict(fps=0), "fps must be > 0"), (dict(cameras={}), "non-empty"),
                       (dict(cameras={"a b": (2, 2)}), "must match"), (dict(cameras={"p": (0, 4)}), "positive"),
                       (dict(cameras={"p": (3, 4)}, video=True, depth=False), "even"),
                       (dict(depth=("top",)), "unknown cameras")]:
        with pytest.raises(DatasetError, match=match):
            spec_small(**bad)


# ----------------------------------------------------------------------------------------- layout/meta
def test_lerobot_v3_layout_and_stats(dataset):
    root, spec, eps = dataset
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 5.0 and info["robot_type"] == "wx250s"
    assert info["total_episodes"] == 3 and info["total_frames"] == sum(len(e) for e in eps)
    assert info["total_tasks"] == 2 and info["splits"] == {"train": "0:1,2:3", "val": "1:2"}
    for i in range(3):
        assert (root / info["data_path"].format(chunk_index=0, file_index=i)).is_file()
    f = info["features"]
    assert f["observation.images.primary"] == {"dtype": "image", "shape": [H, W, 3],
                                               "names": ["height", "width", "channels"]}
    assert f["observation.state"]["names"][:6] == ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle",
                                                   "wrist_rotate"]
    assert f["action"]["shape"] == [7] and f["timestamp_ns"]["dtype"] == "int64"
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pydict()
    assert tasks == {"task_index": [0, 1], "task": ["pick up the red cube", "open the drawer"]}
    ep = pq.read_table(root / "meta/episodes/chunk-000/file-001.parquet").to_pylist()[0]
    for k in ("episode_index", "tasks", "length", "dataset_from_index", "dataset_to_index", "data/chunk_index",
              "data/file_index", "meta/episodes/chunk_index", "meta/episodes/file_index"):
        assert k in ep
    assert (ep["dataset_from_index"], ep["dataset_to_index"]) == (3, 3 + len(eps[1]))
    assert json.loads(ep["cameras"])["primary"]["intrinsics"]["width"] == W
    assert json.loads(ep["stats"])["action"]["count"] == [len(eps[1])]
    data = pq.read_table(root / "data/chunk-000/file-001.parquet")
    assert data.schema.field("observation.images.primary").type == pa.struct([("bytes", pa.binary()),
                                                                              ("path", pa.string())])
    assert data.schema.field("action").type == pa.list_(pa.float32(), 7)
    assert pq.ParquetFile(root / "data/chunk-000/file-001.parquet").metadata.num_row_groups == 3
    # global stats: exact against numpy over every frame
    st = json.loads((root / "meta/stats.json").read_text())
    allstate = np.concatenate([e.state for e in eps]).astype(np.float64)
    np.testing.assert_allclose(st["observation.state"]["mean"], allstate.mean(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(st["observation.state"]["std"], allstate.std(0), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(st["observation.state"]["q01"], np.quantile(allstate, 0.01, axis=0))
    np.testing.assert_allclose(st["action"]["max"], np.concatenate([e.action for e in eps]).max(0))
    assert st["observation.state"]["count"] == [len(allstate)]
    assert np.asarray(st["observation.images.primary"]["mean"]).shape == (3, 1, 1)
    r = DatasetReader(root)
    np.testing.assert_allclose(r.episode_stats(1)["observation.state"]["q50"], np.median(eps[1].state, 0), rtol=1e-6)
    assert r.stats["action"]["q99"].shape == (7,)


def test_video_mode_round_trip(tmp_path):
    spec = DatasetSpec(fps=5.0, cameras={"primary": (32, 48)}, video=True, video_codec="mpeg4")
    T = 12
    y, x = np.mgrid[0:32, 0:48]
    imgs = np.stack([np.stack([(x * 4 + t * 9) % 256, y * 6, np.full_like(x, t * 20)], -1) for t in range(T)])
    e = make_episode(0, T, DatasetSpec(fps=5.0, cameras={"primary": (32, 48)}))
    e.images = {"primary": imgs.astype(np.uint8)}
    with DatasetWriter.create(tmp_path / "v", spec) as w:
        w.write_episode(e)
        w.write_episode(e)
    info = json.loads((tmp_path / "v/meta/info.json").read_text())
    assert info["features"]["observation.images.primary"]["dtype"] == "video"
    vp = tmp_path / "v" / info["video_path"].format(video_key="observation.images.primary", chunk_index=0,
                                                   file_index=1)
    assert vp.is_file()
    r = DatasetReader(tmp_path / "v")
    got = r.load_episode(1)
    assert_same_episode(got, e, exact_images=False)
    assert np.abs(got.images["primary"].astype(int) - e.images["primary"]).mean() < 6  # lossy, but close
    for t in (0, 7, T - 1):
        np.testing.assert_array_equal(r.episode_frame(1, t)["observation.images.primary"], got.images["primary"][t])
    assert validate_dataset(tmp_path / "v") == []
    vp.unlink()
    assert any("file-001.mp4" in m for m in validate_dataset(tmp_path / "v"))


# ------------------------------------------------------------------------------------------------ CLI
def test_repair_keeps_task_indices_contiguous_and_every_episode_its_own_instruction(tmp_path):
    """Dropping an episode whose task no other episode has must not shift later episodes onto the wrong task:
    a LeRobot-style reader looks `task_index` up by position in meta/tasks.parquet."""
    import pyarrow.parquet as pq

    spec = spec_small()
    instr = ["grab the black block", "open the drawer", "put the yellow block in the blue bowl", "open the drawer"]
    root = tmp_path / "ds"
    with DatasetWriter.create(root, spec) as w:
        for i, s in enumerate(instr):
            w.write_episode(make_episode(i, 3 + i, spec, s))
    (root / "data/chunk-000/file-000.parquet").write_bytes(b"PAR1 truncated")  # the only 'grab' episode
    actions = repair_dataset(root)
    assert any("task 2 -> 1" in a for a in actions), actions
    assert validate_dataset(root) == []
    tasks = pq.read_table(root / "meta/tasks.parquet").to_pydict()
    assert tasks["task_index"] == [0, 1]  # contiguous, positions == indices
    info = json.loads((root / "meta/info.json").read_text())
    assert info["total_tasks"] == 2 and info["total_episodes"] == 3
    survivors = instr[1:]
    r = DatasetReader(root)
    for e, want in enumerate(survivors):
        col = pq.read_table(root / f"data/chunk-000/file-{e:03d}.parquet", columns=["task_index"]).column(0)
        ti = set(col.to_pylist())
        assert len(ti) == 1 and tasks["task"][ti.pop()] == want, (e, want)  # LeRobot's lookup by position
        assert r.episode_meta(e)["instruction"] == want
        assert r.load_episode(e).instruction == want


def test_nonfinite_or_stale_stats_and_task_gaps_are_reported(dataset):
    root, spec, eps = dataset
    sp = root / "meta/stats.json"
    good = json.loads(sp.read_text())
    assert validate_dataset(root) == []
    bad = json.loads(sp.read_text())
    bad["action"]["mean"][2] = float("nan")
    bad["observation.state"]["max"][0] = float("inf")
    sp.write_text(json.dumps(bad))  # json writes NaN / Infinity
    errs = validate_dataset(root)
    assert len(errs) == 1 and "non-finite statistics" in errs[0] and "action.mean" in errs[0] \
        and "observation.state.max" in errs[0]
    with pytest.raises(DatasetError, match="non-finite statistics"):
        DatasetReader(root).stats
    stale = dict(good)
    stale["action"] = dict(good["action"], max=[v + 0.5 for v in good["action"]["max"]])
    sp.write_text(json.dumps(stale))
    warnings: list[str] = []
    assert validate_dataset(root, warnings=warnings) == []
    assert any("action.max does not match" in w for w in warnings), warnings
    assert repair_dataset(root) == [] and json.loads(sp.read_text()) == good
    # a gap in the task indices (as the old repair left): an error, not a pass
    import pyarrow as pa
    import pyarrow.parquet as pq

    for e in range(3):
        for rel in (f"data/chunk-000/file-{e:03d}.parquet", f"meta/episodes/chunk-000/file-{e:03d}.parquet"):
            t = pq.read_table(root / rel)
            ti = t.column("task_index").to_numpy() * 2  # 0, 1 -> 0, 2
            t = t.set_column(t.column_names.index("task_index"), "task_index", pa.array(ti, pa.int64()))
            pq.write_table(t, root / rel)
    errs = validate_dataset(root, deep=False)
    assert any("not contiguous" in m for m in errs), errs
    assert any("task 2 -> 1" in a for a in repair_dataset(root))
    assert validate_dataset(root) == []
    assert [DatasetReader(root).load_episode(e).instruction for e in range(3)] == [e.instruction for e in eps]


def test_episodes_carry_lerobot_per_episode_stats_columns(tmp_path):
    """LeRobot v3 keeps per-episode statistics as stats/<feature>/<stat> columns of meta/episodes (its aggregate,
    merge and split tools read those); they hold the same numbers as our `stats` JSON, also after a repair."""
    import pyarrow.parquet as pq

    spec = spec_small()
    root = tmp_path / "ds"
    with DatasetWriter.create(root, spec) as w:
        for i, s in enumerate(["a b", "c d", "e f"]):
            w.write_episode(make_episode(i, 3 + i, spec, s))
    (root / "data/chunk-000/file-000.parquet").write_bytes(b"PAR1 truncated")
    repair_dataset(root)
    for e in range(2):
        row = pq.read_table(root / f"meta/episodes/chunk-000/file-{e:03d}.parquet").to_pylist()[0]
        st = json.loads(row["stats"])
        assert row["stats/action/mean"] == st["action"]["mean"] and len(row["stats/action/mean"]) == 7
        assert row["stats/observation.state/count"] == st["observation.state"]["count"] == [4 + e]
        assert row["stats/episode_index/min"] == [e]  # renumbered by the repair
        img = np.asarray(row["stats/observation.images.primary/mean"])
        assert img.shape == (3, 1, 1)
        assert not [k for k in DatasetReader(root).episode_meta(e) if k.startswith("stats/")]


def test_cli_validate_info_repair(dataset, capsys):
    from etc_training.cli import main

    root, spec, eps = dataset
    assert main(["data", "validate", str(root)]) == 0
    assert f"OK: 3 episodes, {sum(len(e) for e in eps)} frames" in capsys.readouterr().out
    assert main(["data", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "3 episodes" in out and "open the drawer" in out
    assert main(["data", "info", "--json", str(root)]) == 0
    assert json.loads(capsys.readouterr().out)["splits"] == {"train": 2, "val": 1}
    (root / "data/chunk-000/file-002.parquet").write_bytes(b"PAR1 truncated")
    assert main(["data", "validate", str(root)]) == 1
    assert "file-002.parquet" in capsys.readouterr().out
    assert main(["data", "repair", str(root)]) == 0
    assert "quarantine" in capsys.readouterr().out
    assert main(["data", "validate", "--shallow", str(root)]) == 0
    assert main(["data", "validate", str(root / "nope")]) == 1


def test_repair_rebuilds_a_damaged_episode_row_from_intact_data(dataset):
    """Only the meta/episodes file is damaged: the frames stay, the row is rebuilt from the data file (instruction
    from its task_index, split from info.json), the damaged file is quarantined, nothing readable is lost."""
    root, spec, eps = dataset
    (root / "meta/episodes/chunk-000/file-001.parquet").write_bytes(b"garbage")
    actions = repair_dataset(root)
    assert any("episode 1: meta/episodes row rebuilt" in a and "'open the drawer'" in a for a in actions), actions
    assert any("damaged episode row 1" in a and "quarantine" in a for a in actions), actions
    assert validate_dataset(root) == []
    r = DatasetReader(root)
    assert r.num_episodes == 3 and r.num_frames == sum(len(e) for e in eps)
    got = r.load_episode(1)
    assert (got.instruction, got.split, got.success, got.cameras) == ("open the drawer", "val", None, None)
    assert "rebuilt by repair" in got.metadata["repair"]
    np.testing.assert_array_equal(got.images["primary"], eps[1].images["primary"])
    np.testing.assert_array_equal(got.action, eps[1].action)
    assert_same_episode(r.load_episode(2), eps[2])
    fresh = pq.read_table(root / "meta/episodes/chunk-000/file-001.parquet").to_pylist()[0]
    assert np.allclose(fresh["stats/action/mean"], eps[1].action.mean(0), atol=1e-6)
    assert not [k for k in fresh if k.startswith("stats/observation.depth.")]  # LeRobot's tools take images as RGB
    assert fresh["stats/observation.images.primary/count"] == [len(eps[1])]
    assert json.loads(fresh["stats"])["observation.depth.primary"]["count"] == [len(eps[1])]  # kept in the JSON


def test_repair_quarantines_a_damaged_row_whose_instruction_is_lost(dataset):
    root, spec, eps = dataset
    (root / "meta/episodes/chunk-000/file-001.parquet").write_bytes(b"garbage")
    (root / "meta/tasks.parquet").write_bytes(b"garbage")
    actions = repair_dataset(root)
    assert any("broken episode 1" in a and "cannot be rebuilt" in a and "tasks.parquet" in a for a in actions), \
        actions
    assert validate_dataset(root) == []
    r = DatasetReader(root)
    assert r.num_episodes == 2 and [r.load_episode(i).instruction for i in range(2)] == ["pick up the red cube"] * 2


def test_validate_checks_what_lerobot_reads_in_info_and_tasks(dataset):
    """LeRobot 0.4.4 takes totals, chunks_size, splits (video_path in video mode) from info.json and looks a task
    up as tasks.iloc[task_index].name: rows out of order or without the pandas 'task' index misread silently."""
    root, spec, eps = dataset
    info = root / "meta/info.json"
    good = json.loads(info.read_text())
    info.write_text(json.dumps({k: v for k, v in good.items() if k not in ("total_tasks", "splits")}))
    errs = validate_dataset(root, deep=False)
    assert len(errs) == 1 and "missing keys ['total_tasks', 'splits']" in errs[0] and "LeRobot" in errs[0], errs
    info.write_text(json.dumps(good))
    tp = root / "meta/tasks.parquet"
    t = pq.read_table(tp)
    assert t.column("task_index").to_pylist() == [0, 1]
    pq.write_table(t.take([1, 0]), tp)  # same mapping, rows swapped: position 0 is now task 1
    errs = validate_dataset(root, deep=False)
    assert len(errs) == 1 and "is not the row position" in errs[0] and "tasks.parquet" in errs[0], errs
    pq.write_table(pa.table({"task_index": [0, 1], "task": t.column("task").to_pylist()}), tp)  # no pandas index
    errs = validate_dataset(root, deep=False)
    assert len(errs) == 1 and "pandas index must be the 'task' column" in errs[0], errs
    pq.write_table(pa.table({"task_index": [0, 1], "task": ["x", "y"]}).replace_schema_metadata(t.schema.metadata), tp)
    errs = validate_dataset(root, deep=False)
    assert len(errs) == 1 and "does not match the episodes' tasks" in errs[0], errs
    assert repair_dataset(root) == [] and validate_dataset(root) == []
