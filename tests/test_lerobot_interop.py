"""Interop: datasets written by this project, read back by the real LeRobot (0.4.4, dataset format v3.0).

The reader runs in its own venv (.venv-lerobot, scripts/setup_lerobot_reader.sh) through tests/lerobot_reader.py,
one subprocess for every dataset here. Checked per dataset - after writing, after a repair, after a rosbag import,
after a teleop recording - against what the project wrote (read with DatasetReader): the metadata LeRobot sees,
every episode's [from, to) range and task, and every frame LeRobot returns: its task string (LeRobot looks it up by
position in meta/tasks.parquet), indices, timestamps, numeric vectors, the images bit for bit, and the action
window LeRobot pads at the episode's boundaries. LeRobot's own delete_episodes tool is run on a written dataset
and its output read back the same way.

No reader venv is a failure, not a skip (set ETC_SKIP_LEROBOT_INTEROP=1 to opt out on purpose).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from etc_ros.data import DatasetReader, DatasetWriter, repair_dataset, validate_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_dataset import make_episode, spec_small  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
READER_PY = REPO / ".venv-lerobot" / "bin" / "python"
READER = REPO / "tests" / "lerobot_reader.py"

WRITTEN = ["pick up the red cube", "grab the black block", "pick up the red cube",
           "put the yellow block in the blue bowl"]
REPAIRED = ["pick up the red cube", "grab the black block", "open the drawer",
            "put the yellow block in the blue bowl", "grab the black block", "stack the green cube"]


def _reader_venv() -> Path:
    if os.environ.get("ETC_SKIP_LEROBOT_INTEROP") == "1":
        pytest.skip("ETC_SKIP_LEROBOT_INTEROP=1: LeRobot interop test switched off on purpose")
    r = subprocess.run(["bash", str(REPO / "scripts/setup_lerobot_reader.sh")], capture_output=True, text=True,
                       timeout=900)
    if r.returncode != 0 or not READER_PY.exists():
        pytest.fail("the LeRobot reader venv (.venv-lerobot) could not be built by scripts/setup_lerobot_reader.sh "
                    f"(needs the package registry once):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}")
    return READER_PY


# ------------------------------------------------------------------------------------------ datasets
def _written(root: Path) -> None:
    spec = spec_small()  # two cameras + 16-bit depth
    with DatasetWriter.create(root, spec) as w:
        for i, s in enumerate(WRITTEN):
            w.write_episode(make_episode(i, 3 + i, spec, s, split="val" if i == 2 else "train"))


def _repaired(root: Path) -> None:
    """Episode 1 (one of two 'grab' episodes) loses its data file; episode 2 (the only 'open the drawer') its data
    file too, so its task disappears and the later task indices must move down; episode 4's meta row is garbage
    while its data is intact (repair rebuilds the row)."""
    spec = spec_small()
    with DatasetWriter.create(root, spec) as w:
        for i, s in enumerate(REPAIRED):
            w.write_episode(make_episode(10 + i, 3 + i % 3, spec, s))
    for e in (1, 2):
        p = root / f"data/chunk-000/file-{e:03d}.parquet"
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    (root / "meta/episodes/chunk-000/file-004.parquet").write_bytes(b"garbage")
    assert validate_dataset(root)  # broken before
    repair_dataset(root)
    assert validate_dataset(root) == []


def _bag(root: Path, tmp: Path) -> None:
    from rosbags.rosbag2 import StoragePlugin
    from test_bag_import import write_bag

    from etc_ros.data.bag_import import import_bag

    for k, (storage, ins) in enumerate([(StoragePlugin.SQLITE3, "pick the cube"),
                                        (StoragePlugin.MCAP, None)]):
        bag = tmp / f"bag{k}"
        write_bag(bag, storage, duration_s=1.0 + 0.4 * k, instruction=ins)
        kw = {"instruction_topic": "/instruction"} if ins else {"instruction": "place the cube on the plate"}
        assert import_bag(bag, root, image_topic="/camera/color/image_raw", joint_state_topic="/wx250s/joint_states",
                          fps=5.0, progress=False, **kw) == k
    assert validate_dataset(root) == []


def _teleop(root: Path) -> None:
    from test_recorder import CAM, T0, _feed

    from etc_ros.teleop.recorder import RecorderConfig, RecordingSession

    cfg = RecorderConfig(root=str(root), min_free_mb=1.0, stop_free_mb=0.0, image_height=24, image_width=32)
    core = RecordingSession(cfg, camera_models={"primary": CAM})
    episodes = [("pick up the red cube", 6), ("push the block left", 4), ("pick up the red cube", 5)]
    for k, (ins, n) in enumerate(episodes):
        assert core.relabel(ins)[0] and core.start()[0]
        _feed(core, n, t0_ns=T0 + k * 10**10, grip=np.linspace(1, 0.2, n), cmd=(np.arange(n) < n // 2) * 1.0)
        assert core.stop(success=bool(k % 2))[0]
    core.close()
    assert validate_dataset(root) == []


def _task_gap_control(root: Path) -> None:
    """Negative control: the defect the old repair left (a gap in task_index; tasks.parquet one row short of the
    highest index). The comparison below must catch it, or the test could not fail."""
    _written(root)
    for e in range(len(WRITTEN)):
        for rel in (f"data/chunk-000/file-{e:03d}.parquet", f"meta/episodes/chunk-000/file-{e:03d}.parquet"):
            t = pq.read_table(root / rel)
            ti = np.where(t.column("task_index").to_numpy() >= 1, t.column("task_index").to_numpy() + 1, 0)
            t = t.set_column(t.column_names.index("task_index"), "task_index", pa.array(ti, pa.int64()))
            pq.write_table(t, root / rel)
    tp = root / "meta/tasks.parquet"
    t = pq.read_table(tp)
    ti = t.column("task_index").to_numpy()
    t = t.set_column(t.column_names.index("task_index"), "task_index", pa.array(np.where(ti >= 1, ti + 1, 0)))
    pq.write_table(t, tp)


# ------------------------------------------------------------------------------------------ comparison
def _sha1(a: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()


def mismatches(root: Path, got: dict) -> list[str]:
    """Every way LeRobot's view of `root` differs from the project's own reader; [] when they agree."""
    if "error" in got:
        return [f"LeRobot could not read {root.name}: {got['error']}"]
    r = DatasetReader(root)
    bad: list[str] = []

    def check(cond: bool, msg: str) -> None:
        if not cond:
            bad.append(f"{root.name}: {msg}")

    eps = [r.load_episode(i) for i in range(r.num_episodes)]
    lengths = [len(e) for e in eps]
    starts = np.r_[0, np.cumsum(lengths)[:-1]].astype(int)
    n = int(sum(lengths))
    check(got["codebase_version"] == "v3.0", f"codebase_version {got['codebase_version']}")
    check(got["fps"] == r.fps, f"fps {got['fps']} != {r.fps}")
    check((got["total_episodes"], got["num_episodes"]) == (len(eps),) * 2, f"episodes {got['num_episodes']}")
    check((got["total_frames"], got["num_frames"], got["len"]) == (n,) * 3, f"frames {got['len']} != {n}")
    check(got["total_tasks"] == len(r.tasks) == len(got["tasks_by_position"]), "total_tasks")
    check(got["task_index_column"] == list(range(len(got["tasks_by_position"]))),
          f"tasks.parquet task_index {got['task_index_column']} is not its row positions")
    check(got["stats_keys"] is not None and "action" in got["stats_keys"], "meta/stats.json not seen")
    cams = sorted(k for k in got["features"] if k.startswith("observation.images.") or
                  k.startswith("observation.depth."))
    check(sorted(got["camera_keys"]) == cams, f"camera keys {got['camera_keys']}")
    check(len(got["episodes"]) == len(eps), f"{len(got['episodes'])} episode rows")
    for p, (row, e) in enumerate(zip(got["episodes"], eps)):
        want = {"episode_index": p, "tasks": [e.instruction], "length": lengths[p], "from": int(starts[p]),
                "to": int(starts[p] + lengths[p]), "data_file": r.data_path(p).relative_to(root).as_posix()}
        have = {k: row[k] for k in want}
        check(have == want, f"episode row {p}: LeRobot {have} != {want}")
    check(len(got["frames"]) == n, f"{len(got['frames'])} frames returned")
    for f in got["frames"][:n]:
        i = f["i"]
        p = int(np.searchsorted(starts, i, side="right") - 1)
        e, t, T = eps[p], i - int(starts[p]), lengths[p]
        where = f"frame {i} (episode {p}, t={t})"
        check(f["task"] == e.instruction, f"{where}: task {f['task']!r} != {e.instruction!r}")
        check((f["episode_index"], f["frame_index"], f["index"]) == (p, t, i),
              f"{where}: indices {(f['episode_index'], f['frame_index'], f['index'])}")
        check(np.float32(f["timestamp"]) == e.timestamp[t], f"{where}: timestamp {f['timestamp']}")
        if e.timestamp_ns is not None:
            check(f["timestamp_ns"] == int(e.timestamp_ns[t]), f"{where}: timestamp_ns")
        for key, arr in (("observation.state", e.state), ("observation.ee_pose", e.ee_pose)):
            check(np.array_equal(np.asarray(f[key], np.float32), arr[t]), f"{where}: {key}")
        window = [max(t - 1, 0), t, min(t + 1, T - 1)]  # LeRobot clamps to [from, to) and flags the padding
        check(np.array_equal(np.asarray(f["action"], np.float32), e.action[window]), f"{where}: action window")
        check(f["action_is_pad"] == [t == 0, False, t == T - 1], f"{where}: action_is_pad {f['action_is_pad']}")
        for cam, imgs in e.images.items():
            d = f[f"observation.images.{cam}"]
            check(d["shape"] == [3, *imgs.shape[1:3]] and d["sha1"] == _sha1(imgs[t]), f"{where}: image {cam}")
        for cam, dep in (e.depth or {}).items():
            d = f[f"observation.depth.{cam}"]
            check(d["shape"] == [1, *dep.shape[1:3]] and d["sha1"] == _sha1(dep[t]), f"{where}: depth {cam} "
                  f"(LeRobot {d['dtype']} {d['min']}..{d['max']}, written {dep[t].min()}..{dep[t].max()})")
    return bad


@pytest.fixture(scope="module")
def lerobot_view(tmp_path_factory):
    py = _reader_venv()
    tmp = tmp_path_factory.mktemp("interop")
    roots = {k: tmp / k for k in ("written", "repaired", "bag", "teleop", "task_gap_control")}
    _written(roots["written"])
    _repaired(roots["repaired"])
    _bag(roots["bag"], tmp)
    _teleop(roots["teleop"])
    _task_gap_control(roots["task_gap_control"])
    env = dict(os.environ, HF_HOME=str(tmp / "hf_home"), HF_LEROBOT_HOME=str(tmp / "hf_lerobot"),
               OMP_NUM_THREADS="1")
    cmd = [str(py), str(READER), *map(str, roots.values()), "--delete-from", str(roots["written"]),
           "--delete-episode", "1", "--out", str(tmp / "deleted")]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp)
    assert r.returncode == 0, f"LeRobot reader failed:\n{r.stderr[-4000:]}"
    out = json.loads(r.stdout)
    return roots, out, tmp


@pytest.mark.parametrize("kind", ["written", "repaired", "bag", "teleop"])
def test_lerobot_reads_what_the_project_wrote(lerobot_view, kind):
    roots, out, _ = lerobot_view
    got = out["reads"][str(roots[kind])]
    bad = mismatches(roots[kind], got)
    assert bad == [], "\n".join(bad[:20])
    assert got["lerobot_version"] == "0.4.4"


def test_repaired_dataset_gives_every_frame_its_own_instruction(lerobot_view):
    """The original defect: after a repair LeRobot paired later episodes with the previous episode's task."""
    roots, out, _ = lerobot_view
    got = out["reads"][str(roots["repaired"])]
    survivors = [s for i, s in enumerate(REPAIRED) if i not in (1, 2)]
    assert sorted(got["tasks_by_position"]) == sorted(set(survivors))  # 'open the drawer' gone, no gap
    per_episode = {}
    for f in got["frames"]:
        per_episode.setdefault(f["episode_index"], set()).add(f["task"])
    assert [sorted(per_episode[e]) for e in range(len(survivors))] == [[s] for s in survivors]


def test_the_comparison_catches_a_task_gap(lerobot_view):
    """The test can fail: with the old repair's task-index gap LeRobot pairs frames with the wrong instruction
    (or raises), and the comparison reports it."""
    roots, out, _ = lerobot_view
    got = out["reads"][str(roots["task_gap_control"])]
    bad = mismatches(roots["task_gap_control"], got)
    assert bad, "a task-index gap went unnoticed"
    assert any("task" in m for m in bad), bad


def test_lerobot_delete_episodes_tool_on_a_written_dataset(lerobot_view):
    """LeRobot's own dataset tool (delete_episodes: rewrites data, meta, per-episode stats columns, tasks) works
    on the project's layout, and the result reads back with every frame's task and range right."""
    roots, out, tmp = lerobot_view
    got = out["after_delete"]
    assert "error" not in got, got.get("error")
    kept = [s for i, s in enumerate(WRITTEN) if i != 1]
    assert got["total_episodes"] == 3 and [e["tasks"] for e in got["episodes"]] == [[s] for s in kept]
    lengths = [3 + i for i in range(len(WRITTEN)) if i != 1]
    assert [(e["from"], e["to"]) for e in got["episodes"]] == [(sum(lengths[:k]), sum(lengths[:k + 1]))
                                                                for k in range(3)]
    starts = np.r_[0, np.cumsum(lengths)]
    for f in got["frames"]:
        p = int(np.searchsorted(starts, f["i"], side="right") - 1)
        assert f["task"] == kept[p] and f["episode_index"] == p
