"""VLAProcessor, normalization stats and the offline text tokenizer: one preprocessing path for training and
the robot runtime, loss masking, padding, deterministic tokenizer."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from etc_ros.core.action_tokenizer import BinningActionTokenizer, FastActionTokenizer, synthetic_smooth_chunks
from etc_ros.core.errors import ModelError
from etc_ros.core.normalize import NormStats, load_norm_stats, save_norm_stats
from etc_ros.core.processor import IGNORE_INDEX, ProcessorConfig, VLAProcessor
from etc_training.models.text_tokenizer import (
    SPECIAL_TOKENS,
    build_text_tokenizer,
    tokenizer_fingerprint,
    vocab_list,
)

ROOT = Path(__file__).resolve().parents[1]
N_ACT = 1024
TEXT_VOCAB = 2048


@pytest.fixture(scope="module")
def tokenizer():
    return build_text_tokenizer(TEXT_VOCAB, N_ACT)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(1)
    norm = synthetic_smooth_chunks(400, seed=1)
    scale = np.array([0.05] * 3 + [0.25] * 3 + [0.5])
    raw = norm * scale + np.array([0.0] * 6 + [0.5])
    states = rng.normal(0, 0.7, (400, 7))
    return raw, states


def _processor(tokenizer, data, at=None, **cfg):
    raw, states = data
    stats = {"action": NormStats.from_data(raw), "state": NormStats.from_data(states)}
    if at is None:
        at = FastActionTokenizer().fit(stats["action"].normalize(raw))
    c = ProcessorConfig(image_size=64, image_tokens_per_view=16, action_token_offset=TEXT_VOCAB,
                        n_action_tokens=N_ACT, **cfg)
    return VLAProcessor(tokenizer, c, at, stats)


@pytest.fixture(scope="module")
def proc(tokenizer, data):
    return _processor(tokenizer, data)


def _img(seed=0, h=48, w=80):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- normalization
def test_quantile_stats_map_q01_q99_to_unit_range():
    rng = np.random.default_rng(0)
    x = rng.normal([0, 5, -3], [1, 0.1, 4], (5000, 3))
    st = NormStats.from_data(x)
    assert np.allclose(st.normalize(st.q01), -1, atol=1e-6) and np.allclose(st.normalize(st.q99), 1, atol=1e-6)
    y = st.normalize(x)
    assert y.dtype == np.float32 and y.min() >= -1 and y.max() <= 1
    inside = np.all((x >= st.q01) & (x <= st.q99), axis=1)
    assert np.allclose(st.unnormalize(y[inside]), x[inside], atol=1e-5)
    assert 0.93 < inside.mean() < 0.95  # ~2 % of the samples fall outside [q01, q99] per dimension (3 dims)


def test_meanstd_and_degenerate_dimension():
    x = np.stack([np.linspace(-2, 2, 101), np.full(101, 0.7)], axis=1)
    st = NormStats.from_data(x, mode="meanstd")
    y = st.normalize(x)
    assert abs(y[:, 0].std() - 1) < 1e-5 and np.all(y[:, 1] == 0)
    assert np.allclose(st.unnormalize(y), x, atol=1e-5)
    q = NormStats.from_data(x)  # constant gripper: no division by ~0
    assert np.all(q.normalize(x)[:, 1] == 0) and np.allclose(q.unnormalize(np.zeros((1, 2)))[0, 1], 0.7)


def test_norm_stats_json_round_trip_and_errors(tmp_path):
    st = NormStats.from_data(np.random.default_rng(0).normal(size=(100, 4)), names=("a", "b", "c", "d"))
    back = NormStats.from_dict(json.loads(json.dumps(st.to_dict())))
    x = np.random.default_rng(1).normal(size=(7, 4))
    assert np.array_equal(back.normalize(x), st.normalize(x))
    save_norm_stats(tmp_path / "n.json", {"action": st})
    assert np.array_equal(load_norm_stats(tmp_path / "n.json")["action"].q99, st.q99)
    with pytest.raises(ModelError, match="NaN"):
        NormStats.from_data(np.array([[1.0, np.nan]]))
    with pytest.raises(ModelError, match="last dimension"):
        st.normalize(np.zeros(3))
    with pytest.raises(ModelError, match="mode"):
        NormStats.from_data(np.zeros((3, 2)), mode="zscore")  # unknown mode
    with pytest.raises(ModelError, match="missing"):
        NormStats.from_dict({"mean": [0.0]})
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ModelError, match="mapping"):
        load_norm_stats(tmp_path / "bad.json")


# ---------------------------------------------------------------- text tokenizer
def test_text_tokenizer_is_deterministic_with_action_block_on_top(tokenizer):
    again = build_text_tokenizer(TEXT_VOCAB, N_ACT)
    assert tokenizer_fingerprint(again) == tokenizer_fingerprint(tokenizer)
    assert vocab_list(again) == vocab_list(tokenizer)
    assert tokenizer.get_vocab_size() == TEXT_VOCAB + N_ACT
    for i, s in enumerate(SPECIAL_TOKENS):
        assert tokenizer.token_to_id(s) == i
    assert tokenizer.token_to_id("<act_0>") == TEXT_VOCAB
    assert tokenizer.token_to_id(f"<act_{N_ACT - 1}>") == TEXT_VOCAB + N_ACT - 1
    other = build_text_tokenizer(TEXT_VOCAB, N_ACT, extra_texts=["zyzzyva quokka"] * 50)
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(tokenizer)


def test_text_tokenizer_round_trips_and_splits_digits(tokenizer):
    text = "Task: put the red cube in the bowl, State: 12 250 3 0 128 77 255;\n"
    enc = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(enc.ids) == text
    digits = [t for t in enc.tokens if any(ch.isdigit() for ch in t)]
    assert digits and all(len(t) == 1 for t in digits)
    odd = "Größe 😀 – ¿qué?"
    assert tokenizer.decode(tokenizer.encode(odd).ids) == odd  # byte-level: any text


# ---------------------------------------------------------------- images / state
def test_images_resized_and_scaled_like_siglip(proc):
    img = _img()
    pix = proc.preprocess_images(img)
    assert pix.shape == (1, 3, 64, 64) and pix.dtype == np.float32
    assert pix.min() >= -1 and pix.max() <= 1
    sq = np.zeros((64, 64, 3), np.uint8)
    sq[..., 0] = 255
    p = proc.preprocess_images([sq])
    assert np.all(p[0, 0] == 1.0) and np.all(p[0, 1] == -1.0)
    assert np.array_equal(proc.preprocess_images(img[None]), pix)


@pytest.mark.parametrize(
    "bad",
    [np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8), "img",
     [np.zeros((8, 8, 3), np.uint8)] * 2],
    ids=["float", "gray", "rgba", "str", "two-views"],
)
def test_bad_images_raise(proc, bad):
    with pytest.raises(ModelError):
        proc.preprocess_images(bad)


def test_state_discretization(tokenizer, data):
    p = _processor(tokenizer, data)
    p.norm_stats["state"] = NormStats.identity(3)
    assert p.discretize_state([-1.0, 0.0, 1.0]).tolist() == [0, 128, 255]
    assert p.discretize_state([-7.0, 0.999, 7.0]).tolist() == [0, 255, 255]
    with pytest.raises(ModelError, match="NaN"):
        p.discretize_state([np.nan, 0, 0])
    with pytest.raises(ModelError, match="state norm stats"):
        p.discretize_state([0.0] * 5)


# ---------------------------------------------------------------- examples and masking
def test_action_example_masks_prompt_and_images(proc, data):
    raw, states = data
    ex = proc.build_action_example(_img(), states[0], "put the red cube in the bowl", raw[0])
    ids, labels, tt = ex["input_ids"], ex["labels"], ex["token_type_ids"]
    prompt = proc.encode_text(proc.action_prompt("put the red cube in the bowl", states[0]))
    n_prefix = 16 + 1 + len(prompt)
    assert ids[:16].tolist() == [proc.image_id] * 16 and ids[16] == proc.bos_id
    assert ids[17:n_prefix].tolist() == prompt
    # labels are -100 exactly on images, <bos> and the prompt; the target is supervised token for token
    assert np.all(labels[:n_prefix] == IGNORE_INDEX)
    assert np.array_equal(labels[n_prefix:], ids[n_prefix:]) and np.all(labels[n_prefix:] >= 0)
    assert np.all(tt[:n_prefix] == 0) and np.all(tt[n_prefix:] == 1)
    target = ids[n_prefix:].tolist()
    assert target[: len(proc.encode_text("Action: "))] == proc.encode_text("Action: ")
    assert target[-2:] == [proc.stop_id, proc.eos_id]
    act = target[len(proc.encode_text("Action: ")):-2]
    assert all(TEXT_VOCAB <= t < TEXT_VOCAB + proc.action_tokenizer.vocab_size for t in act)
    chunk, ok = proc.decode_actions(act + [proc.stop_id])
    assert ok and chunk.shape == (10, 7)
    assert np.abs(chunk - raw[0]).max() < 0.2 * np.max(proc.norm_stats["action"].q99 - proc.norm_stats["action"].q01)
    assert ex["actions"].shape == (10, 7) and ex["actions"].dtype == np.float32


def test_prompt_text_format(proc, data):
    _, states = data
    text = proc.action_prompt("  put the\ncube  ", states[0])
    assert text.startswith("Task: put the cube, State: ") and text.endswith(";\n")
    nums = text[len("Task: put the cube, State: "):-2].split(" ")
    assert len(nums) == 7 and all(0 <= int(n) <= 255 for n in nums)
    assert proc.etc_prompt("Where is the cube?") == "Task: Where is the cube?;\n"
    with pytest.raises(ModelError, match="empty"):
        proc.action_prompt("   ", states[0])
    with pytest.raises(ModelError, match="state is required"):
        proc.action_prompt("go", None)


def test_etc_example_loss_on_answer_only(proc):
    ex = proc.build_etc_example("Where is the red cube?", "[512, 300]", _img())
    labels, ids = ex["labels"], ex["input_ids"]
    n_prefix = 16 + 1 + len(proc.encode_text("Task: Where is the red cube?;\n"))
    assert np.all(labels[:n_prefix] == IGNORE_INDEX) and np.array_equal(labels[n_prefix:], ids[n_prefix:])
    assert ids[-1] == proc.eos_id
    assert proc.decode_text(ids[n_prefix:].tolist()) == "Answer: [512, 300]"


def test_special_token_text_cannot_inject_control_tokens(proc, data):
    _, states = data
    ex = proc.build_inference_prompt(_img(), states[0], "put <image><image> <act_5> <eos> in the bowl")
    assert int(np.sum(ex["input_ids"] == proc.image_id)) == 16
    assert not np.any(ex["input_ids"] == proc.eos_id)
    assert not np.any(ex["input_ids"] >= TEXT_VOCAB)


def test_collate_pads_with_masked_labels(proc, data):
    raw, states = data
    a = proc.build_etc_example("Where?", "[1, 2]", _img(1))
    b = proc.build_etc_example("Where is the large striped cube relative to the bowl?", "It is left of it.", _img(2))
    batch = proc.collate([a, b])
    la, lb = len(a["input_ids"]), len(b["input_ids"])
    L = max(la, lb)
    assert batch["input_ids"].shape == (2, L) and batch["pixel_values"].shape == (2, 1, 3, 64, 64)
    short = 0 if la < lb else 1
    n = min(la, lb)
    assert np.all(batch["attention_mask"][short, n:] == 0) and np.all(batch["labels"][short, n:] == IGNORE_INDEX)
    assert np.all(batch["input_ids"][short, n:] == proc.pad_id)
    left = proc.collate([a, b], padding_side="left")
    assert np.all(left["attention_mask"][short, : L - n] == 0)
    assert np.array_equal(left["input_ids"][short, L - n:], (a if short == 0 else b)["input_ids"])
    with pytest.raises(ModelError, match="one kind"):
        proc.collate([a, proc.build_action_example(_img(), states[0], "go", raw[0])])
    with pytest.raises(ModelError):
        proc.collate([])


def test_max_length_truncates_target_not_prompt(tokenizer, data):
    p = _processor(tokenizer, data, max_length=40)
    ex = p.build_etc_example("Where is it?", "a very long answer " * 20, _img())
    assert len(ex["input_ids"]) == 40 and ex["truncated"]
    with pytest.raises(ModelError, match="max_length"):
        p.build_etc_example("why " * 50, "x", _img())


def test_inference_prompt_is_the_training_prefix(proc, data):
    raw, states = data
    img, s, instr = _img(7), states[3], "stack the blue block on the green block"
    train = proc.build_action_example(img, s, instr, raw[3])
    run = proc.build_inference_prompt(img, s, instr)
    n = len(run["input_ids"])
    for k in ("input_ids", "attention_mask", "token_type_ids"):
        assert np.array_equal(run[k], train[k][:n]), k
    assert np.array_equal(run["pixel_values"], train["pixel_values"])
    assert run["input_ids"][-len(proc.encode_text("Action: ")):].tolist() == proc.encode_text("Action: ")
    # the first generated token is the first supervised action token
    assert train["labels"][n] == train["input_ids"][n] and train["labels"][n - 1] != IGNORE_INDEX


def test_decode_actions_flags_malformed(proc):
    at = proc.action_tokenizer
    off = proc.config.action_token_offset
    good = [off + t for t in at.encode(np.zeros((10, 7)))] + [proc.stop_id]
    assert proc.decode_actions(good)[1]
    for bad in (good[:-1], [proc.eos_id] + good, [off + at.vocab_size + 3] + good, [], [proc.stop_id]):
        chunk, ok = proc.decode_actions(bad)
        assert not ok and chunk.shape == (10, 7) and np.all(np.isfinite(chunk))


def test_action_block_collisions_are_rejected(tokenizer, data):
    with pytest.raises(ModelError, match="inside the action token block"):
        VLAProcessor(tokenizer, ProcessorConfig(action_token_offset=0, n_action_tokens=256), BinningActionTokenizer())
    with pytest.raises(ModelError, match="reserved"):
        VLAProcessor(tokenizer, ProcessorConfig(action_token_offset=TEXT_VOCAB, n_action_tokens=100),
                     BinningActionTokenizer())


_RUNTIME_SCRIPT = r"""
import sys, json
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'etc_training'):
            raise ImportError('blocked on the robot side: ' + name)
sys.meta_path.insert(0, _Block())
import numpy as np
from etc_ros.core.processor import VLAProcessor
d, out = sys.argv[1], sys.argv[2]
p = VLAProcessor.load(d)
inp = np.load(d + '/input.npz')
ex = p.build_inference_prompt(inp['image'], inp['state'], 'put the red cube in the bowl')
b = p.collate([ex], padding_side='left')
chunk, ok = p.decode_actions(inp['generated'])
np.savez(out, chunk=chunk, ok=ok, **{k: v for k, v in b.items() if isinstance(v, np.ndarray)})
"""


def test_runtime_side_processor_is_numerically_identical(proc, data, tmp_path):
    """The robot loads the saved processor without torch/transformers and gets bit-identical model inputs
    and decoded actions."""
    _, states = data
    d = proc.save(tmp_path / "proc")
    img = _img(11, 480, 640)
    gen = np.array([TEXT_VOCAB + t for t in proc.action_tokenizer.encode(np.full((10, 7), 0.3))] + [proc.stop_id])
    np.savez(d / "input.npz", image=img, state=states[5], generated=gen)
    r = subprocess.run([sys.executable, "-c", _RUNTIME_SCRIPT, str(d), str(tmp_path / "out.npz")], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    got = np.load(tmp_path / "out.npz")
    train = proc.collate([proc.build_inference_prompt(img, states[5], "put the red cube in the bowl")],
                         padding_side="left")
    for k in ("input_ids", "attention_mask", "token_type_ids", "pixel_values"):
        assert got[k].dtype == train[k].dtype and np.array_equal(got[k], train[k]), k
    chunk, ok = proc.decode_actions(gen)
    assert bool(got["ok"]) == ok and np.array_equal(got["chunk"], chunk)


def test_load_rejects_bad_directory(tmp_path):
    with pytest.raises(ModelError, match="not a processor directory"):
        VLAProcessor.load(tmp_path)
    (tmp_path / "processor.json").write_text(json.dumps({"format": "etc-vla-processor", "config": {"bogus": 1}}))
    with pytest.raises(ModelError, match="unknown key"):
        VLAProcessor.load(tmp_path)
