"""VLAPolicy -> ONNX graphs (torch.onnx.export with the dynamo exporter + onnxscript).

A full HF PaliGemma forward does not export as-is, so the policy is cut into graphs that do (one role each,
names fixed: the runtime and the manifest refer to them):

  vision   pixel_values (N, 3, S, S) f32           -> image_embeds (N, T, E) f32       SigLIP tower + projector
  embed    input_ids (B, L) i64                     -> embeds (B, L, E) f32             scaled token embedding
  prefill  inputs_embeds (B, L, E) f32,             -> logits (B, V) f32 (last position), hidden_states (B, L, E)
           attention_mask (B, 1, L, L) f32 additive,   f32, present.{i}.key/value (B, kv, L, d) for each layer
           position_ids (B, L) i64
  decode   inputs_embeds (B, 1, E), attention_mask   -> logits (B, V), present.{i}.key/value (B, kv, P+1, d)
           (B, 1, 1, P+1), position_ids (B, 1),
           past.{i}.key/value (B, kv, P, d)
  head     hidden_states (B, L, E), condition_mask   -> actions (B, H, D) normalized     continuous heads only
           (B, L) f32, noise (B, H, D) f32              (the whole sampler, loops unrolled: one pass)

The language model graphs take a ready 4D additive mask (built by etc_ros.policy.runtime.prefill_mask / decode_mask):
the prefix-LM rule (bidirectional prefix, causal target, padding) lives in one numpy function on the robot and
is checked against transformers' own mask by the parity tests. Attention is exported in its "eager" form
(matmul + softmax in fp32), set only for the export and restored afterwards.

precision="float16" exports a half copy of the model for GPUs (TensorRT strongly-typed networks take their
precision from the ONNX types): LayerNorm (SigLIP) is computed in fp32 inside the graph, Gemma's RMSNorm and the
attention softmax already upcast to fp32 in transformers, the graph inputs/outputs other than the KV cache stay
fp32 (casts at the boundary).
"""
from __future__ import annotations

import contextlib
import copy
import time
import types
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from etc_ros.core.errors import BundleError

GRAPH_FILES = {"vision": "vision.onnx", "embed": "embed.onnx", "prefill": "prefill.onnx", "decode": "decode.onnx",
               "head": "head.onnx"}
_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def kv_names(n_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]


# ------------------------------------------------------------------------------------------------ wrappers
class VisionGraph(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, dtype: torch.dtype):
        super().__init__()
        self.backbone, self.dtype = backbone, dtype

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.backbone.model.get_image_features(pixel_values.to(self.dtype))
        return out.pooler_output.float()


class EmbedGraph(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.embed = backbone.model.language_model.embed_tokens

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids).float()


class PrefillGraph(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, logits_fn: Callable, dtype: torch.dtype):
        super().__init__()
        self.backbone, self.logits_fn, self.dtype = backbone, logits_fn, dtype

    def forward(self, inputs_embeds, attention_mask, position_ids):
        out = self.backbone.model.language_model(
            inputs_embeds=inputs_embeds.to(self.dtype), attention_mask=attention_mask.to(self.dtype),
            position_ids=position_ids, use_cache=True)
        h = out.last_hidden_state
        logits = self.logits_fn(h[:, -1]).float()
        kv = []
        for layer in out.past_key_values.layers:
            kv += [layer.keys, layer.values]
        return (logits, h.float(), *kv)


class DecodeGraph(torch.nn.Module):
    def __init__(self, backbone: torch.nn.Module, logits_fn: Callable, dtype: torch.dtype, n_layers: int):
        super().__init__()
        self.backbone, self.logits_fn, self.dtype, self.n_layers = backbone, logits_fn, dtype, n_layers

    def forward(self, inputs_embeds, attention_mask, position_ids, past):
        from transformers import DynamicCache

        cache = DynamicCache(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.n_layers)])
        out = self.backbone.model.language_model(
            inputs_embeds=inputs_embeds.to(self.dtype), attention_mask=attention_mask.to(self.dtype),
            position_ids=position_ids, past_key_values=cache, use_cache=True)
        logits = self.logits_fn(out.last_hidden_state[:, -1]).float()
        kv = []
        for layer in out.past_key_values.layers:
            kv += [layer.keys, layer.values]
        return (logits, *kv)


class ContinuousHeadGraph(torch.nn.Module):
    """The continuous-head slot: any head with condition(hidden, mask) and sample(cond, noise) (the diffusion
    head's DDIM loop unrolls; an SDM one-step generator is a single call)."""

    def __init__(self, head: Any):
        super().__init__()
        self.head = head

    def forward(self, hidden_states, condition_mask, noise, state=None, image_mask=None):
        if state is None and image_mask is None:
            cond = self.head.condition(hidden_states, condition_mask)
        else:  # state-embedding / spatial-attention heads: the normalized state / image-token mask are inputs
            cond = self.head.condition(hidden_states, condition_mask, state, image_mask)
        return self.head.sample(cond, noise).float()


def _fp32_layer_norm(self, x):
    return F.layer_norm(x.float(), self.normalized_shape, None if self.weight is None else self.weight.float(),
                        None if self.bias is None else self.bias.float(), self.eps).to(x.dtype)


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module):
    """Export the attention as matmul + softmax (portable across ORT / TensorRT), restore the setting after."""
    cfgs = [c for c in (getattr(model, "config", None),) if c is not None]
    for c in list(cfgs):
        for sub in ("text_config", "vision_config"):
            s = getattr(c, sub, None)
            if s is not None:
                cfgs.append(s)
    saved = [getattr(c, "_attn_implementation", None) for c in cfgs]
    try:
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        for c in cfgs:
            c._attn_implementation = "eager"
        yield
    finally:
        for c, v in zip(cfgs, saved):
            if v is not None:
                c._attn_implementation = v
        if hasattr(model, "set_attn_implementation") and saved and saved[0] is not None:
            with contextlib.suppress(Exception):
                model.set_attn_implementation(saved[0])


def check_exportable(policy: Any) -> str:
    """'tokens' or 'continuous'; BundleError for what this exporter does not handle."""
    bb = policy.backbone
    tc = bb.config.get_text_config()
    if type(bb).__name__ != "PaliGemmaForConditionalGeneration":
        raise BundleError(f"export supports PaliGemma backbones, got {type(bb).__name__}")
    if getattr(tc, "model_type", "gemma") != "gemma":
        raise BundleError(f"export supports the Gemma text decoder (PaliGemma 1); this checkpoint has "
                          f"{tc.model_type!r} (sliding-window masks are not exported)")
    return head_type_of(policy)


def head_type_of(policy: Any) -> str:
    head = policy.action_head
    name = getattr(head, "name", "")
    if name == "tokens" or (name == "both" and getattr(head, "predict_with", "diffusion") == "tokens"):
        return "tokens"
    core = head
    if name == "both":
        core = getattr(head, "diffusion", None) or head
    if callable(getattr(core, "condition", None)) and callable(getattr(core, "sample", None)):
        return "continuous"
    raise BundleError(f"action head {name!r} cannot be exported: a token head, or a continuous head with "
                      "condition(hidden, mask) and sample(cond, noise) methods, is needed")


def continuous_core(policy: Any) -> Any:
    head = policy.action_head
    if getattr(head, "name", "") == "both":
        return getattr(head, "diffusion", head)
    return head


# ------------------------------------------------------------------------------------------------ export
def _export(module: torch.nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            dynamic_shapes: Any, opset: int | None, external: bool) -> None:
    kw = dict(dynamo=True, input_names=input_names, output_names=output_names, dynamic_shapes=dynamic_shapes,
              external_data=external, verbose=False)
    if opset:
        kw["opset_version"] = int(opset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, args, str(path), **kw)
        except Exception as e:  # noqa: BLE001 - the exporter raises many kinds
            msg = str(e).strip().splitlines()
            raise BundleError(f"ONNX export of {path.name} failed: {type(e).__name__}: "
                              f"{msg[0] if msg else ''}") from e


def _example_batch(policy: Any, batch_size: int = 2) -> dict:
    """A left-padded example batch (two different prompt lengths) in the policy's own format."""
    rng = np.random.default_rng(0)
    P = policy.processor
    s = P.config.image_size
    st = P.norm_stats.get("state")
    dim = st.dim if st is not None else 7
    exs = []
    for i, instr in enumerate(["pick up the red cube", "put the small green block in the blue bowl"][:batch_size]):
        imgs = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for _ in range(P.config.n_views)]
        exs.append(P.build_inference_prompt(imgs if len(imgs) > 1 else imgs[0], rng.normal(0, 0.3, dim), instr))
    return P.collate(exs, padding_side="left")


def export_graphs(policy: Any, out_dir: str | Path, precision: str = "float32", opset: int | None = None,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Write the policy's graphs into out_dir; returns {role: file name} and the export timings."""
    from etc_ros.policy.runtime import decode_mask, positions, prefill_mask

    if precision not in _TORCH_DTYPES:
        raise BundleError(f"precision must be one of {sorted(_TORCH_DTYPES)}, got {precision!r}")
    head_type = check_exportable(policy)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dtype = _TORCH_DTYPES[precision]
    src_bb = policy.backbone
    was_training = policy.training
    policy.eval()
    if dtype != policy.dtype:
        bb = copy.deepcopy(src_bb).to(dtype)
        for m in bb.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.forward = types.MethodType(_fp32_layer_norm, m)
    else:
        bb = src_bb
    bb.eval()
    cap = getattr(bb.config.get_text_config(), "final_logit_softcapping", None)

    def logits_fn(h):  # the same rule as VLAPolicy.logits
        lg = bb.lm_head(h)
        if cap is not None:
            lg = torch.tanh(lg / cap) * cap
        return lg

    tc = bb.config.get_text_config()
    n_layers = int(tc.num_hidden_layers)
    big = sum(p.numel() * p.element_size() for p in bb.parameters()) > (1 << 30)  # > 1 GiB: external weights
    batch = _example_batch(policy)
    am, tt = batch["attention_mask"], batch["token_type_ids"]
    pix = torch.from_numpy(batch["pixel_values"].reshape(-1, *batch["pixel_values"].shape[2:]))
    ids = torch.from_numpy(batch["input_ids"])
    max_seq = int(getattr(tc, "max_position_embeddings", 4096) or 4096)
    Dim = torch.export.Dim
    files: dict[str, str] = {}
    timings: dict[str, float] = {}
    with torch.no_grad(), eager_attention(bb):
        t = time.perf_counter()
        if progress:
            progress("vision")
        _export(VisionGraph(bb, dtype), (pix,), out / GRAPH_FILES["vision"], ["pixel_values"], ["image_embeds"],
                {"pixel_values": {0: Dim("n", min=1, max=256)}}, opset, big)
        files["vision"] = GRAPH_FILES["vision"]
        timings["vision_s"] = time.perf_counter() - t

        t = time.perf_counter()
        if progress:
            progress("embed")
        _export(EmbedGraph(bb), (ids,), out / GRAPH_FILES["embed"], ["input_ids"], ["embeds"],
                {"input_ids": {0: Dim("b", min=1, max=256), 1: Dim("l", min=1, max=max_seq)}}, opset, big)
        files["embed"] = GRAPH_FILES["embed"]
        timings["embed_s"] = time.perf_counter() - t

        # example LM inputs computed with the fp32 policy (shapes are what matters)
        emb = EmbedGraph(bb)(ids).float()
        img = VisionGraph(bb, dtype)(pix).float()
        is_img = ids == policy.processor.image_id
        emb[is_img] = img.reshape(-1, emb.shape[-1])
        mask = torch.from_numpy(prefill_mask(am, tt))
        pos = torch.from_numpy(positions(am))
        B, S, P = Dim("batch", min=1, max=256), Dim("seq", min=2, max=max_seq), Dim("past", min=2, max=max_seq)
        t = time.perf_counter()
        if progress:
            progress("prefill")
        pre = PrefillGraph(bb, logits_fn, dtype)
        _export(pre, (emb, mask, pos), out / GRAPH_FILES["prefill"],
                ["inputs_embeds", "attention_mask", "position_ids"],
                ["logits", "hidden_states"] + kv_names(n_layers, "present"),
                {"inputs_embeds": {0: B, 1: S}, "attention_mask": {0: B, 2: S, 3: S}, "position_ids": {0: B, 1: S}},
                opset, big)
        files["prefill"] = GRAPH_FILES["prefill"]
        timings["prefill_s"] = time.perf_counter() - t
        pre_out = pre(emb, mask, pos)
        if head_type == "tokens":
            past = list(pre_out[2:])
            am1 = np.concatenate([am, np.ones((am.shape[0], 1), dtype=am.dtype)], axis=1)
            emb1 = emb[:, -1:].contiguous()
            mask1 = torch.from_numpy(decode_mask(am1))
            pos1 = torch.from_numpy(positions(am)[:, -1:] + 1)
            t = time.perf_counter()
            if progress:
                progress("decode")
            _export(DecodeGraph(bb, logits_fn, dtype, n_layers), (emb1, mask1, pos1, past), out / GRAPH_FILES["decode"],
                    ["inputs_embeds", "attention_mask", "position_ids"] + kv_names(n_layers, "past"),
                    ["logits"] + kv_names(n_layers, "present"),
                    ({0: B}, {0: B, 3: P + 1}, {0: B}, [{0: B, 2: P} for _ in past]), opset, big)
            files["decode"] = GRAPH_FILES["decode"]
            timings["decode_s"] = time.perf_counter() - t
        else:
            core = continuous_core(policy)
            if dtype != policy.dtype:
                core = copy.deepcopy(core).to(dtype)
            hidden = pre_out[1].to(dtype)
            cond = torch.from_numpy((am * (tt == 0)).astype(np.float32)).to(dtype)
            H, D = int(core.horizon), int(core.action_dim)
            noise = torch.randn(hidden.shape[0], H, D, generator=torch.Generator().manual_seed(0)).to(dtype)
            t = time.perf_counter()
            if progress:
                progress("head")
            args, names = (hidden, cond, noise), ["hidden_states", "condition_mask", "noise"]
            axes = {"hidden_states": {0: B, 1: S}, "condition_mask": {0: B, 1: S}, "noise": {0: B}}
            sd = int(getattr(core, "state_dim", 0) or 0)
            if sd:
                st = batch.get("state") if hasattr(batch, "get") else None
                st = torch.zeros(hidden.shape[0], sd) if st is None else torch.as_tensor(np.asarray(st))
                args, names = args + (st.to(dtype),), names + ["state"]
                axes["state"] = {0: B}
            if int(getattr(core, "spatial_heads", 0) or 0):
                if not sd:
                    args, names = args + (None,), names + ["state"]
                im = torch.from_numpy((batch["input_ids"] == policy.processor.image_id).astype(np.float32))
                args, names = args + (im.to(dtype),), names + ["image_mask"]
                axes["image_mask"] = {0: B, 1: S}
            names = [n for n, a in zip(names, args) if a is not None]
            axes = {k: v for k, v in axes.items() if k in names}
            _export(ContinuousHeadGraph(core).eval(), args, out / GRAPH_FILES["head"], names, ["actions"], axes,
                    opset, big)
            files["head"] = GRAPH_FILES["head"]
            timings["head_s"] = time.perf_counter() - t
    if dtype != policy.dtype:
        del bb
    policy.train(was_training)
    return {"graphs": files, "timings_s": {k: round(v, 2) for k, v in timings.items()}, "head_type": head_type,
            "n_layers": n_layers}


def graph_io(path: str | Path) -> dict:
    """Names, shapes (ints or symbolic names) and element types of a graph's inputs and outputs."""
    import onnx

    m = onnx.load(str(path), load_external_data=False)

    def desc(vi):
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        return {"shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name}

    init = {i.name for i in m.graph.initializer}
    return {"inputs": {i.name: desc(i) for i in m.graph.input if i.name not in init},
            "outputs": {o.name: desc(o) for o in m.graph.output},
            "opset": {(o.domain or "ai.onnx"): int(o.version) for o in m.opset_import}}
