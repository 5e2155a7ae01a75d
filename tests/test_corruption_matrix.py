"""Every bad-input path (issue 16, item 6): each file kind of a dataset and of a policy bundle corrupted in turn
(truncated, garbage bytes, empty, missing, valid but wrong content), then what validate, the reader, repair and the
bundle loader say.

Dataset cells (a tiny dataset written with the project's writer; PNG and video mode):
  validate   reports the damage in a message naming the file (no raw exception);
  reader     raises DatasetError naming the file where the file is needed (info.json: opening; an episode's files:
             that episode only, the other episodes still read back exactly); derived files (tasks.parquet,
             stats.json) are not needed by the reader, an unreadable stats.json is a DatasetError naming it;
  repair     rebuilds what is derived, rebuilds a lost episode row from its data, quarantines only episodes whose
             frames are unreadable; afterwards validate is clean and every readable episode is still there with its
             frames (counted and compared).
Bundle cells (a copy of policies/sim_pickup): the loader raises ONE BundleError line naming the file, before any
inference; byte damage is caught by the checksum table, and the same damage re-sealed into the manifest (a
consistent but wrong export) by the content checks.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_dataset import make_episode, spec_small

from etc_ros.core.errors import BundleError
from etc_ros.data import DatasetError, DatasetReader, DatasetSpec, DatasetWriter, repair_dataset
from etc_ros.data.validate import validate_report

REPO = Path(__file__).resolve().parents[1]
SIM_PICKUP = REPO / "policies" / "sim_pickup"

EP_META = "meta/episodes/chunk-000/file-001.parquet"
EP_DATA = "data/chunk-000/file-001.parquet"
VIDEO = "videos/observation.images.primary/chunk-000/file-001.mp4"
INSTR = ["pick up the red cube", "open the drawer", "put the cube in the bowl"]


# ------------------------------------------------------------------------------------------------ datasets
def _write(root: Path, spec: DatasetSpec, lengths: tuple[int, ...]) -> list:
    eps = [make_episode(i, n, spec, INSTR[i], "val" if i == 1 else "train") for i, n in enumerate(lengths)]
    with DatasetWriter.create(root, spec) as w:
        for e in eps:
            w.write_episode(e)
    return eps


@pytest.fixture(scope="module")
def png_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("tpl") / "png"
    return root, _write(root, spec_small(), (3, 4, 5))


@pytest.fixture(scope="module")
def video_template(tmp_path_factory):
    root = tmp_path_factory.mktemp("tpl") / "video"
    spec = DatasetSpec(fps=5.0, cameras={"primary": (32, 48)}, video=True, video_codec="mpeg4")
    return root, _write(root, spec, (3, 4, 5))


def _bytes(path: Path, mode: str) -> None:
    if mode == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif mode == "garbage":
        path.write_bytes(np.random.default_rng(7).integers(0, 256, path.stat().st_size, dtype=np.uint8).tobytes())
    elif mode == "empty":
        path.write_bytes(b"")
    elif mode == "missing":
        path.unlink()
    else:  # pragma: no cover
        raise ValueError(mode)


def _info_no_features(p: Path) -> None:
    d = json.loads(p.read_text())
    del d["features"]
    p.write_text(json.dumps(d))


def _info_wrong_version(p: Path) -> None:
    p.write_text(json.dumps(dict(json.loads(p.read_text()), codebase_version="v2.1")))


def _tasks_no_task_column(p: Path) -> None:
    pq.write_table(pa.table({"task_index": [0, 1, 2]}), p)


def _tasks_string_index(p: Path) -> None:
    t = pq.read_table(p)
    pq.write_table(t.set_column(t.column_names.index("task_index"), "task_index",
                                pa.array([str(x) for x in t.column("task_index").to_pylist()])), p)


def _stats_nan(p: Path) -> None:
    d = json.loads(p.read_text())
    d["action"]["mean"][0] = float("nan")
    p.write_text(json.dumps(d))


def _stats_wrong_shape(p: Path) -> None:
    d = json.loads(p.read_text())
    d["observation.state"]["std"] = d["observation.state"]["std"][:3]
    p.write_text(json.dumps(d))


def _stats_not_mapping(p: Path) -> None:
    p.write_text(json.dumps([1, 2, 3]))


def _ep_no_instruction(p: Path) -> None:
    t = pq.read_table(p)
    pq.write_table(t.drop_columns(["instruction"]), p)


def _ep_length_as_string(p: Path) -> None:
    t = pq.read_table(p)
    pq.write_table(t.set_column(t.column_names.index("length"), "length", pa.array(["4"])), p)


def _data_no_action(p: Path) -> None:
    t = pq.read_table(p)
    pq.write_table(t.drop_columns(["action"]), p)


def _data_timestamp_float64(p: Path) -> None:
    t = pq.read_table(p)
    i = t.column_names.index("timestamp")
    pq.write_table(t.set_column(i, "timestamp", t.column(i).cast(pa.float64())), p)


def _data_bad_png(p: Path) -> None:
    t = pq.read_table(p)
    col = t.column("observation.images.wrist").combine_chunks()
    blobs = col.field("bytes").to_pylist()
    blobs[1] = blobs[1][:20]
    new = pa.StructArray.from_arrays([pa.array(blobs, pa.binary()), col.field("path")], names=["bytes", "path"])
    pq.write_table(t.set_column(t.column_names.index("observation.images.wrist"), "observation.images.wrist", new), p)


@dataclass(frozen=True)
class Cell:
    """file kind x corruption. reader: 'open' (DatasetReader raises), 'episode' (episode 1 raises, the others
    read), 'meta' (episode 1's row is unreadable, its frames are not needed to open), 'ok' (the reader does not
    need the file), 'stats' (the reader's stats raise). lost: episodes repair must drop (their frames are gone)."""

    rel: str
    mode: str
    reader: str
    lost: tuple[int, ...] = ()
    change: Callable[[Path], None] | None = None
    video: bool = False
    warning: bool = False  # validate reports it as a warning (a missing derived file LeRobot tolerates)
    repair_names: str = ""  # text repair's actions must hold
    quarantined: tuple[str, ...] = field(default=())


BYTES = ("truncated", "garbage", "empty", "missing")
DATASET_CELLS = (
    [Cell("meta/info.json", m, "open", repair_names="rebuilt meta/info.json") for m in BYTES]
    + [Cell("meta/info.json", "no features", "open", change=_info_no_features, repair_names="rebuilt meta/info.json"),
       Cell("meta/info.json", "codebase v2.1", "open", change=_info_wrong_version,
            repair_names="rebuilt meta/info.json")]
    + [Cell("meta/tasks.parquet", m, "ok") for m in BYTES]
    + [Cell("meta/tasks.parquet", "no task column", "ok", change=_tasks_no_task_column),
       Cell("meta/tasks.parquet", "task_index as string", "ok", change=_tasks_string_index)]
    + [Cell("meta/stats.json", m, "ok" if m == "missing" else "stats", warning=m == "missing") for m in BYTES]
    + [Cell("meta/stats.json", "NaN mean", "stats", change=_stats_nan),
       Cell("meta/stats.json", "wrong shape", "stats", change=_stats_wrong_shape),
       Cell("meta/stats.json", "not a mapping", "stats", change=_stats_not_mapping)]
    + [Cell(EP_META, m, "meta", repair_names="rebuilt from its data file") for m in BYTES]
    + [Cell(EP_META, "no instruction column", "meta", change=_ep_no_instruction,
            repair_names="rebuilt from its data file"),
       Cell(EP_META, "length as string", "meta", change=_ep_length_as_string,
            repair_names="rebuilt from its data file")]
    + [Cell(EP_DATA, m, "episode", lost=(1,), quarantined=(EP_META,) + ((EP_DATA,) if m != "missing" else ()))
       for m in BYTES]
    + [Cell(EP_DATA, "no action column", "episode", lost=(1,), change=_data_no_action,
            quarantined=(EP_META, EP_DATA)),
       Cell(EP_DATA, "timestamp float64", "ok", change=_data_timestamp_float64, repair_names="cast back"),
       Cell(EP_DATA, "damaged PNG", "episode", lost=(1,), change=_data_bad_png, quarantined=(EP_META, EP_DATA))]
    + [Cell(VIDEO, m, "episode", lost=(1,), video=True,
            quarantined=(EP_META, EP_DATA) + ((VIDEO,) if m != "missing" else ())) for m in BYTES]
)


def _same_frames(a, b) -> None:
    for k in ("state", "action", "ee_pose", "timestamp"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert a.instruction == b.instruction
    for c in b.images:
        if a.images[c].shape != b.images[c].shape:
            raise AssertionError(c)


_KIND = {EP_META: "episodes", EP_DATA: "data", VIDEO: "video"}
_IDS = [f"{_KIND.get(c.rel, c.rel.split('/')[-1])}-{c.mode.replace(' ', '_')}" for c in DATASET_CELLS]


@pytest.mark.parametrize("cell", DATASET_CELLS, ids=_IDS)
def test_dataset_file_corruption(cell: Cell, png_template, video_template, tmp_path):
    src, eps = video_template if cell.video else png_template
    root = tmp_path / "ds"
    shutil.copytree(src, root)
    target = root / cell.rel
    if cell.change is not None:
        cell.change(target)
    else:
        _bytes(target, cell.mode)
    starts = np.cumsum([0] + [len(e) for e in eps])

    # (a) validate: a message naming the file, never a raw exception
    rep = validate_report(root)
    msgs = rep.errors + (rep.warnings if cell.warning else [])
    assert any(cell.rel in m for m in msgs), (rep.errors, rep.warnings)
    if not cell.warning:
        assert rep.errors

    # (b) the reader: DatasetError naming the file where the file is needed, the rest readable
    if cell.reader == "open":
        with pytest.raises(DatasetError, match=cell.rel.replace(".", r"\.")):
            DatasetReader(root)
    else:
        r = DatasetReader(root)
        assert r.num_episodes == 3
        if cell.reader in ("episode", "meta"):
            with pytest.raises(DatasetError) as ei:
                r.load_episode(1)
            assert cell.rel in str(ei.value)
            with pytest.raises(DatasetError) as ei:
                r.frame(int(starts[1]) + 1)
            assert cell.rel in str(ei.value) or cell.reader == "meta"  # 'meta': the frame does not exist then
        else:
            _same_frames(r.load_episode(1), eps[1])
        if cell.reader == "meta":
            with pytest.raises(DatasetError, match=cell.rel.replace(".", r"\.")):
                r.episode_meta(1)
        if cell.reader == "stats":
            with pytest.raises(DatasetError, match=cell.rel.replace(".", r"\.")):
                r.stats
        elif cell.rel == "meta/stats.json":
            assert r.stats is None
        for i in (0, 2):
            _same_frames(r.load_episode(i), eps[i])
            assert r.frame(int(starts[i]))["task"] == INSTR[i]

    # (c) repair: derived and lost rows rebuilt, only unreadable episodes quarantined, every readable frame kept
    actions = repair_dataset(root, deep=True)
    if cell.repair_names:
        assert any(cell.repair_names in a for a in actions), actions
    assert validate_report(root).errors == []
    survivors = [i for i in range(len(eps)) if i not in cell.lost]
    r = DatasetReader(root)
    assert r.num_episodes == len(survivors), actions
    assert r.num_frames == sum(len(eps[i]) for i in survivors), actions
    for new, old in enumerate(survivors):
        _same_frames(r.load_episode(new), eps[old])
        assert r.episode_meta(new)["instruction"] == INSTR[old]
    assert r.stats is not None
    moved = {p.relative_to(next((root / "quarantine").iterdir())).as_posix()
             for p in (root / "quarantine").rglob("*") if p.is_file()} if (root / "quarantine").is_dir() else set()
    assert set(cell.quarantined) <= moved, (moved, actions)
    if not cell.lost:
        assert not [m for m in moved if m.startswith(("data/", "videos/"))], moved


def test_a_data_file_past_the_last_committed_episode_stays_an_orphan(png_template, tmp_path):
    """The writer commits episodes in order: a data file below the last committed episode without its row lost the
    row (the matrix cell episodes-missing: repair rebuilds it); past the last episode (a crash before the commit) it
    is an uncommitted orphan that repair moves to quarantine."""
    src, eps = png_template
    root = tmp_path / "ds"
    shutil.copytree(src, root)
    (root / "meta/episodes/chunk-000/file-002.parquet").unlink()  # episode 2: never committed
    actions = repair_dataset(root)
    assert not any("rebuilt" in a for a in actions), actions
    assert any("data/chunk-000/file-002.parquet" in a and "orphan" in a for a in actions), actions
    r = DatasetReader(root)
    assert r.num_episodes == 2 and r.num_frames == len(eps[0]) + len(eps[1])
    assert validate_report(root).errors == []


# ------------------------------------------------------------------------------------------------ bundles
@pytest.fixture(scope="module")
def bundle_template(tmp_path_factory):
    """sim_pickup plus a torch/ copy of its processor files (the layout of a bundle shipped with its checkpoint)."""
    from etc_ros.policy.bundle import MANIFEST_FILE, write_manifest

    b = tmp_path_factory.mktemp("bundle") / "b"
    shutil.copytree(SIM_PICKUP, b)
    shutil.copytree(b / "processor", b / "torch")
    man = json.loads((b / MANIFEST_FILE).read_text())
    man.pop("files")
    man["torch_dir"] = "torch"
    write_manifest(b, man)
    return b


def _reseal(b: Path) -> None:
    from etc_ros.policy.bundle import MANIFEST_FILE, write_manifest

    man = json.loads((b / MANIFEST_FILE).read_text())
    man.pop("files", None)
    write_manifest(b, man)


def _edit_json(rel: str, fn: Callable[[dict], None], both: bool = True) -> Callable[[Path], None]:
    """Edit a JSON file of the bundle (and its torch/ copy, so that only the checked contract is broken)."""
    def run(b: Path) -> None:
        for p in [b / rel] + ([b / "torch" / Path(rel).name] if both and rel.startswith("processor/") else []):
            d = json.loads(p.read_text())
            fn(d)
            p.write_text(json.dumps(d))
    return run


def _nan_stats(d):
    d["action"]["q01"][2] = float("nan")


def _six_dim_stats(d):
    for k, v in d["action"].items():
        if isinstance(v, list) and len(v) == 7:
            d["action"][k] = v[:6]


def _no_action_stats(d):
    del d["action"]


def _tokens_block_past_vocab(d):
    d["config"].update(action_format="tokens", action_token_offset=2900)


def _wrong_type(d):
    d["config"]["image_size"] = "ninety-six"


def _too_many_bins(d):
    d["n_bins"] = 2000


def _tokens_format(d):
    d["config"]["action_format"] = "tokens"


def _bigger_vocab(b: Path) -> None:
    from tokenizers import AddedToken, Tokenizer

    for d in ("processor", "torch"):
        tok = Tokenizer.from_file(str(b / d / "tokenizer.json"))
        tok.add_tokens([AddedToken(f"<extra_{i}>", special=True) for i in range(8)])
        tok.save(str(b / d / "tokenizer.json"))


def _swap_graph(b: Path) -> None:
    shutil.copyfile(b / "fp32" / "head.onnx", b / "fp32" / "embed.onnx")


def _torch_copy_differs(b: Path) -> None:
    p = b / "torch" / "norm_stats.json"
    p.write_text(p.read_text() + "\n")


def _spec_horizon(d):
    d["horizon"] = 8


def _manifest_head(d):
    d["head"]["type"] = "diffusion-v9"


def _manifest_graph_path(d):
    d["variants"]["fp32"]["graphs"]["embed"] = "fp32/nope.onnx"


BUNDLE_FILES = ("manifest.json", "spec.json", "processor/processor.json", "processor/tokenizer.json",
                "processor/action_tokenizer.json", "processor/norm_stats.json", "fp32/embed.onnx")
# (file, corruption, edit, reseal the manifest, text the one error line must hold besides the file)
BUNDLE_CELLS = (
    [(f, m, None, False, "") for f in BUNDLE_FILES for m in BYTES]
    + [(f, m, None, True, "") for f in BUNDLE_FILES[1:] for m in ("truncated", "garbage", "empty")]
    + [("processor/norm_stats.json", "missing", None, True, "missing"),
       ("processor/tokenizer.json", "missing", None, True, "missing"),
       ("manifest.json", "unknown head type", _edit_json("manifest.json", _manifest_head), False, "diffusion-v9"),
       ("fp32/nope.onnx", "graph path to nowhere", _edit_json("manifest.json", _manifest_graph_path), True,
        "not in the checksum table"),
       ("spec.json", "horizon 8", _edit_json("spec.json", _spec_horizon), True, "horizon is 8"),
       ("processor/norm_stats.json", "NaN q01", _edit_json("processor/norm_stats.json", _nan_stats), True,
        "NaN or Inf"),
       ("processor/norm_stats.json", "6-dim action", _edit_json("processor/norm_stats.json", _six_dim_stats), True,
        "have 6 dimensions, expected 7"),
       ("processor/norm_stats.json", "no action stats", _edit_json("processor/norm_stats.json", _no_action_stats),
        True, "says the policy normalizes"),
       ("processor/processor.json", "wrong type", _edit_json("processor/processor.json", _wrong_type), True,
        "image_size"),
       ("processor/processor.json", "action block past vocab",
        _edit_json("processor/processor.json", _tokens_block_past_vocab), True, "expected ids 0..3071"),
       ("processor/action_tokenizer.json", "more bins than reserved",
        lambda b: (_edit_json("processor/action_tokenizer.json", _too_many_bins)(b),
                   _edit_json("processor/processor.json", _tokens_format)(b)), True,
        "expected at most 1024, found 2000"),
       ("processor/tokenizer.json", "vocab beyond embed graph", _bigger_vocab, True, "cannot take token id 3079"),
       ("fp32/embed.onnx", "another graph", _swap_graph, True, "graph_io expects inputs ['input_ids']"),
       ("torch/norm_stats.json", "torch copy differs", _torch_copy_differs, True, "expected sha256")]
)


@pytest.mark.parametrize("rel,mode,edit,reseal,text", BUNDLE_CELLS,
                         ids=[f"{c[0].split('/')[-1]}-{c[1].replace(' ', '_')}{'-resealed' if c[3] else ''}"
                              for c in BUNDLE_CELLS])
def test_bundle_file_corruption(rel, mode, edit, reseal, text, bundle_template, tmp_path, monkeypatch):
    from etc_ros.policy import runtime
    from etc_ros.policy.runtime import PolicyRuntime

    b = tmp_path / "b"
    shutil.copytree(bundle_template, b)
    if edit is not None:
        edit(b)
    else:
        _bytes(b / rel, mode)
        if reseal and rel.startswith("processor/"):  # the same damage in both copies: the content checks answer
            if mode == "missing":
                (b / "torch" / Path(rel).name).unlink()
            else:
                shutil.copyfile(b / rel, b / "torch" / Path(rel).name)
    if reseal:
        _reseal(b)
    ran = []
    monkeypatch.setattr(runtime.GraphPolicy, "predict", lambda *a, **k: ran.append(1))  # no inference at load
    with pytest.raises(BundleError) as ei:
        PolicyRuntime.load(b, threads=1)
    msg = str(ei.value)
    assert "\n" not in msg, msg
    assert rel in msg, msg
    assert text in msg, msg
    assert not ran


@pytest.mark.parametrize("backend", ["onnxruntime", "tensorrt", "torch"])
def test_torch_and_processor_copies_are_compared_for_every_backend(backend, bundle_template, tmp_path):
    from etc_ros.policy.runtime import PolicyRuntime

    b = tmp_path / "b"
    shutil.copytree(bundle_template, b)
    _torch_copy_differs(b)
    _reseal(b)
    with pytest.raises(BundleError, match=r"torch/norm_stats.json differs from processor/norm_stats.json.*expected "
                                          r"sha256 [0-9a-f]{64}, found sha256 [0-9a-f]{64}"):
        PolicyRuntime.load(b, backend=backend, threads=1)


def test_the_intact_bundle_copy_loads(bundle_template):
    from etc_ros.policy.runtime import PolicyRuntime

    rt = PolicyRuntime.load(bundle_template, threads=1)
    assert rt.processor.vocab_size == 3072
