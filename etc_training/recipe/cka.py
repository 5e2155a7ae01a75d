"""Representation drift: linear CKA between the backbone's hidden states and those of a reference model (the
Distribution-Bridged Stage-1 model) on a fixed probe set (the paper's Fig. 3a).

    probe = build_probe(processor, actions, n=16)             # fixed action prompts (images + instruction + state)
    ref = extract_features(stage1_policy, probe)              # {"text.0": (n, d), ..., "vision.0": ...}
    cka = cka_by_layer(extract_features(policy, probe), ref)  # {"text.0": 0.98, ...}

Features: per probe example, the mean of a layer's hidden states over the example's non-padding tokens
(text = decoder hidden states, embeddings + every layer; vision = SigLIP encoder hidden states, mean over
patches). Linear CKA (Kornblith et al.): with column-centred X (n x p) and Y (n x q),
    CKA = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F),
in [0, 1], invariant to orthogonal transforms and isotropic scaling of either representation.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from etc_training.recipe.config import RecipeError


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise RecipeError(f"CKA needs two (n, d) matrices with the same n, got {x.shape} and {y.shape}")
    if x.shape[0] < 2:
        raise RecipeError("CKA needs at least two samples")
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    # Gram form: ||Y^T X||_F^2 = <K_x, K_y>; cheaper when n << d
    if x.shape[0] < max(x.shape[1], y.shape[1]):
        kx, ky = x @ x.T, y @ y.T
        num = float((kx * ky).sum())
        den = float(np.linalg.norm(kx) * np.linalg.norm(ky))
    else:
        num = float(np.linalg.norm(y.T @ x) ** 2)
        den = float(np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))
    if den <= 0:
        return 0.0
    return float(num / den)


def build_probe(processor, actions, n: int, seed: int = 0, batch: int = 8) -> list[dict]:
    """Fixed probe set: n action inference prompts spread evenly over the dataset, collated in batches
    (left padding, as at inference)."""
    if actions is None or len(actions) == 0:
        raise RecipeError("the CKA probe set needs action data")
    n = min(int(n), len(actions))
    idx = np.linspace(0, len(actions) - 1, n).round().astype(int)
    exs = [actions.inference_prompt(processor, int(i)) for i in idx]
    return [processor.collate(exs[k:k + batch], padding_side="left") for k in range(0, len(exs), batch)]


def extract_features(policy, probe: Sequence[Mapping[str, Any]], layers: str = "text") -> dict[str, np.ndarray]:
    """Per-layer mean-pooled features of the probe set: {"text.<i>": (n, d), "vision.<i>": (n, d)}."""
    import torch

    feats: dict[str, list[np.ndarray]] = {}
    was = policy.training
    policy.eval()
    try:
        with torch.no_grad():
            for b in probe:
                t = policy.to_torch(b)
                am = t["attention_mask"]
                if layers in ("text", "all"):
                    pos = am.cumsum(-1).clamp(min=1)
                    out = policy.backbone.model(input_ids=t["input_ids"], pixel_values=t["pixel_values"],
                                                attention_mask=am, token_type_ids=t["token_type_ids"],
                                                position_ids=pos, use_cache=False, output_hidden_states=True)
                    m = am.unsqueeze(-1).float()
                    for i, h in enumerate(out.hidden_states):
                        pooled = (h.float() * m).sum(1) / m.sum(1).clamp(min=1.0)
                        feats.setdefault(f"text.{i}", []).append(pooled.cpu().numpy())
                if layers in ("vision", "all"):
                    vt = policy.backbone.model.vision_tower
                    vo = vt(pixel_values=t["pixel_values"], output_hidden_states=True)
                    B = am.shape[0]
                    for i, h in enumerate(vo.hidden_states):
                        pooled = h.float().mean(1).reshape(B, -1, h.shape[-1]).mean(1)
                        feats.setdefault(f"vision.{i}", []).append(pooled.cpu().numpy())
    finally:
        policy.train(was)
    if not feats:
        raise RecipeError(f"unknown CKA layer set {layers!r}; use text, vision or all")
    return {k: np.concatenate(v, 0) for k, v in feats.items()}


def cka_by_layer(feats: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> dict[str, float]:
    common = [k for k in ref if k in feats]
    if not common:
        raise RecipeError("CKA: the model and the reference share no layers (different architectures?)")
    return {k: round(linear_cka(feats[k], ref[k]), 6) for k in common}


def save_features(path: str | Path, feats: Mapping[str, np.ndarray], meta: Mapping[str, Any] | None = None) -> None:
    import json

    from etc_ros.core.io import atomic_write

    arrays = {k.replace(".", "__"): np.asarray(v) for k, v in feats.items()}
    arrays["__meta__"] = np.asarray(json.dumps(dict(meta or {})))

    def w(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    atomic_write(path, w)


def load_features(path: str | Path) -> tuple[dict[str, np.ndarray], dict]:
    import json

    with np.load(str(path)) as z:
        meta = json.loads(str(z["__meta__"])) if "__meta__" in z.files else {}
        return {k.replace("__", "."): z[k] for k in z.files if k != "__meta__"}, meta


def _layer_sort_key(name: str):
    kind, _, i = name.partition(".")
    return (kind, int(i) if i.isdigit() else 0)


def plot_cka(rows_by_run: Mapping[str, Sequence[Mapping[str, Any]]], out_png: str | Path,
             title: str = "CKA to the Distribution-Bridged model") -> Path:
    """rows_by_run: {label: metrics rows with "cka" dicts and "global_step"}. Left: mean CKA over layers vs
    step; right: per-layer CKA at the last measurement."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for label, rows in rows_by_run.items():
        rows = [r for r in rows if isinstance(r.get("cka"), dict) and r["cka"]]
        if not rows:
            continue
        xs = [r.get("global_step", r.get("step", 0)) for r in rows]
        ys = [float(np.mean(list(r["cka"].values()))) for r in rows]
        a1.plot(xs, ys, marker="o", ms=3, label=label)
        last = rows[-1]["cka"]
        names = sorted(last, key=_layer_sort_key)
        a2.plot(range(len(names)), [last[n] for n in names], marker="o", ms=3, label=label)
        a2.set_xticks(range(len(names)))
        a2.set_xticklabels(names, rotation=90, fontsize=7)
    a1.set_xlabel("optimizer step (stages 2-3)")
    a1.set_ylabel("mean linear CKA over layers")
    a1.set_ylim(0, 1.02)
    a1.grid(alpha=0.3)
    a1.legend(fontsize=8)
    a2.set_ylabel("linear CKA (last measurement)")
    a2.set_ylim(0, 1.02)
    a2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
