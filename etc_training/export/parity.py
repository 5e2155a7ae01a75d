"""Parity of exported graphs against the PyTorch policy they came from.

For every observation (dataset frames when given, generated frames otherwise):
- reference (PyTorch, the training code path, default attention kernels): image features of the vision tower +
  projector, last hidden states of the prefix (`VLAPolicy.run_backbone`), the greedy action ids
  (`heads.token.greedy_decode`, exactly what TokenActionHead.predict runs) and the logits at every generated
  position (one teacher-forced forward over prefix + generated ids with the prefix-LM mask of transformers);
- exported (ONNX Runtime through etc_ros.policy.runtime.GraphPolicy, the robot code path): the same quantities, the
  decode graph teacher-forced along the reference ids, plus its own free-running greedy ids.
Figures per output: max abs error, relative error (max abs / max |reference|) and cosine similarity; for token
heads the fraction of observations whose decoded ids are identical and the largest difference of the decoded
(normalized) chunks. `check_thresholds` raises BundleError with the figures when a variant is out of bounds.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from etc_ros.core.errors import BundleError

# Per variant: min cosine and max relative error of every output; whether decoded actions must be identical.
DEFAULT_THRESHOLDS: dict[str, dict[str, Any]] = {
    "fp32": {"min_cosine": 0.9999, "max_rel_err": 1e-3, "identical_actions": True},
    "fp16": {"min_cosine": 0.999, "max_rel_err": 0.05, "identical_actions": False},
    "int8-dynamic": {"min_cosine": 0.95, "max_rel_err": None, "identical_actions": False},
    "int8-static": {"min_cosine": 0.95, "max_rel_err": None, "identical_actions": False},
}


def compare(ref: Any, got: Any) -> dict:
    r = np.asarray(ref, dtype=np.float64).reshape(-1)
    g = np.asarray(got, dtype=np.float64).reshape(-1)
    if r.shape != g.shape:
        raise BundleError(f"parity: shapes differ, reference {np.asarray(ref).shape} vs exported "
                          f"{np.asarray(got).shape}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(g))):
        return {"max_abs": float("inf"), "rel": float("inf"), "cosine": float("nan")}
    d = float(np.max(np.abs(r - g))) if r.size else 0.0
    scale = float(np.max(np.abs(r))) if r.size else 0.0
    nr, ng = float(np.linalg.norm(r)), float(np.linalg.norm(g))
    cos = float(np.dot(r, g) / (nr * ng)) if nr > 0 and ng > 0 else (1.0 if nr == ng else 0.0)
    return {"max_abs": d, "rel": d / scale if scale > 0 else d, "cosine": cos}


def _merge(acc: dict, new: dict) -> dict:
    if not acc:
        return dict(new)
    return {"max_abs": max(acc["max_abs"], new["max_abs"]), "rel": max(acc["rel"], new["rel"]),
            "cosine": min(acc["cosine"], new["cosine"]) if not math.isnan(new["cosine"]) else float("nan")}


def torch_reference(policy: Any, batch: Mapping[str, Any], noise: np.ndarray | None = None) -> dict:
    """Reference outputs of the PyTorch policy on one collated (left-padded) batch."""
    import torch

    from etc_training.export.onnx_export import continuous_core, head_type_of
    from etc_training.models.heads.token import greedy_decode

    P = policy.processor
    was = policy.training
    policy.eval()
    out: dict[str, Any] = {}
    try:
        with torch.no_grad():
            prefix = policy.to_torch(batch)
            bb = policy.backbone
            out["image_embeds"] = bb.model.get_image_features(prefix["pixel_values"]).pooler_output.float().numpy()
            hidden = policy.run_backbone(prefix).hidden_states
            out["hidden_states"] = hidden.float().numpy()
            if head_type_of(policy) == "tokens":
                head = policy.action_head
                max_new = int(getattr(head, "max_new_tokens", 0) or (P.action_tokenizer.max_tokens + 1))
                fixed = P.action_tokenizer.fixed_length
                if fixed is not None:
                    max_new = max(max_new, fixed + 1)
                gen = greedy_decode(bb, prefix, stop_ids=[P.stop_id], max_new_tokens=max_new,
                                    allowed_ids=torch.as_tensor(P.action_ids, dtype=torch.long),
                                    use_cache=getattr(head, "use_cache", True), fixed_length=fixed)
                B, L = prefix["input_ids"].shape
                T = gen.shape[1]
                ids = torch.cat([prefix["input_ids"], gen], 1)
                am = torch.cat([prefix["attention_mask"], torch.ones_like(gen)], 1)
                tt = torch.cat([prefix["token_type_ids"], torch.ones_like(gen)], 1)
                pos = am.cumsum(-1).clamp(min=1)
                lg = bb(input_ids=ids, pixel_values=prefix["pixel_values"], attention_mask=am, token_type_ids=tt,
                        position_ids=pos, use_cache=False).logits.float()
                out["step_logits"] = lg[:, L - 1:L - 1 + T].numpy()
                out["ids"] = gen.numpy()
                chunks = [P.decode_actions(row, unnormalize=False) for row in out["ids"]]
                out["actions"] = np.stack([c for c, _ in chunks]).astype(np.float32)
                out["valid"] = np.asarray([ok for _, ok in chunks])
            else:
                from etc_training.models.heads.base import condition_mask

                core = continuous_core(policy)
                mask = condition_mask(prefix["attention_mask"], prefix["token_type_ids"])
                st = (torch.as_tensor(np.asarray(prefix["state"])) if int(getattr(core, "state_dim", 0) or 0)
                      else None)
                im = None
                if int(getattr(core, "spatial_heads", 0) or 0):
                    ids = prefix["input_ids"]
                    ids = ids if isinstance(ids, torch.Tensor) else torch.as_tensor(np.asarray(ids))
                    im = (ids == policy.processor.image_id).to(torch.float32)
                cond = core.condition(hidden, mask, st, im) if (st is not None or im is not None) else \
                    core.condition(hidden, mask)
                x = core.sample(cond, torch.from_numpy(np.asarray(noise, dtype=np.float32)))
                out["actions"] = x.float().numpy()
                out["valid"] = np.all(np.isfinite(out["actions"]), axis=(1, 2))
    finally:
        policy.train(was)
    return out


def graph_outputs(gp: Any, batch: Mapping[str, Any], ref: Mapping[str, Any], noise: np.ndarray | None = None) -> dict:
    """The same quantities from the exported graphs (GraphPolicy)."""
    out: dict[str, Any] = {"image_embeds": gp.image_embeds(batch["pixel_values"])}
    if gp.head_type == "tokens":
        _, rec = gp.generate(batch, force=ref["ids"], record=True)
        out["hidden_states"] = rec["prefill"]["hidden_states"]
        out["step_logits"] = rec["step_logits"]
        ids, _ = gp.generate(batch)
        out["ids"] = ids
        chunks = [gp.processor.decode_actions(row, unnormalize=False) for row in ids]
        out["actions"] = np.stack([c for c, _ in chunks]).astype(np.float32)
        out["valid"] = np.asarray([ok for _, ok in chunks])
    else:
        am = np.asarray(batch["attention_mask"])
        tt = np.asarray(batch["token_type_ids"])
        emb = gp.inputs_embeds(batch)
        out["hidden_states"] = gp.prefill(emb, am, tt)["hidden_states"]
        out["actions"] = gp.continuous(batch, noise=noise)
        out["valid"] = np.all(np.isfinite(out["actions"]), axis=(1, 2))
    return out


def measure(policy: Any, gp: Any, observations: Sequence[Mapping[str, Any]], cameras: Sequence[str],
            seed: int = 0) -> dict:
    """Parity figures of GraphPolicy `gp` against `policy` over observations (one at a time)."""
    P = policy.processor
    figs: dict[str, dict] = {}
    same_ids, n_obs, max_act, valid_ref, valid_got = 0, 0, 0.0, 0, 0
    rng = np.random.default_rng(seed)
    for o in observations:
        views = [np.asarray(o["images"][c]) for c in cameras]
        ex = P.build_inference_prompt(views if len(views) > 1 else views[0], o.get("state"), o["instruction"])
        batch = P.collate([ex], padding_side="left")
        noise = None
        if gp.head_type == "continuous":
            noise = rng.standard_normal((1, int(gp.head["horizon"]), int(gp.head["action_dim"]))).astype(np.float32)
        ref = torch_reference(policy, batch, noise)
        got = graph_outputs(gp, batch, ref, noise)
        am = np.asarray(batch["attention_mask"], dtype=bool)
        figs["image_embeds"] = _merge(figs.get("image_embeds", {}), compare(ref["image_embeds"], got["image_embeds"]))
        figs["hidden_states"] = _merge(figs.get("hidden_states", {}),
                                       compare(ref["hidden_states"][am], np.asarray(got["hidden_states"])[am]))
        if "step_logits" in ref:
            figs["logits"] = _merge(figs.get("logits", {}), compare(ref["step_logits"], got["step_logits"]))
            same_ids += int(ref["ids"].shape == got["ids"].shape and np.array_equal(ref["ids"], got["ids"]))
        figs["actions"] = _merge(figs.get("actions", {}), compare(ref["actions"], got["actions"]))
        max_act = max(max_act, float(np.max(np.abs(ref["actions"] - got["actions"]))))
        valid_ref += int(np.sum(ref["valid"]))
        valid_got += int(np.sum(got["valid"]))
        n_obs += 1
    res: dict[str, Any] = {"observations": n_obs, "outputs": {k: {kk: _round(vv) for kk, vv in v.items()}
                                                              for k, v in figs.items()}}
    if gp.head_type == "tokens":
        res["identical_action_ids"] = same_ids / max(1, n_obs)
    res["max_action_diff_normalized"] = _round(max_act)
    res["valid_rate_reference"] = valid_ref / max(1, n_obs)
    res["valid_rate_exported"] = valid_got / max(1, n_obs)
    return res


def _round(v: float) -> float:
    if isinstance(v, float) and math.isfinite(v):
        return float(f"{v:.6g}")
    return v


def check_thresholds(variant: str, figures: Mapping[str, Any],
                     thresholds: Mapping[str, Any] | None = None) -> list[str]:
    """Problems (empty = pass) of one variant's parity figures."""
    th = dict(DEFAULT_THRESHOLDS.get(variant, DEFAULT_THRESHOLDS["int8-static"]))
    th.update(thresholds or {})
    bad = []
    for name, f in (figures.get("outputs") or {}).items():
        if name == "actions" and figures.get("identical_action_ids") is not None:
            continue  # token heads: judged by id identity (decoded chunks of different ids differ a lot)
        cos = f.get("cosine")
        if th.get("min_cosine") is not None and (cos is None or not cos >= th["min_cosine"]):
            bad.append(f"{name}: cosine {cos} < {th['min_cosine']}")
        if th.get("max_rel_err") is not None and not f.get("rel", math.inf) <= th["max_rel_err"]:
            bad.append(f"{name}: relative error {f.get('rel')} > {th['max_rel_err']} (max abs {f.get('max_abs')})")
    if th.get("identical_actions"):
        ident = figures.get("identical_action_ids")
        if ident is not None and ident < 1.0:
            bad.append(f"decoded action ids identical for {ident:.0%} of the observations (required: all)")
        elif ident is None and not figures.get("max_action_diff_normalized", math.inf) <= 1e-3:
            bad.append(f"actions differ by {figures.get('max_action_diff_normalized')} (normalized units)")
    return bad


def enforce(variant: str, figures: Mapping[str, Any], thresholds: Mapping[str, Any] | None = None) -> None:
    bad = check_thresholds(variant, figures, thresholds)
    if bad:
        raise BundleError(f"parity check of variant {variant!r} failed on {figures.get('observations')} "
                          f"observation(s): " + "; ".join(bad))
