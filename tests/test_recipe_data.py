"""Recipe data side (no model): mixing ratios (Stage 2's 32:8, Stage 3's target:OOD), sampler state round trips,
rank sharding, action chunk padding, record formats accepted as sources, loss masking of ETC / general examples,
the config checks, the learning-rate schedule and linear CKA."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from etc_ros.core.action_tokenizer import BinningActionTokenizer
from etc_ros.core.processor import IGNORE_INDEX, ProcessorConfig, VLAProcessor
from etc_training.recipe.config import RecipeError, SourceConfig, StageConfig, load_train_config
from etc_training.recipe.data import (
    EpochSampler,
    LanguageSource,
    RatioAllocator,
    RecordImages,
    StageData,
    chunk_at,
    load_language_source,
    normalize_record,
    read_jsonl,
    shard,
)

ROOT = Path(__file__).resolve().parents[1]
SUBTYPES = ("point", "box", "trajectory", "plan", "goal", "affordance_grasp")


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def proc():
    from etc_training.models.text_tokenizer import build_text_tokenizer

    tok = build_text_tokenizer(2048, 1024)
    cfg = ProcessorConfig(image_size=32, image_tokens_per_view=4, action_token_offset=2048, n_action_tokens=1024)
    return VLAProcessor(tok, cfg, BinningActionTokenizer(256, 7, 10))


class FakeActions:
    """Stands in for ActionChunkDataset (len, example)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def example(self, processor, i):
        rng = np.random.default_rng(i)
        img = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        return processor.build_action_example(img, np.zeros(7), f"task {i}", rng.uniform(-0.5, 0.5, (10, 7)))


def _records(n: int, split: str, tag: str) -> list[dict]:
    return [{"id": f"{tag}{i}", "prompt": f"where is object {i}?", "answer": f"[{i % 1000}, 7]",
             "subtype": SUBTYPES[i % len(SUBTYPES)], "split": split, "images": [{"path": "x.png"}]}
            for i in range(n)]


class FakeImages(RecordImages):
    def __init__(self):
        pass

    def __call__(self, rec):
        return np.full((24, 32, 3), 128, dtype=np.uint8)


# ---------------------------------------------------------------- mixing ratios
def test_stage2_paper_ratio_32_to_8_every_step(proc):
    s = StageConfig(action_batch=32, etc_ratio=0.25)
    assert s.resolved_etc_batch() == 8  # round(32 x 0.25)
    src = LanguageSource("etc", "etc", _records(50, "train", "e"), ".")
    data = StageData(proc, FakeActions(100), [(src, 1.0)], 32, 8, seed=0, images=FakeImages())
    for _ in range(3):
        a, e = data.draw()
        assert len(a) == 32 and len(e) == 8
    assert data.counts == {"etc": 24, "action": 96}


@pytest.mark.parametrize("weights,n", [((0.9, 0.1), 2), ((0.9, 0.1), 8), ((0.5, 0.3, 0.2), 5), ((1.0, 0.0), 4),
                                       ((1, 1, 1), 7)])
def test_ratio_allocator_exact_in_the_long_run(weights, n):
    alloc = RatioAllocator(weights)
    w = np.asarray(weights, float) / sum(weights)
    total = np.zeros(len(weights))
    for step in range(1, 401):
        got = alloc.split(n)
        assert got.sum() == n and np.all(got >= 0)
        total += got
        # every source stays within one sample of its exact share at every step
        assert np.all(np.abs(total - w * n * step) <= 1.0 + 1e-9), (step, total, w * n * step)
    if 0.0 in weights:
        assert total[list(weights).index(0.0)] == 0


def test_stage3_target_and_ood_etc_mixed_at_configured_ratio(proc):
    tgt = LanguageSource("target", "etc", _records(40, "target", "t"), ".")
    ood = LanguageSource("ood", "etc", _records(40, "ood", "o"), ".")
    data = StageData(proc, FakeActions(30), [(tgt, 0.9), (ood, 0.1)], 8, 2, seed=3, images=FakeImages())
    for _ in range(100):
        a, e = data.draw()
        assert len(a) == 8 and len(e) == 2
    assert data.counts["target"] == 180 and data.counts["ood"] == 20
    # records really come from the right split
    _, e = data.draw()
    for k, i in e:
        assert data.sources[k].records[i]["split"] == data.sources[k].name


def test_sampler_state_round_trip_continues_identically(proc):
    def make():
        src1 = LanguageSource("a", "etc", _records(30, "train", "a"), ".")
        src2 = LanguageSource("g", "general", [dict(r, subtype="general") for r in _records(11, "train", "g")], ".")
        return StageData(proc, FakeActions(17), [(src1, 0.7), (src2, 0.3)], 4, 3, seed=5, images=FakeImages())

    d1 = make()
    for _ in range(7):
        d1.draw()
    state = json.loads(json.dumps(d1.state_dict()))  # must survive JSON (checkpoint metadata)
    ref = [d1.draw() for _ in range(9)]
    d2 = make()
    d2.load_state_dict(state)
    assert [d2.draw() for _ in range(9)] == ref
    d3 = make()  # a fresh sampler differs from the continued one
    assert [d3.draw() for _ in range(9)] != ref


def test_epoch_sampler_visits_everything_once_per_epoch():
    s = EpochSampler(10, seed=1)
    first = s.draw(10)
    assert sorted(first.tolist()) == list(range(10))
    nxt = s.draw(10)
    assert sorted(nxt.tolist()) == list(range(10)) and not np.array_equal(first, nxt)
    with pytest.raises(RecipeError):
        EpochSampler(0)


def test_rank_shards_partition_the_global_batch():
    items = list(range(10))
    parts = [shard(items, r, 2) for r in range(2)]
    assert sorted(parts[0] + parts[1]) == items and not set(parts[0]) & set(parts[1])


# ---------------------------------------------------------------- loss masking
def _answer_span(proc, ex):
    """Positions of "Answer: ..." + <eos> at the end of an ETC example."""
    ans = proc.encode_text("Answer: ") + proc.encode_text("[12, 7]") + [proc.eos_id]
    return len(ex["input_ids"]) - len(ans), ans


def test_etc_batch_labels_only_on_the_answer(proc):
    src = LanguageSource("etc", "etc", [{"id": "x", "prompt": "Where is the red cube?", "answer": "[12, 7]",
                                         "subtype": "point", "split": "train", "images": [{"path": "x.png"}]}], ".")
    data = StageData(proc, None, [(src, 1.0)], 0, 2, seed=0, images=FakeImages())
    batch = data.next()
    assert batch["action"] is None and batch["etc"]["input_ids"].shape[0] == 2
    ex = data.etc_example(0, 0)
    start, ans = _answer_span(proc, ex)
    lab = ex["labels"]
    assert np.all(lab[:start] == IGNORE_INDEX), "prompt and image tokens must carry no loss"
    assert lab[start:].tolist() == ans
    prompt_text = proc.tokenizer.decode(ex["input_ids"][:start].tolist(), skip_special_tokens=True)
    assert "Where is the red cube?" in prompt_text  # the question sits in the unlabelled prefix


def test_action_batch_labels_exclude_the_prompt(proc):
    ex = FakeActions(1).example(proc, 0)
    tt = ex["token_type_ids"]
    n_prefix = int((tt == 0).sum())
    assert np.all(ex["labels"][:n_prefix] == IGNORE_INDEX)
    assert np.all(ex["labels"][n_prefix:] != IGNORE_INDEX)


# ---------------------------------------------------------------- records / sources
def test_general_vlm_records_in_both_formats(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    lines = [
        {"image": "a.png", "question": "What color?", "answer": "black"},
        {"images": [{"path": "a.png"}], "conversations": [{"from": "human", "value": "<image>\nCount the cubes."},
                                                          {"from": "gpt", "value": "two"}], "score": 0.9},
    ]
    f = tmp_path / "selected.jsonl"
    f.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    recs = read_jsonl(f)
    assert [r["prompt"] for r in recs] == ["What color?", "Count the cubes."]
    assert [r["answer"] for r in recs] == ["black", "two"] and all(r["subtype"] == "general" for r in recs)
    src = load_language_source(SourceConfig(name="g", kind="general", path=str(f)))
    img = RecordImages(store=None)(src.records[0])
    assert img.shape == (8, 8, 3)


@pytest.mark.parametrize("rec,msg", [
    ({"image": "a.png", "answer": "x"}, "prompt"),
    ({"question": "q", "answer": "a"}, "no image"),
    ({"image": 5, "question": "q", "answer": "a"}, "bad image reference"),
    ({"image": "a.png", "conversations": [{"from": "gpt", "value": "a"}]}, "human turn"),
    ([1, 2], "JSON object"),
])
def test_bad_records_are_clear_errors(rec, msg):
    with pytest.raises(RecipeError, match=msg):
        normalize_record(rec, "f.jsonl:3", "general")


def test_bad_jsonl_line_names_file_and_line(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"image": "a.png", "question": "q", "answer": "a"}\n{oops\n')
    with pytest.raises(RecipeError, match=r"x.jsonl:2"):
        read_jsonl(f)


def test_chunk_padding_holds_still_and_keeps_gripper():
    a = np.arange(4 * 7, dtype=np.float32).reshape(4, 7)
    c = chunk_at(a, 2, 5)
    assert c.shape == (5, 7)
    np.testing.assert_array_equal(c[:2], a[2:4])
    assert np.all(c[2:, :6] == 0) and np.all(c[2:, 6] == a[-1, 6])


# ---------------------------------------------------------------- config
def test_shipped_configs_load_and_match_the_paper():
    tiny = load_train_config(str(ROOT / "config/train_tiny.yaml"))
    assert tiny.stages.stage2.resolved_etc_batch() == round(tiny.stages.stage2.action_batch * 0.25)
    total = sum(s.steps for _, s in tiny.stages.items() if s.enabled)
    assert total <= 400, "the tiny recipe must stay a few hundred steps"
    big = load_train_config(str(ROOT / "config/train_paligemma.yaml"))
    s1, s2 = big.stages.stage1, big.stages.stage2
    assert (s1.steps, s1.lr) == (2000, 1e-5) and not s1.freeze_vision
    assert (s2.action_batch, s2.resolved_etc_batch()) == (32, 8)
    assert (s2.lr, s2.min_lr, s2.warmup, s2.ema_decay, s2.grad_clip) == (2.5e-5, 2.5e-6, 1000, 0.99, 1.0)
    assert tuple(s2.betas) == (0.9, 0.95)
    assert big.model.preset == "paligemma-3b"


@pytest.mark.parametrize("ov,msg", [
    (["stages.stage1.enabled=false", "stages.stage2.enabled=false", "stages.stage3.enabled=false"], "disabled"),
    (["stages.stage2.lr=-1"], "lr"),
    (["stages.stage2.etc_sources=[]"], "etc_sources"),
    (["stages.stage1.action_batch=0", "stages.stage1.etc_batch=0"], "nothing to train"),
    (["stages.stage2.ema_decay=1.5"], "ema_decay"),
    (["stages.stage2.stepz=3"], "unknown config key"),
    (["stages.stage2.steps=abc"], "integer"),
    (["cka.probe_size=1"], "probe_size"),
])
def test_bad_config_is_a_clear_error(ov, msg):
    with pytest.raises(RecipeError if msg not in ("unknown config key", "integer") else Exception, match=msg):
        load_train_config(str(ROOT / "config/train_tiny.yaml"), ov)


# ---------------------------------------------------------------- schedule
def test_warmup_then_cosine():
    from etc_training.recipe.trainer import lr_at

    lrs = [lr_at(s, 100, 10, 1.0, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(a <= b for a, b in zip(lrs[:10], lrs[1:10]))
    assert all(a >= b - 1e-12 for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[-1] == pytest.approx(0.1)
    assert lrs[10 + 45] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 45 / 89)))


# ---------------------------------------------------------------- CKA
def test_linear_cka_properties():
    from etc_training.recipe.cka import linear_cka

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 12))
    q, _ = np.linalg.qr(rng.normal(size=(12, 12)))
    assert linear_cka(x, x) == pytest.approx(1.0)
    assert linear_cka(x, 3.0 * x @ q + 5.0) == pytest.approx(1.0)  # rotation, scale, shift invariant
    y = rng.normal(size=(40, 12))
    assert linear_cka(x, y) < 0.5
    mixed = x + 0.5 * rng.normal(size=x.shape)
    assert linear_cka(x, y) < linear_cka(x, mixed) < 1.0
    wide = rng.normal(size=(10, 300))  # Gram path (n < d) agrees with the feature path
    w2 = wide @ rng.normal(size=(300, 300)) * 0.1
    xc, yc = wide - wide.mean(0), w2 - w2.mean(0)
    direct = np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    assert linear_cka(wide, w2) == pytest.approx(direct, rel=1e-9)
    with pytest.raises(RecipeError):
        linear_cka(x, x[:5])
