"""VLAPolicy with the tiny PaliGemma-architecture preset, built offline: forward/backward, loss masking,
prefix-LM attention, greedy decoding with a KV cache, save/load, local checkpoints, pluggable heads."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from etc_ros.core.action_tokenizer import synthetic_smooth_chunks
from etc_ros.core.errors import ModelError
from etc_ros.core.processor import IGNORE_INDEX
from etc_training.models.heads.base import BackboneOutputs, lm_loss
from etc_training.models.heads.factory import ACTION_HEADS, register_action_head
from etc_training.models.heads.token import greedy_decode
from etc_training.models.presets import get_preset
from etc_training.models.vla import VLAPolicy

# One thread: with other processes on the 2 cores, two torch threads spin against each other (10x slower).
torch.set_num_threads(1)
SCALE = np.array([0.05] * 3 + [0.25] * 3 + [0.5])


def _data(n=300, seed=0):
    rng = np.random.default_rng(seed)
    raw = synthetic_smooth_chunks(n, seed=seed) * SCALE + np.array([0.0] * 6 + [0.5])
    states = rng.normal(0, 0.6, (n, 7))
    return raw, states


def _img(seed):
    return np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def data():
    return _data()


@pytest.fixture(scope="module")
def policy(data):
    raw, states = data
    return VLAPolicy.build("tiny", action_chunks=raw, states=states, seed=0)


@pytest.fixture(scope="module")
def batch(policy, data):
    raw, states = data
    P = policy.processor
    instr = ["put the red cube in the bowl", "open the drawer", "wipe the table", "push the can to the left"]
    exs = [P.build_action_example(_img(i), states[i], instr[i % 4], raw[i]) for i in range(8)]
    return P.collate(exs)


def test_tiny_preset_shape(policy):
    cfg = policy.backbone.config
    assert type(policy.backbone).__name__ == "PaliGemmaForConditionalGeneration"
    assert cfg.text_config.num_image_tokens == 49 and cfg.vision_config.image_size == 224
    assert cfg.text_config.vocab_size == 2048 + 1024
    assert 0.5e6 < policy.num_parameters() < 5e6
    assert policy.processor.config.action_token_offset == 2048


def test_forward_backward_trains_the_whole_model(policy, batch):
    policy.train()
    policy.zero_grad()
    out = policy(batch)
    assert set(out) >= {"loss", "action_loss", "action_accuracy", "action_tokens"}
    assert torch.isfinite(out["loss"]) and out["loss"].item() > 0
    out["loss"].backward()
    vis = policy.backbone.model.vision_tower.embeddings.patch_embedding.weight.grad
    assert vis is not None and vis.abs().sum() > 0  # vision tower not frozen (recipe)
    assert policy.backbone.model.language_model.embed_tokens.weight.grad.abs().sum() > 0
    policy.zero_grad()


def test_loss_is_cross_entropy_on_target_tokens_only(policy, batch):
    policy.eval()
    b = policy.to_torch(batch)
    with torch.no_grad():
        loss = policy(batch)["loss"]
        out = policy.backbone(input_ids=b["input_ids"], pixel_values=b["pixel_values"],
                              attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"])
    logits, labels = out.logits[:, :-1], b["labels"][:, 1:]
    sel = labels != IGNORE_INDEX
    ref = F.cross_entropy(logits[sel].float(), labels[sel])
    assert torch.allclose(loss, ref, atol=1e-5)
    # the number of supervised tokens is exactly the target length of each example
    n_target = int((b["token_type_ids"] * b["attention_mask"]).sum())
    assert int(sel.sum()) == n_target
    # supervising the prompt as well would change the loss: the masking is what the test measures
    lab2 = b["input_ids"].masked_fill(b["attention_mask"] == 0, IGNORE_INDEX)
    with torch.no_grad():
        full, _, n_full = lm_loss(policy.run_backbone(batch), lab2)
    assert n_full > n_target and not torch.allclose(full, loss)


def test_prefix_lm_attention(policy, batch):
    """Target tokens see only the past (no label leak); the prefix is bidirectional."""
    policy.eval()
    b = policy.to_torch(batch)
    tt = b["token_type_ids"][0]
    first_tgt = int(torch.nonzero(tt == 1)[0])
    with torch.no_grad():
        h0 = policy.run_backbone(b).hidden_states
        late = dict(b)
        late["input_ids"] = b["input_ids"].clone()
        late["input_ids"][0, first_tgt + 5] = 7
        h1 = policy.run_backbone(late).hidden_states
        early = dict(b)
        early["input_ids"] = b["input_ids"].clone()
        early["input_ids"][0, first_tgt - 2] = 7  # a prompt token
        h2 = policy.run_backbone(early).hidden_states
    assert torch.equal(h0[0, : first_tgt + 5], h1[0, : first_tgt + 5])
    assert not torch.allclose(h0[0, first_tgt + 5], h1[0, first_tgt + 5])
    assert not torch.allclose(h0[0, 60], h2[0, 60])  # an earlier prefix token sees a later one
    assert torch.equal(h0[1:], h1[1:])


def test_step_time_batch8_under_a_second(policy, batch):
    policy.train()
    opt = torch.optim.SGD(policy.parameters(), lr=0.0)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        policy(batch)["loss"].backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    assert min(times[1:]) < 1.0, times  # min: robust to other processes sharing the cores


def test_kv_cache_decoding_matches_recompute(policy, data):
    _, states = data
    P = policy.processor
    policy.eval()
    exs = [P.build_inference_prompt(_img(30 + i), states[30 + i], s)
           for i, s in enumerate(["put the red cube in the bowl", "wipe the table with the towel and put it away"])]
    prefix = policy.to_torch(P.collate(exs, padding_side="left"))
    allowed = torch.as_tensor(P.action_ids)
    a = greedy_decode(policy.backbone, prefix, [P.stop_id], 12, allowed_ids=allowed, use_cache=True)
    b = greedy_decode(policy.backbone, prefix, [P.stop_id], 12, allowed_ids=allowed, use_cache=False)
    assert a.shape == (2, 12) and torch.equal(a, b)
    c = greedy_decode(policy.backbone, prefix, [P.eos_id], 12, use_cache=True)  # unrestricted too
    assert torch.equal(c, greedy_decode(policy.backbone, prefix, [P.eos_id], 12, use_cache=False))


def test_predict_chunks_batched_equals_single(policy, data):
    raw, states = data
    obs = [{"images": _img(20 + i), "state": states[20 + i], "instruction": s}
           for i, s in enumerate(["put the red cube in the bowl", "open the drawer",
                                  "wipe the table with the towel and put it in the sink"])]
    head = policy.action_head
    head.max_new_tokens = 16  # an untrained model rarely stops by itself: keep the test short
    try:
        c_cache, v_cache = policy.predict_chunks(obs)
        assert c_cache.shape == (3, 10, 7) and np.all(np.isfinite(c_cache))
        for i, o in enumerate(obs):  # left-padded batch == one at a time
            c, v = policy.predict_chunk(o["images"], o["state"], o["instruction"], return_valid=True)
            assert np.array_equal(c, c_cache[i]) and v == v_cache[i]
    finally:
        head.max_new_tokens = 0
    st = policy.processor.norm_stats["action"]
    lo, hi = (st.min, st.max) if st.mode == "minmax" else (st.q01, st.q99)  # the token range of the action stats
    assert st.mode == "minmax"  # the default: actions are never clipped to quantiles
    assert np.all(c_cache >= lo - 1e-9) and np.all(c_cache <= hi + 1e-9)


def test_decoding_is_restricted_to_action_tokens(policy, data):
    _, states = data
    P = policy.processor
    prefix = policy.to_torch(P.collate([P.build_inference_prompt(_img(3), states[3], "open the drawer")], "left"))
    allowed = torch.as_tensor(P.action_ids)
    gen = greedy_decode(policy.backbone, prefix, [P.stop_id], 30, allowed_ids=allowed)[0].tolist()
    lo, hi = P.config.action_token_offset, P.config.action_token_offset + P.action_tokenizer.vocab_size
    assert gen and all(lo <= t < hi or t == P.stop_id for t in gen)
    free = greedy_decode(policy.backbone, prefix, [P.stop_id], 30)[0].tolist()
    assert any(not (lo <= t < hi) for t in free)  # an untrained model does not pick them by itself


def test_trained_policy_reproduces_its_training_chunk(data):
    """End to end: overfit one example, then greedy decoding returns its chunk within quantization error."""
    raw, states = data
    pol = VLAPolicy.build("tiny", action_chunks=raw, states=states, seed=2, action_tokenizer=None)
    P = pol.processor
    img = _img(99)
    ex = P.build_action_example(img, states[0], "put the cube in the bowl", raw[0])
    b = P.collate([ex])
    opt = torch.optim.AdamW(pol.parameters(), lr=5e-3)
    pol.train()
    losses = []
    for _ in range(120):
        out = pol(b)
        out["loss"].backward()
        opt.step()
        opt.zero_grad()
        losses.append(out["loss"].item())
        if out["action_accuracy"].item() == 1.0 and out["loss"].item() < 0.05:
            break
    assert losses[-1] < 0.05 * losses[0]
    chunk, ok = pol.predict_chunk(img, states[0], "put the cube in the bowl", return_valid=True)
    st = P.norm_stats["action"]
    ref = st.unnormalize(P.action_tokenizer.decode(P.action_tokenizer.encode(ex["actions"])))
    assert ok and np.allclose(chunk, ref, atol=1e-6)


def test_etc_batch_and_answer_generation(policy):
    P = policy.processor
    exs = [P.build_etc_example("Where is the red cube?", "[512, 300]", _img(1)),
           P.build_etc_example("List the objects.", "cube, bowl", _img(2))]
    out = policy(P.collate(exs))
    assert set(out) >= {"loss", "etc_loss", "etc_accuracy"} and torch.isfinite(out["loss"])
    assert int(out["etc_tokens"]) == sum(int((e["labels"] != IGNORE_INDEX).sum()) for e in exs)
    ans = policy.generate_answer(_img(1), "Where is the red cube?", max_new_tokens=5)
    assert isinstance(ans, str)


def test_save_load_identical_outputs(policy, batch, data, tmp_path):
    _, states = data
    policy.eval()
    d = policy.save(tmp_path / "ckpt")
    names = {p.name for p in d.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "processor.json", "action_tokenizer.json",
            "norm_stats.json", "vla.json"} <= names
    back = VLAPolicy.load(d)
    back.eval()
    with torch.no_grad():
        assert torch.equal(policy(batch)["loss"], back(batch)["loss"])
    policy.action_head.max_new_tokens = back.action_head.max_new_tokens = 16  # keep the untrained decode short
    try:
        a = policy.predict_chunk(_img(5), states[5], "open the drawer")
        b = back.predict_chunk(_img(5), states[5], "open the drawer")
    finally:
        policy.action_head.max_new_tokens = 0
    assert np.array_equal(a, b)
    assert json.loads((d / "vla.json").read_text())["preset"]["name"] == "tiny"
    policy.save(d)  # overwrite in place
    assert not any(p.name.startswith(".ckpt") or ".old-" in p.name for p in tmp_path.iterdir())


def test_local_paligemma_checkpoint_loads_by_path(policy, batch, tmp_path):
    """Any PaliGemma checkpoint directory (config.json + safetensors + tokenizer.json) loads offline."""
    ck = tmp_path / "paligemma-local"
    policy.backbone.save_pretrained(str(ck))
    (ck / "tokenizer.json").write_text(policy.processor.tokenizer.to_str())
    raw, states = _data(200, seed=4)
    pol = VLAPolicy.build("tiny", backbone_path=ck, action_chunks=raw, states=states,
                          norm_stats=policy.processor.norm_stats, action_tokenizer=policy.processor.action_tokenizer)
    for (n1, p1), (n2, p2) in zip(policy.backbone.state_dict().items(), pol.backbone.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    pol.eval()
    policy.eval()
    with torch.no_grad():
        assert torch.equal(pol(batch)["loss"], policy(batch)["loss"])


def test_checkpoint_tokenizer_maps_actions_into_top_vocab(tmp_path):
    """A tokenizer without reserved action tokens (like PaliGemma's): the action block takes the top
    base-vocabulary ids below `action_skip_top`."""
    from etc_training.models.text_tokenizer import build_text_tokenizer

    tok = build_text_tokenizer(1024, 0)
    preset = get_preset("tiny", action_tokenizer="bin", n_action_tokens=256, action_skip_top=16)
    cfg = preset.backbone_config(vocab_size=tok.get_vocab_size(), image_token_id=tok.token_to_id("<image>"))
    from transformers import PaliGemmaForConditionalGeneration

    torch.manual_seed(0)
    ck = tmp_path / "ck"
    PaliGemmaForConditionalGeneration(cfg).save_pretrained(str(ck))
    tok.save(str(ck / "tokenizer.json"))
    pol = VLAPolicy.build(preset, backbone_path=ck)
    base = tok.get_vocab_size(with_added_tokens=False)
    assert pol.processor.config.action_token_offset == base - 16 - 256
    assert pol.processor.action_ids.tolist() == list(range(base - 272, base - 16))
    raw, states = _data(8, seed=5)
    P = pol.processor
    out = pol(P.collate([P.build_action_example(_img(i), states[i], "go", raw[i]) for i in range(2)]))
    assert torch.isfinite(out["loss"])
    assert pol.predict_chunk(_img(0), states[0], "go").shape == (10, 7)


def test_build_errors(data, tmp_path):
    raw, _ = data
    with pytest.raises(ModelError, match="backbone_path"):
        VLAPolicy.build("paligemma-3b", action_chunks=raw)
    with pytest.raises(ModelError, match="unknown model preset"):
        VLAPolicy.build("huge")
    with pytest.raises(ModelError, match="fitted"):
        VLAPolicy.build("tiny")
    with pytest.raises(ModelError, match="shape"):
        VLAPolicy.build("tiny", action_chunks=raw[:, :5])
    with pytest.raises(ModelError, match="no config.json"):
        VLAPolicy.build("tiny", backbone_path=tmp_path, action_chunks=raw)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ModelError, match="PaliGemma"):
        VLAPolicy.build("tiny", backbone_path=tmp_path, action_chunks=raw)
    with pytest.raises(ModelError, match="not a VLA checkpoint"):
        VLAPolicy.load(tmp_path)
    with pytest.raises(ModelError, match="unknown action head"):
        VLAPolicy.build("tiny", action_chunks=raw, head="nope")


class _MeanPoolHead(torch.nn.Module):
    """A stand-in continuous head (regression from mean-pooled prefix features) to exercise the plug-in path."""

    name = "meanpool"
    action_format = "continuous"

    def __init__(self, hidden_size: int, horizon: int = 10, action_dim: int = 7):
        super().__init__()
        self.horizon, self.action_dim = horizon, action_dim
        self.proj = torch.nn.Linear(hidden_size, horizon * action_dim)

    def config_dict(self):
        return {"horizon": self.horizon, "action_dim": self.action_dim}

    def _features(self, out: BackboneOutputs):
        m = out.attention_mask.unsqueeze(-1).to(out.hidden_states.dtype)
        return (out.hidden_states * m).sum(1) / m.sum(1)

    def loss(self, model_outputs, batch):
        pred = self.proj(self._features(model_outputs)).view(-1, self.horizon, self.action_dim)
        return F.mse_loss(pred, batch["actions"])

    def predict(self, policy, prefix, **kw):
        out = policy.run_backbone(prefix)
        pred = torch.tanh(self.proj(self._features(out))).view(-1, self.horizon, self.action_dim)
        return pred.float().cpu().numpy(), np.ones(pred.shape[0], dtype=bool)


def test_pluggable_continuous_head_trains_saves_and_loads(data, tmp_path):
    raw, states = data
    register_action_head("meanpool", lambda processor, hidden_size, **cfg: _MeanPoolHead(hidden_size, **cfg))
    try:
        pol = VLAPolicy.build("tiny", action_chunks=raw, states=states, head="meanpool")
        P = pol.processor
        assert P.config.action_format == "continuous"
        ex = P.build_action_example(_img(0), states[0], "go", raw[0])
        assert np.all(ex["labels"] == IGNORE_INDEX) and ex["actions"].shape == (10, 7)
        assert np.array_equal(ex["input_ids"], P.build_inference_prompt(_img(0), states[0], "go")["input_ids"])
        out = pol(P.collate([ex]))
        out["loss"].backward()
        assert pol.action_head.proj.weight.grad is not None
        assert any(p is pol.action_head.proj.weight for p in pol.parameters())
        d = pol.save(tmp_path / "cont")
        assert (d / "action_head.safetensors").is_file()
        back = VLAPolicy.load(d)
        assert torch.equal(back.action_head.proj.weight, pol.action_head.proj.weight)
        a = pol.predict_chunk(_img(1), states[1], "go")
        assert np.array_equal(a, back.predict_chunk(_img(1), states[1], "go"))
    finally:
        ACTION_HEADS.pop("meanpool", None)


def test_binning_decoding_is_length_constrained_so_every_chunk_is_valid(data):
    """A fixed-length tokenizer decodes exactly horizon x dim action tokens then the stop token, even from an
    untrained model (the rule etc_ros.core.action_tokenizer.decode_phase, shared with the robot runtime)."""
    from etc_ros.core.action_tokenizer import BinningActionTokenizer, decode_phase

    raw, states = data
    tok = BinningActionTokenizer(horizon=raw.shape[1], action_dim=raw.shape[2])
    pol = VLAPolicy.build("tiny", action_chunks=raw, states=states, seed=1, action_tokenizer=tok)
    P = pol.processor
    prefix = pol.to_torch(P.collate([P.build_inference_prompt(_img(2), states[2], "open the drawer")], "left"))
    n = tok.fixed_length
    gen = greedy_decode(pol.backbone, prefix, [P.stop_id], n + 5, allowed_ids=torch.as_tensor(P.action_ids),
                        fixed_length=n)[0].tolist()
    assert len(gen) == n + 1 and gen[-1] == P.stop_id and P.stop_id not in gen[:-1]
    chunk, valid = pol.predict_chunk(_img(2), states[2], "open the drawer", return_valid=True)
    assert valid and chunk.shape == raw.shape[1:] and np.all(np.isfinite(chunk))
    assert [decode_phase(k, 3) for k in range(5)] == ["actions"] * 3 + ["stop", "stop"]
    assert decode_phase(0, None) == "any"
