"""Mid-training candidate pools: built-in offline pool (deterministic, labelled sources, exact answers), LLaVA-style
import / export round trip, parquet, clear errors, and the selection file as a recipe Stage-1 general source."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from etc_training.midtrain import MidtrainError
from etc_training.midtrain.builtin_pool import ROBOT_LIKE, SOURCES, make_builtin_pool, make_record
from etc_training.midtrain.pool import (
    export_llava,
    import_llava,
    pool_items,
    qa_pairs,
    read_pool,
    record_qa,
    validate_record,
    write_pool,
)
from etc_training.midtrain.select import write_selection


@pytest.fixture(scope="module")
def builtin(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    return read_pool(make_builtin_pool(d, n_per_source=4, seed=3, progress=False))


def test_builtin_pool_sources_and_labels(builtin):
    assert len(builtin) == 4 * len(SOURCES)
    assert builtin.sources() == sorted(SOURCES)
    assert builtin.manifest["robot_like_sources"] == list(ROBOT_LIKE)
    for r in builtin.records:
        assert r["robot_like"] == (r["source"] in ROBOT_LIKE)
        assert builtin.image_path(r).is_file()
        assert r["conversations"][0]["value"].startswith("<image>\n")
    ids = [r["id"] for r in builtin.records]
    assert len(set(ids)) == len(ids)


def test_builtin_pool_is_deterministic(tmp_path, builtin):
    other = read_pool(make_builtin_pool(tmp_path / "again", n_per_source=4, seed=3, progress=False))
    assert [r for r in other.records] == [r for r in builtin.records]
    for a, b in zip(builtin.records[::5], other.records[::5]):
        assert np.array_equal(np.asarray(Image.open(builtin.image_path(a))),
                              np.asarray(Image.open(other.image_path(b))))
    _, r7 = make_record("counting", 0, seed=7)
    _, r3 = make_record("counting", 0, seed=3)
    assert r7["conversations"] != r3["conversations"] or r7["meta"] != r3["meta"]


def test_pointing_answers_hit_the_named_object():
    """The answer point of a pointing sample lies on a coloured object, not on the wall or the table."""
    pat = re.compile(r"^\[\((0\.\d{3}|1\.000), (0\.\d{3}|1\.000)\)\]$")
    for i in range(20):
        img, rec = make_record("tabletop_pointing", i, seed=0)
        ans = rec["conversations"][1]["value"]
        m = pat.match(ans)
        assert m, ans
        x, y = float(m.group(1)), float(m.group(2))
        arr = np.asarray(img).astype(int)
        h, w = arr.shape[:2]
        px = arr[min(h - 1, int(round(y * h))), min(w - 1, int(round(x * w)))]
        # the wall and the table are muted (low saturation); objects are saturated palette colours
        assert px.max() - px.min() > 60, (i, ans, px)


def test_counting_answer_matches_meta():
    for i in range(10):
        _, rec = make_record("counting", i, seed=1)
        assert rec["conversations"][1]["value"] == str(rec["meta"]["count"])


def test_general_scene_sources_have_exact_answers():
    """The five general-scene sources: objects never occlude each other (their boxes are disjoint), every answer
    point lies in its object's box, counts are the objects of that kind, the sign's word is the answer."""
    from etc_training.midtrain.builtin_pool import SCENE_SOURCES, _outdoor_scene

    for i in range(40):
        rng = np.random.default_rng([5, i])
        img, objs, sky, word = _outdoor_scene(rng, sign=True)
        assert objs and sky in ("clear", "cloudy", "sunset") and word
        for k, a in enumerate(objs):
            x0, y0, x1, y1 = a["box"]
            assert x0 <= a["px"] <= x1 and y0 <= a["py"] <= y1
            for b in objs[k + 1:]:
                assert a["box"][2] < b["box"][0] or b["box"][2] < a["box"][0] or \
                    a["box"][3] < b["box"][1] or b["box"][3] < a["box"][1], (i, a["name"], b["name"])
    pts = re.compile(r"\((\d\.\d{3}), (\d\.\d{3})\)")
    for src in SCENE_SOURCES:
        for i in range(15):
            img, rec = make_record(src, i, seed=2)
            q, a = rec["conversations"][0]["value"], rec["conversations"][1]["value"]
            assert q.startswith("<image>\n") and a and not rec["robot_like"]
            if src == "scene_counting":
                assert a == str(rec["meta"]["count"])
            if src == "scene_pointing":
                assert len(pts.findall(a)) == rec["meta"]["n_points"] >= 1
            if src == "sign_text":
                assert a == rec["meta"]["word"]


def test_pool_sources_default_all_and_unknown():
    from etc_training.midtrain.builtin_pool import ALL_SOURCES, SCENE_SOURCES, source_list
    from etc_training.midtrain.config import load_midtrain_config

    assert source_list(["default"]) == SOURCES and source_list(["all"]) == ALL_SOURCES
    assert source_list(["counting", "default"])[0] == "counting"
    with pytest.raises(MidtrainError, match="unknown built-in pool source 'nope'"):
        source_list(["nope"])
    # a source's samples are seeded by its index in ALL_SOURCES: the six keep theirs, so the default pool (and the
    # figures made on it) does not change when sources are added
    assert ALL_SOURCES[:len(SOURCES)] == SOURCES
    root = Path(__file__).resolve().parents[1]
    cfg = load_midtrain_config(str(root / "config" / "midtrain_pool100k.yaml"))
    n = cfg.pool.n_per_source * len(source_list(cfg.pool.sources))
    assert n >= 100_000 and set(SCENE_SOURCES) <= set(source_list(cfg.pool.sources))
    # the downstream comparison scores that same pool (built under its OUT/pool) with the working policy's VLM
    down = load_midtrain_config(str(root / "config" / "midtrain_pickup100k.yaml"))
    assert Path(down.pool.path).parent == Path(cfg.out) / "pool" and down.model.path and down.robot.etc
    assert set(down.select.methods) == {"learned", "random", "distance"} == set(cfg.select.methods)
    with pytest.raises(MidtrainError, match="unknown built-in pool source"):
        load_midtrain_config(str(root / "config" / "midtrain.yaml"), ["pool.sources=[default, paintings]"])


def test_builtin_pool_with_scene_sources(tmp_path):
    pool = read_pool(make_builtin_pool(tmp_path, n_per_source=2, seed=0, sources=("counting", "sign_text"),
                                       progress=False))
    assert pool.sources() == ["counting", "sign_text"] and len(pool) == 4
    assert all(pool.image_path(r).is_file() for r in pool.records)


def _llava_fixture(tmp_path: Path) -> tuple[Path, Path, list]:
    root = tmp_path / "imgs"
    (root / "coco").mkdir(parents=True)
    for n in ("a.png", "b.png"):
        Image.fromarray(np.full((8, 8, 3), 100, np.uint8)).save(root / "coco" / n)
    data = [
        {"id": "s1", "image": "coco/a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is it?"}, {"from": "gpt", "value": "Gray."}]},
        {"id": "s2", "image": "coco/b.png", "model": "x", "conversations": [
            {"from": "human", "value": "Describe.<image>"}, {"from": "gpt", "value": "A square."},
            {"from": "human", "value": "How big?"}, {"from": "gpt", "value": "Eight pixels."}]},
        {"id": "t3", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]},
    ]
    jp = tmp_path / "llava_mix.json"
    jp.write_text(json.dumps(data))
    return jp, root, data


def test_llava_round_trip(tmp_path):
    jp, root, data = _llava_fixture(tmp_path)
    res = import_llava(jp, tmp_path / "out" / "pool.jsonl", image_root=root)
    assert res["n"] == 2 and res["skipped_text_only"] == 1 and res["sources"] == ["llava_mix"]
    pool = read_pool(tmp_path / "out")
    assert [r["source"] for r in pool.records] == ["llava_mix", "llava_mix"]
    assert all(pool.image_path(r).resolve().is_file() for r in pool.records)
    assert qa_pairs(pool.records[1]) == [("Describe.", "A square."), ("How big?", "Eight pixels.")]
    assert record_qa(pool.records[1]) == ("Describe.\nHow big?", "A square.\nEight pixels.")
    export_llava(pool.path, tmp_path / "back.json", root)
    back = json.loads((tmp_path / "back.json").read_text())
    assert back == data[:2]


def test_llava_import_errors(tmp_path):
    jp, root, data = _llava_fixture(tmp_path)
    with pytest.raises(MidtrainError, match="image file"):
        import_llava(jp, tmp_path / "o.jsonl", image_root=tmp_path / "nowhere")
    bad = [dict(data[0], conversations=[{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}])]
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(MidtrainError, match="turn 0: 'from' must be 'human'"):
        import_llava(tmp_path / "bad.json", tmp_path / "o.jsonl", image_root=root)
    (tmp_path / "obj.json").write_text(json.dumps({"id": 1}))
    with pytest.raises(MidtrainError, match="expected a JSON list"):
        import_llava(tmp_path / "obj.json", tmp_path / "o.jsonl")
    dup = [data[0], data[0]]
    (tmp_path / "dup.json").write_text(json.dumps(dup))
    with pytest.raises(MidtrainError, match="duplicate record id 's1'"):
        import_llava(tmp_path / "dup.json", tmp_path / "o.jsonl", image_root=root)


def test_validate_record_errors():
    ok = {"id": "a", "image": "x.png", "source": "s",
          "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    assert validate_record(ok, "t") == ok
    with pytest.raises(MidtrainError, match="needs an 'image'"):
        validate_record({**ok, "image": None}, "t")
    with pytest.raises(MidtrainError, match="no gpt answer"):
        validate_record({**ok, "conversations": ok["conversations"] + [{"from": "human", "value": "more"}]}, "t")
    with pytest.raises(MidtrainError, match="has no text"):
        validate_record({**ok, "conversations": [{"from": "human", "value": "<image>"},
                                                 {"from": "gpt", "value": "a"}]}, "t")
    with pytest.raises(MidtrainError, match="reserved"):
        validate_record({**ok, "source": "robot/etc"}, "t")
    with pytest.raises(MidtrainError, match="source"):
        validate_record({k: v for k, v in ok.items() if k != "source"}, "t")


def test_parquet_round_trip(tmp_path, builtin):
    recs = [dict(r, image=str(builtin.image_path(r).resolve())) for r in builtin.records[:6]]
    p = write_pool(tmp_path / "p.parquet", recs)
    assert read_pool(p).records == recs


def test_read_pool_errors(tmp_path):
    with pytest.raises(MidtrainError, match="not found"):
        read_pool(tmp_path / "missing.jsonl")
    f = tmp_path / "bad.jsonl"
    f.write_text('{"id": "a"\n')
    with pytest.raises(MidtrainError, match="bad.jsonl:1: invalid JSON"):
        read_pool(f)


def test_selection_is_a_recipe_general_source(tmp_path, builtin):
    """The selected subset loads through the recipe's Stage-1 general-source path and makes model examples."""
    from etc_ros.core.action_tokenizer import BinningActionTokenizer
    from etc_ros.core.processor import ProcessorConfig, VLAProcessor
    from etc_training.models.text_tokenizer import build_text_tokenizer
    from etc_training.recipe.config import SourceConfig
    from etc_training.recipe.data import EpisodeStore, RecordImages, load_language_source

    # a two-turn record is written as two records
    recs = [dict(r, image=str(builtin.image_path(r).resolve())) for r in builtin.records]
    recs[0] = dict(recs[0], conversations=recs[0]["conversations"] + [
        {"from": "human", "value": "And again?"}, {"from": "gpt", "value": "Yes."}])
    pool = read_pool(write_pool(tmp_path / "p2" / "pool.jsonl", recs))
    scores = np.arange(len(pool), dtype=float)[::-1]
    sel = [0, 5, 9]
    summ = write_selection(pool, sel, scores, tmp_path / "sel" / "selected.jsonl", "learned")
    assert summ["k"] == 3 and summ["records_written"] == 4
    assert json.loads((tmp_path / "sel" / "selected.json").read_text())["by_source"]
    src = load_language_source(SourceConfig(name="mid", kind="general", path=str(tmp_path / "sel" / "selected.jsonl")))
    assert len(src) == 4
    assert src.records[1]["prompt"] == "And again?" and src.records[1]["answer"] == "Yes."
    assert src.records[0]["id"] == f"{pool.records[0]['id']}#0"
    tok = build_text_tokenizer(2048, 1024)
    proc = VLAProcessor(tok, ProcessorConfig(image_size=32, image_tokens_per_view=4, action_token_offset=2048,
                                             n_action_tokens=1024), BinningActionTokenizer(256, 7, 10))
    images = RecordImages(EpisodeStore(), (), 1)
    for r in src.records:
        ex = proc.build_etc_example(r["prompt"], r["answer"], images(r))
        assert (ex["labels"] != -100).sum() > 0
    items = pool_items(pool)
    assert (items[0]["prompt"], items[0]["answer"]) == record_qa(pool.records[0])
    assert items[0]["images"] == [{"path": pool.records[0]["image"]}] and items[0]["group"] == pool.records[0]["source"]
    with pytest.raises(MidtrainError, match=".jsonl"):
        write_selection(pool, sel, scores, tmp_path / "sel.txt", "learned")
