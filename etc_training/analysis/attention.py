"""Where the action prediction looks (ETC paper Fig. 4b): the regression head's instruction-conditioned spatial
attention over the image tokens, measured against the objects' boxes in the camera image.

The attention. InstructionSpatialAttention (etc_training/models/heads/regression.py) computes, per head, a softmax
over the image tokens from the instruction; its weights give the expected patch coordinate and the attended value
that the action MLP reads: the attention of the action prediction over the image patches. `record_spatial_attention`
records them with a forward hook that calls the module's own `attention()` (the head's outputs are untouched). The
image tokens are a G x G grid in row-major order (the conv tower flattens its (G, G) map), and the policy's input is
the camera image resized without a crop, so patch (gx, gy) covers the fraction [gx / G, (gx + 1) / G] x
[gy / G, (gy + 1) / G] of the camera image. A token's receptive field is wider than its patch; "mass on a box" counts
the weights of the patches the box covers, spread evenly over each patch's pixels.

The boxes. The simulator's ground truth of the first frame (SimEnv.annotations(): each object's per-camera "box",
the one the ETC engine's scene-grounding questions are made from), in camera pixels with the convention of
etc_training/etc/coords.py (pixel centres at integer coordinates). Target = the task's object (role "object"),
distractors = the objects with role "distractor".

Per observation (mean over heads, and each head):
- target_mass: attention mass on the pixels of the target's box;
- distractor_mass: on the union of the distractor boxes without the target box's pixels (the regions are disjoint);
- target_area / distractor_area: the region's share of the image = the mass of a uniform attention (the baseline);
- target_ceiling: the largest share of one patch the target box covers, i.e. the most mass attention at patch
  resolution can put on the box (a box smaller than a patch can never get 1.0);
- peak_weight: the largest patch weight (uniform attention: 1 / G^2);
- peak_in_target: whether the most attended patch overlaps the target box;
- centroid_error_px: distance from the attention's expected patch centre (what the soft-argmax gives the action MLP)
  to the target's point.
Over the scenes of a split: the means, ratio = sum(mass) / sum(area) (how many times the uniform baseline),
selectivity = target ratio / distractor ratio, with 95 % percentile-bootstrap intervals (scenes resampled).

Instruction-swap control (`swap_measures`): the same frame and state with the instruction's template naming one
distractor instead of the task object. Attention that follows the instruction moves to the named distractor's box
and leaves the target's; attention drawn by what the objects look like does not move.
"""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np

from etc_ros.core.errors import UserError

TARGET_COLOR = (40, 220, 60)
DISTRACTOR_COLOR = (235, 40, 40)


class AttentionAnalysisError(UserError):
    """The checkpoint or the scene cannot be analysed (no spatial attention in the head, unexpected token layout)."""


# ---------------------------------------------------------------------------------------------- capture
def find_spatial_attention(policy: Any):
    """The policy's InstructionSpatialAttention module; a clear error when its head has none."""
    from torch import nn

    from etc_training.models.heads.regression import InstructionSpatialAttention

    head = getattr(policy, "action_head", None)
    mods = [m for m in head.modules() if isinstance(m, InstructionSpatialAttention)] \
        if isinstance(head, nn.Module) else []
    if not mods:
        name = getattr(head, "name", type(head).__name__)
        cfg = head.config_dict() if hasattr(head, "config_dict") else {}
        raise AttentionAnalysisError(
            f"the checkpoint's action head {name!r} has no instruction-conditioned spatial attention over the image "
            f"tokens (spatial_heads={cfg.get('spatial_heads', 0)}); only a regression (or regression_diffusion) head "
            f"built with spatial_heads > 0 has one")
    if len(mods) > 1:
        raise AttentionAnalysisError(f"the action head has {len(mods)} spatial attention modules; expected one")
    return mods[0]


@contextmanager
def record_spatial_attention(module: Any) -> Iterator[list[list[np.ndarray]]]:
    """Within the block every forward of `module` appends, per batch row, its weights over that row's image tokens
    ((heads, n_image_tokens) float64, in token order). Only a hook: the module's outputs do not change."""
    import torch

    calls: list[list[np.ndarray]] = []

    def hook(m, args, kwargs, _out):
        with torch.no_grad():
            w, img, _ = m.attention(*args, **kwargs)
        calls.append([w[b][:, img[b] > 0].double().cpu().numpy() for b in range(w.shape[0])])

    handle = module.register_forward_hook(hook, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def capture_attention(policy: Any, observations: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """observations [{"images", "state", "instruction"}, ...] -> (weights (B, heads, G, G): each head's attention
    over the image patches, row gy, column gx, summing to 1; the predicted chunks (B, H, D), raw units), from one
    `predict_chunks` call (the path closed-loop evaluation uses)."""
    module = find_spatial_attention(policy)
    G = int(module.grid)
    with record_spatial_attention(module) as calls:
        chunks, _ = policy.predict_chunks(list(observations))
    if len(calls) != 1:
        raise AttentionAnalysisError(f"expected one pass of the spatial attention per prediction, got {len(calls)}")
    rows = calls[0]
    for r in rows:
        if r.shape[1] != G * G:
            raise AttentionAnalysisError(f"expected {G * G} image tokens ({G} x {G}), got {r.shape[1]}")
    return np.stack(rows).reshape(len(rows), -1, G, G), np.asarray(chunks)


# ---------------------------------------------------------------------------------------------- geometry
def patch_index(n: int, grid: int) -> np.ndarray:
    """For each of n pixels along an axis, the patch (0..grid-1) its centre falls in."""
    if n < grid or grid < 1:
        raise AttentionAnalysisError(f"an axis of {n} pixels cannot hold a grid of {grid} patches")
    return np.minimum(((np.arange(n) + 0.5) * grid / n).astype(int), grid - 1)


def patch_to_pixels(weights: Any, width: int, height: int) -> np.ndarray:
    """(..., G, G) patch weights (row gy, column gx) -> (..., height, width) per-pixel mass: each pixel gets its
    patch's weight divided by the patch's pixel count, so the map sums to what the weights sum to."""
    w = np.asarray(weights, dtype=np.float64)
    G = w.shape[-1]
    if w.ndim < 2 or w.shape[-2] != G:
        raise AttentionAnalysisError(f"patch weights must end in a square (G, G) grid, got {w.shape}")
    rows, cols = patch_index(int(height), G), patch_index(int(width), G)
    per_px = w / (np.bincount(rows, minlength=G)[:, None] * np.bincount(cols, minlength=G)[None, :])
    return per_px[..., rows[:, None], cols[None, :]]


def box_mask(boxes: Sequence[Sequence[float] | None], width: int, height: int) -> np.ndarray:
    """(height, width) bool: pixels whose centre (u, v) lies in any box [x1, y1, x2, y2] (None boxes ignored)."""
    u = np.arange(int(width))[None, :]
    v = np.arange(int(height))[:, None]
    m = np.zeros((int(height), int(width)), dtype=bool)
    for b in boxes:
        if b is None:
            continue
        x1, x2 = sorted((float(b[0]), float(b[2])))
        y1, y2 = sorted((float(b[1]), float(b[3])))
        m |= (u >= x1) & (u <= x2) & (v >= y1) & (v <= y2)
    return m


def patch_coverage(mask: np.ndarray, grid: int) -> np.ndarray:
    """(G, G): the share of each patch's pixels inside `mask`."""
    H, W = mask.shape
    idx = patch_index(H, grid)[:, None] * grid + patch_index(W, grid)[None, :]
    inside = np.bincount(idx.ravel(), weights=mask.ravel().astype(float), minlength=grid * grid)
    return (inside / np.bincount(idx.ravel(), minlength=grid * grid)).reshape(grid, grid)


def attention_centroid(weights: Any, width: int, height: int) -> tuple[float, float]:
    """Expected pixel (u, v) of a (G, G) weight grid, patches at their centres."""
    w = np.asarray(weights, dtype=np.float64)
    G = w.shape[-1]
    c = (np.arange(G) + 0.5) / G
    s = max(float(w.sum()), 1e-12)
    return float((w.sum(0) @ c) * width / s - 0.5), float((w.sum(1) @ c) * height / s - 0.5)


def attention_measures(weights: Any, target_box: Sequence[float], distractor_boxes: Sequence[Sequence[float] | None],
                       width: int, height: int, target_point: Sequence[float] | None = None) -> dict:
    """The measures of one observation (module doc): weights (heads, G, G) -> {"target_area", "distractor_area",
    "target_ceiling", "mean": {...}, "heads": [{...}, ...]}; each {...} holds target_mass, distractor_mass,
    other_mass, peak_in_target and centroid_error_px (None without target_point)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 2:
        w = w[None]
    G = w.shape[-1]
    t_mask = box_mask([target_box], width, height)
    d_mask = box_mask(distractor_boxes, width, height) & ~t_mask
    cover = patch_coverage(t_mask, G)
    maps = patch_to_pixels(w, width, height)

    def one(grid_w: np.ndarray, px: np.ndarray) -> dict:
        tm, dm = float(px[t_mask].sum()), float(px[d_mask].sum())
        peak = np.unravel_index(int(np.argmax(grid_w)), grid_w.shape)
        err = None
        if target_point is not None:
            cu, cv = attention_centroid(grid_w, width, height)
            err = float(math.hypot(cu - float(target_point[0]), cv - float(target_point[1])))
        return {"target_mass": tm, "distractor_mass": dm, "other_mass": float(px.sum()) - tm - dm,
                "peak_weight": float(grid_w.max()), "peak_in_target": bool(cover[peak] > 0),
                "centroid_error_px": err}

    return {"target_area": float(t_mask.mean()), "distractor_area": float(d_mask.mean()),
            "target_ceiling": float(cover.max()), "mean": one(w.mean(0), maps.mean(0)),
            "heads": [one(w[h], maps[h]) for h in range(w.shape[0])]}


# ---------------------------------------------------------------------------------------------- statistics
def bootstrap_indices(n: int, resamples: int = 2000, seed: int = 0) -> np.ndarray:
    """(resamples, n) scene indices drawn with replacement (one draw shared by every statistic of a split)."""
    return np.random.default_rng(seed).integers(0, n, size=(int(resamples), int(n)))


def _ci(values: np.ndarray) -> list[float] | None:
    v = values[np.isfinite(values)]
    return [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] if v.size else None


def mean_ci(x: Any, idx: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    return {"mean": float(x.mean()), "ci95": _ci(x[idx].mean(1))}


def ratio_ci(num: Any, den: Any, idx: np.ndarray) -> dict:
    """sum(num) / sum(den) over the scenes, with its bootstrap interval."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    if den.sum() <= 0:
        return {"value": None, "ci95": None}
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = num[idx].sum(1) / den[idx].sum(1)
    return {"value": float(num.sum() / den.sum()), "ci95": _ci(boot)}


def _block(recs: Sequence[dict], get: Callable[[dict], dict], idx: np.ndarray) -> dict:
    tm = np.array([get(r)["target_mass"] for r in recs])
    dm = np.array([get(r)["distractor_mass"] for r in recs])
    ta = np.array([r["target_area"] for r in recs])
    da = np.array([r["distractor_area"] for r in recs])
    out = {"target_mass": mean_ci(tm, idx), "target_ratio": ratio_ci(tm, ta, idx),
           "distractor_mass": mean_ci(dm, idx), "distractor_ratio": ratio_ci(dm, da, idx),
           "peak_in_target": float(np.mean([get(r)["peak_in_target"] for r in recs])),
           "peak_weight": float(np.mean([get(r)["peak_weight"] for r in recs]))}
    with np.errstate(divide="ignore", invalid="ignore"):
        per_scene = tm / ta
    out["target_ratio"]["median_per_scene"] = float(np.median(per_scene[np.isfinite(per_scene)]))
    if ta.sum() > 0 and dm.sum() > 0 and da.sum() > 0:
        with np.errstate(divide="ignore", invalid="ignore"):
            boot = (tm[idx].sum(1) / ta[idx].sum(1)) / (dm[idx].sum(1) / da[idx].sum(1))
        out["selectivity"] = {"value": float((tm.sum() / ta.sum()) / (dm.sum() / da.sum())), "ci95": _ci(boot)}
    else:
        out["selectivity"] = {"value": None, "ci95": None}
    errs = [get(r)["centroid_error_px"] for r in recs if get(r)["centroid_error_px"] is not None]
    out["centroid_error_px"] = {"median": float(np.median(errs)), "mean": float(np.mean(errs))} if errs else None
    return out


def summarize_scenes(records: Sequence[dict], resamples: int = 2000, seed: int = 0) -> dict:
    """Per-split summary of per-scene records (each: attention_measures(...) plus optional "success")."""
    recs = list(records)
    if not recs:
        return {"n": 0}
    idx = bootstrap_indices(len(recs), resamples, seed)
    heads = len(recs[0]["heads"])
    out = {"n": len(recs),
           "target_area": float(np.mean([r["target_area"] for r in recs])),
           "distractor_area": float(np.mean([r["distractor_area"] for r in recs])),
           "target_ceiling": float(np.mean([r["target_ceiling"] for r in recs])),
           "mean_over_heads": _block(recs, lambda r: r["mean"], idx),
           "heads": [_block(recs, lambda r, h=h: r["heads"][h], idx) for h in range(heads)]}
    known = [r for r in recs if r.get("success") is not None]
    if known:
        by = {}
        for name, ok in (("success", True), ("failure", False)):
            sub = [r for r in known if bool(r["success"]) is ok]
            if sub:
                tm = np.array([r["mean"]["target_mass"] for r in sub])
                ta = np.array([r["target_area"] for r in sub])
                sidx = bootstrap_indices(len(sub), resamples, seed + 1)
                by[name] = {"n": len(sub), "target_mass": mean_ci(tm, sidx), "target_ratio": ratio_ci(tm, ta, sidx),
                            "peak_in_target": float(np.mean([r["mean"]["peak_in_target"] for r in sub]))}
        out["by_outcome"] = by
    swaps = [r["swap"] for r in recs if r.get("swap")]
    if swaps:
        sidx = bootstrap_indices(len(swaps), resamples, seed + 2)
        out["swap"] = {"n": len(swaps), "mean_over_heads": _swap_block(swaps, lambda w: w["mean"], sidx),
                       "heads": [_swap_block(swaps, lambda w, h=h: w["heads"][h], sidx) for h in range(heads)]}
    return out


def _swap_block(swaps: Sequence[dict], get: Callable[[dict], dict], idx: np.ndarray) -> dict:
    ta = np.array([w["target_area"] for w in swaps])
    da = np.array([w["named_area"] for w in swaps])
    col = {k: np.array([get(w)[k] for w in swaps]) for k in get(swaps[0])}
    return {"target_ratio_named": ratio_ci(col["target_named"], ta, idx),
            "target_ratio_other_named": ratio_ci(col["target_other_named"], ta, idx),
            "distractor_ratio_named": ratio_ci(col["distractor_named"], da, idx),
            "distractor_ratio_target_named": ratio_ci(col["distractor_target_named"], da, idx)}


def load_outcomes(paths: Sequence[str | Path]) -> dict[tuple[str, int], bool]:
    """(split, seed) -> closed-loop success, from `etc-vla eval` reports (eval.json: closed_loop.episodes)."""
    out: dict[tuple[str, int], bool] = {}
    for p in paths:
        try:
            d = json.loads(Path(p).read_text())
        except (OSError, ValueError) as e:
            raise AttentionAnalysisError(f"--outcomes {p}: cannot read an eval report ({e})") from None
        eps = (d.get("closed_loop") or {}).get("episodes") if isinstance(d, dict) else None
        if not eps:
            raise AttentionAnalysisError(f"--outcomes {p}: no closed_loop.episodes (not an `etc-vla eval` report)")
        for e in eps:
            out[(str(e["split"]), int(e["seed"]))] = bool(e["success"])
    return out


# ---------------------------------------------------------------------------------------------- overlays
def _heat_rgb(t: np.ndarray) -> np.ndarray:
    """[0, 1] -> black-red-yellow-white ramp, uint8 (..., 3)."""
    t = np.clip(t, 0.0, 1.0)[..., None]
    rgb = np.clip(np.concatenate([3 * t, 3 * t - 1, 3 * t - 2], axis=-1), 0.0, 1.0)
    return (255 * rgb).astype(np.uint8)


def heat_overlay(image: np.ndarray, weights: Any, alpha: float = 0.55) -> np.ndarray:
    """The image blended with one (G, G) weight grid, colour scaled to the grid's maximum."""
    img = np.asarray(image, dtype=np.uint8)
    H, W = img.shape[:2]
    w = np.asarray(weights, dtype=np.float64)
    G = w.shape[-1]
    up = w[patch_index(H, G)[:, None], patch_index(W, G)[None, :]]
    heat = _heat_rgb(up / max(float(up.max()), 1e-12)).astype(np.float64)
    return np.clip((1 - alpha) * img + alpha * heat, 0, 255).astype(np.uint8)


def _draw_boxes(im, target_box, distractor_boxes, scale: float = 1.0, width: int = 2) -> None:
    from PIL import ImageDraw

    d = ImageDraw.Draw(im)
    for boxes, col in ((distractor_boxes, DISTRACTOR_COLOR), ([target_box], TARGET_COLOR)):
        for b in boxes:
            if b is None:
                continue
            x1, y1, x2, y2 = (float(v) * scale for v in b)
            d.rectangle([x1, y1, x2, y2], outline=col, width=width)


def write_overlay(path: str | Path, image: np.ndarray, weights: Any, target_box: Sequence[float] | None,
                  distractor_boxes: Sequence[Sequence[float] | None], caption: str = "") -> Path:
    """PNG: the camera image with the boxes (target green, distractors red), the mean-over-heads heatmap, and each
    head's heatmap at half size (colours scaled to each map's maximum), the caption underneath."""
    from PIL import Image, ImageDraw

    img = np.asarray(image, dtype=np.uint8)
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim == 2:
        w = w[None]
    H, W = img.shape[:2]
    heads = w.shape[0]
    cols = max(1, math.ceil(math.sqrt(heads)))
    rows = math.ceil(heads / cols)
    sw, sh = W // cols, H // max(rows, 1)
    cap_lines = [ln for ln in caption.split("\n") if ln] if caption else []
    canvas = Image.new("RGB", (2 * W + cols * sw + 8, max(H, rows * sh) + 14 * len(cap_lines) + 6), (255, 255, 255))
    base = Image.fromarray(img)
    _draw_boxes(base, target_box, distractor_boxes)
    canvas.paste(base, (0, 0))
    mean = Image.fromarray(heat_overlay(img, w.mean(0)))
    _draw_boxes(mean, target_box, distractor_boxes)
    canvas.paste(mean, (W + 4, 0))
    for h in range(heads):
        tile = Image.fromarray(heat_overlay(img, w[h])).resize((sw, sh), Image.BILINEAR)
        _draw_boxes(tile, target_box, distractor_boxes, scale=sw / W, width=1)
        canvas.paste(tile, (2 * W + 8 + (h % cols) * sw, (h // cols) * sh))
    draw = ImageDraw.Draw(canvas)
    for k, line in enumerate(cap_lines):
        draw.text((4, max(H, rows * sh) + 3 + 14 * k), line, fill=(0, 0, 0))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, optimize=True)
    return path


# ---------------------------------------------------------------------------------------------- the analysis
def scene_boxes(annotations: Sequence[Mapping[str, Any]], camera: str) -> dict:
    """Target (role "object") and distractor boxes / points of one frame's SimEnv.annotations() in `camera`."""
    target, distractors = None, []
    for a in annotations:
        c = (a.get("cameras") or {}).get(camera) or {}
        entry = {"name": a.get("name"), "box": c.get("box"), "point": c.get("point"),
                 "visible": bool(c.get("visible", False))}
        if a.get("role") == "object":
            target = entry
        elif a.get("role") == "distractor":
            distractors.append(entry)
    return {"target": target, "distractors": distractors}


def swapped_instruction(env: Any, name: str) -> str | None:
    """The episode's instruction with the same template naming `name` instead of the task object (None when the
    template does not reproduce the instruction)."""
    from etc_training.sim.language import render_instruction

    task = env.task
    fam, _, tid = str(task.template_id).rpartition("/")
    kind = env.spec(task.target).kind if task.target else None
    try:
        if render_instruction(fam or task.family, tid, task.object, task.target, kind) != task.instruction:
            return None
        return render_instruction(fam or task.family, tid, name, task.target, kind)
    except KeyError:
        return None


def swap_measures(w_task: np.ndarray, w_swap: np.ndarray, target_box: Sequence[float], named_box: Sequence[float],
                  width: int, height: int) -> dict:
    """The instruction-swap control of one scene: attention on the target's box and on one distractor's box (its
    pixels outside the target box) when the instruction names the target (w_task) and when it names that distractor
    (w_swap), both (heads, G, G)."""
    a = attention_measures(w_task, target_box, [named_box], width, height)
    b = attention_measures(w_swap, target_box, [named_box], width, height)

    def one(x: dict, y: dict) -> dict:
        return {"target_named": x["target_mass"], "target_other_named": y["target_mass"],
                "distractor_named": y["distractor_mass"], "distractor_target_named": x["distractor_mass"]}

    return {"target_area": a["target_area"], "named_area": a["distractor_area"], "mean": one(a["mean"], b["mean"]),
            "heads": [one(x, y) for x, y in zip(a["heads"], b["heads"])]}


def _r(x: Any, nd: int = 5):
    if isinstance(x, float):
        return round(x, nd)
    if isinstance(x, dict):
        return {k: _r(v, nd) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_r(v, nd) for v in x]
    return x


def analyze_attention(checkpoint: str | Path, out: str | Path, splits: Sequence[str], scenes: int = 50,
                      seed: int = 0, overlays: int = 8, family: str = "pick_up", camera: str = "primary",
                      outcomes: Sequence[str | Path] = (), resamples: int = 2000, swap: bool = True,
                      progress: bool = True) -> dict:
    """The first observation of `scenes` seeded scenes per split (scene i: reset(seed=seed * 100000 + i, split,
    family), as `etc-vla eval` numbers them), the policy's spatial attention on it against the target and
    distractor boxes; OUT/report.json (summaries), OUT/scenes.jsonl (one record per scene, the weights included),
    OUT/report.md and OUT/overlays/<split>_<i>.png (first `overlays` scenes). swap: also the instruction-swap control
    (the same frame, the instruction naming one distractor; `swap_measures`). A split the family cannot make
    (ood_combo without a place target) is listed under "skipped_splits".
    """
    from etc_ros.core.io import atomic_write_json, atomic_write_text
    from etc_training.models.vla import VLAPolicy
    from etc_training.sim import SimConfig, SimEnv
    from etc_training.sim.splits import check_split
    from etc_training.sim.tasks import TaskError

    t0 = time.perf_counter()
    splits = [check_split(s) for s in splits]
    if scenes < 1:
        raise AttentionAnalysisError(f"--scenes must be >= 1, got {scenes}")
    out = Path(out)
    known = load_outcomes(outcomes) if outcomes else {}
    policy = VLAPolicy.load(checkpoint)
    policy.eval()
    module = find_spatial_attention(policy)
    G, heads = int(module.grid), int(module.heads)
    cfg = SimConfig()
    cfg.render.cameras = [camera]
    if camera == "wrist":
        cfg.camera.wrist = True
    env = SimEnv(cfg, depth=True)
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(splits) * scenes, desc="attention", unit="scene", disable=None)
        except ImportError:  # pragma: no cover
            bar = None
    per_split: dict[str, dict] = {}
    skipped_splits: dict[str, str] = {}
    overlay_files: list[str] = []
    scene_lines: list[str] = []
    try:
        for split in splits:
            recs, skipped = [], []
            ts = time.perf_counter()
            for i in range(scenes):
                s = int(seed) * 100_000 + i
                try:
                    obs = env.reset(seed=s, split=split, family=family)
                except TaskError as e:
                    if i == 0:
                        skipped_splits[split] = str(e)
                        if bar is not None:
                            bar.update(scenes)
                        break
                    raise
                boxes = scene_boxes(env.annotations(), camera)
                tgt = boxes["target"]
                if bar is not None:
                    bar.update(1)
                if tgt is None or tgt["box"] is None:
                    skipped.append({"seed": s, "reason": "target not in front of the camera"})
                    continue
                img = obs["images"][camera]
                weights, _ = capture_attention(policy, [{"images": img, "state": obs["state"],
                                                         "instruction": env.instruction}])
                H, W = img.shape[:2]
                dboxes = [d["box"] for d in boxes["distractors"]]
                m = attention_measures(weights[0], tgt["box"], dboxes, W, H, tgt["point"])
                rec = {"index": i, "seed": s, "instruction": env.instruction, "object": tgt["name"],
                       "target_visible": tgt["visible"], "target_box": tgt["box"],
                       "distractors": [d["name"] for d in boxes["distractors"]], "distractor_boxes": dboxes,
                       **m, "weights": weights[0].tolist()}
                if known:
                    rec["success"] = known.get((split, s))
                if swap:
                    names = [d["name"] for d in boxes["distractors"]]
                    named = next((d for d in boxes["distractors"] if d["box"] is not None
                                  and names.count(d["name"]) == 1 and d["name"] != tgt["name"]), None)
                    alt = swapped_instruction(env, named["name"]) if named is not None else None
                    if alt is not None:
                        w_alt, _ = capture_attention(policy, [{"images": img, "state": obs["state"],
                                                               "instruction": alt}])
                        rec["swap"] = {"instruction": alt, "named": named["name"], "named_box": named["box"],
                                       **swap_measures(weights[0], w_alt[0], tgt["box"], named["box"], W, H)}
                recs.append(rec)
                if i < overlays:
                    mt = m["mean"]
                    outcome = "" if rec.get("success") is None else \
                        f"; closed loop: {'success' if rec['success'] else 'failure'}"
                    cap = (f"{split} seed {s}: \"{env.instruction}\"{outcome}\n"
                           f"target (green) mass {mt['target_mass']:.3f}, area {m['target_area']:.3f}; distractors "
                           f"(red) mass {mt['distractor_mass']:.3f}, area {m['distractor_area']:.3f}\n"
                           f"image | mean over heads | heads 0-{heads - 1}; peak patch weight "
                           f"{float(weights[0].mean(0).max()):.3f} (uniform {1 / (G * G):.3f}), colours scaled to "
                           f"each map's peak")
                    p = write_overlay(out / "overlays" / f"{split}_{i:03d}.png", img, weights[0], tgt["box"], dboxes,
                                      cap)
                    overlay_files.append(str(p.relative_to(out)))
            if split in skipped_splits:
                continue
            summary = summarize_scenes(recs, resamples, seed)
            summary.update(skipped_scenes=skipped, seconds=round(time.perf_counter() - ts, 2))
            per_split[split] = {"summary": summary}
            scene_lines += [json.dumps(_r({"split": split, **r}), separators=(",", ":")) for r in recs]
    finally:
        env.close()
        if bar is not None:
            bar.close()
    report = {"checkpoint": str(checkpoint), "family": family, "camera": camera, "seed": int(seed),
              "scenes_per_split": int(scenes), "scene_seeds": f"reset(seed={int(seed)} * 100000 + i)",
              "grid": G, "heads": heads, "image_size": [int(cfg.render.width), int(cfg.render.height)],
              "policy_image_size": int(policy.processor.config.image_size), "bootstrap_resamples": int(resamples),
              "outcomes": [str(p) for p in outcomes], "splits": per_split, "skipped_splits": skipped_splits,
              "overlays": overlay_files, "seconds": round(time.perf_counter() - t0, 2)}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", _r(report))
    atomic_write_text(out / "scenes.jsonl", "\n".join(scene_lines) + ("\n" if scene_lines else ""))
    atomic_write_text(out / "report.md", render_markdown(report))
    return report


# ---------------------------------------------------------------------------------------------- report
def _fmt(d: Mapping[str, Any] | None, key: str = "mean", nd: int = 3) -> str:
    if not d or d.get(key) is None:
        return "-"
    ci = d.get("ci95")
    return f"{d[key]:.{nd}f}" + (f" [{ci[0]:.{nd}f}, {ci[1]:.{nd}f}]" if ci else "")


def render_markdown(report: Mapping[str, Any]) -> str:
    L = [f"# Spatial attention of the action prediction: {report['checkpoint']}", "",
         f"{report['family']} scenes, first observation, camera {report['camera']} "
         f"({report['image_size'][0]} x {report['image_size'][1]} px; the policy sees it at "
         f"{report['policy_image_size']} px as a {report['grid']} x {report['grid']} patch grid), "
         f"{report['heads']} attention heads; scene i of a split is {report['scene_seeds']}. Mass = attention on "
         f"the box's pixels; area = the box's share of the image (what uniform attention would put there); "
         f"ratio = sum(mass) / sum(area) over scenes; selectivity = target ratio / distractor ratio; 95 % "
         f"bootstrap intervals over scenes ({report['bootstrap_resamples']} resamples). Run time "
         f"{report['seconds']:.0f} s.", "",
         "## Mean over heads", "", "centroid error: median over scenes, pixels of the camera image.", "",
         "| split | scenes | target mass | target area | target ratio | distractor mass | distractor area | "
         "distractor ratio | selectivity | peak patch on target | peak weight | centroid error, px | ceiling |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for split, v in report["splits"].items():
        s = v["summary"]
        if not s.get("n"):
            L.append(f"| {split} | 0 | - | - | - | - | - | - | - | - | - | - | - |")
            continue
        m = s["mean_over_heads"]
        ce = m["centroid_error_px"]
        L.append(f"| {split} | {s['n']} | {_fmt(m['target_mass'])} | {s['target_area']:.3f} | "
                 f"{_fmt(m['target_ratio'], 'value', 2)} | {_fmt(m['distractor_mass'])} | "
                 f"{s['distractor_area']:.3f} | {_fmt(m['distractor_ratio'], 'value', 2)} | "
                 f"{_fmt(m['selectivity'], 'value', 2)} | {m['peak_in_target']:.0%} | {m['peak_weight']:.3f} | "
                 f"{'-' if ce is None else format(ce['median'], '.1f')} | {s['target_ceiling']:.2f} |")
    g2 = 1.0 / report["grid"] ** 2
    L += ["", f"peak weight: mean over scenes of the largest patch weight (uniform: {g2:.3f}). ceiling: mean over "
          "scenes of the largest share of one patch that the target box covers (the most mass attention at patch "
          "resolution could put on the box).", "", "## Per head", "",
          "| split | head | target mass | target ratio | distractor mass | distractor ratio | selectivity | "
          "peak patch on target | peak weight |", "|---|---|---|---|---|---|---|---|---|"]
    for split, v in report["splits"].items():
        for h, m in enumerate(v["summary"].get("heads", [])):
            L.append(f"| {split} | {h} | {_fmt(m['target_mass'])} | {_fmt(m['target_ratio'], 'value', 2)} | "
                     f"{_fmt(m['distractor_mass'])} | {_fmt(m['distractor_ratio'], 'value', 2)} | "
                     f"{_fmt(m['selectivity'], 'value', 2)} | {m['peak_in_target']:.0%} | {m['peak_weight']:.3f} |")
    swaps = [(split, v["summary"]["swap"]) for split, v in report["splits"].items() if v["summary"].get("swap")]
    if swaps:
        L += ["", "## Instruction-swap control", "",
              "The same frame with the instruction naming one distractor instead of the task object (same template). "
              "Ratios to each box's area (uniform = 1).", "",
              "| split | heads | scenes | target, target named | target, distractor named | distractor, distractor "
              "named | distractor, target named |", "|---|---|---|---|---|---|---|"]
        for split, sw in swaps:
            for label, b in [("mean", sw["mean_over_heads"])] + [(str(h), x) for h, x in enumerate(sw["heads"])]:
                L.append(f"| {split} | {label} | {sw['n']} | {_fmt(b['target_ratio_named'], 'value', 2)} | "
                         f"{_fmt(b['target_ratio_other_named'], 'value', 2)} | "
                         f"{_fmt(b['distractor_ratio_named'], 'value', 2)} | "
                         f"{_fmt(b['distractor_ratio_target_named'], 'value', 2)} |")
    outcomes = [(split, v["summary"]["by_outcome"]) for split, v in report["splits"].items()
                if v["summary"].get("by_outcome")]
    if outcomes:
        L += ["", "## By closed-loop outcome (mean over heads)", "",
              "| split | outcome | scenes | target mass | target ratio | peak patch on target |",
              "|---|---|---|---|---|---|"]
        for split, by in outcomes:
            for name, b in by.items():
                L.append(f"| {split} | {name} | {b['n']} | {_fmt(b['target_mass'])} | "
                         f"{_fmt(b['target_ratio'], 'value', 2)} | {b['peak_in_target']:.0%} |")
    if report.get("skipped_splits"):
        L += ["", "Skipped splits: " + "; ".join(f"{k} ({v})" for k, v in report["skipped_splits"].items())]
    skipped = {k: len(v["summary"].get("skipped_scenes", [])) for k, v in report["splits"].items()}
    if any(skipped.values()):
        L += ["", "Scenes without a target box: " + ", ".join(f"{k} {n}" for k, n in skipped.items() if n)]
    if report.get("overlays"):
        L += ["", "Overlays (image + boxes, mean heatmap, each head; target green, distractors red): "
              + ", ".join(f"`{p}`" for p in report["overlays"])]
    return "\n".join(L) + "\n"


# ---------------------------------------------------------------------------------------------- comparison
def _scene_rows(run_dir: str | Path) -> list[dict]:
    p = Path(run_dir) / "scenes.jsonl"
    if not p.is_file():
        raise UserError(f"{p}: not an `etc-vla analyze attention` output (no scenes.jsonl)")
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def compare_attention(groups: Mapping[str, Sequence[str | Path]], reference: str, resamples: int = 2000,
                      seed: int = 0) -> dict:
    """Attention of several policies (`groups`: label -> analysis directories, one per training seed, the k-th of
    every label made with the same scenes) against `reference`: per split and label the target and distractor
    ratios pooled over seeds and scenes (mass / area, ratio of sums), and the paired difference of the target ratio
    vs the reference on the same (seed, scene) pairs, with a bootstrap 95 % interval over pairs. Mean over heads."""
    if reference not in groups:
        raise UserError(f"reference {reference!r} is not one of {list(groups)}")
    rows = {label: [_scene_rows(d) for d in dirs] for label, dirs in groups.items()}
    n_runs = {label: len(r) for label, r in rows.items()}
    if len(set(n_runs.values())) != 1:
        raise UserError(f"every label needs the same number of runs (seeds), got {n_runs}")

    keyed = {label: {(k, r["split"], int(r["seed"])): r for k, run in enumerate(runs) for r in run
                     if r.get("target_visible", True) and r.get("mean")} for label, runs in rows.items()}
    ref = keyed[reference]
    splits = sorted({k[1] for k in ref})
    out: dict[str, Any] = {"reference": reference, "runs": {k: [str(d) for d in v] for k, v in groups.items()},
                           "splits": {}}
    for split in splits:
        per: dict[str, Any] = {}
        for label, mine in keyed.items():
            pairs = sorted(k for k in mine if k[1] == split and k in ref)
            if not pairs:
                continue
            tm = np.array([mine[k]["mean"]["target_mass"] for k in pairs])
            dm = np.array([mine[k]["mean"]["distractor_mass"] for k in pairs])
            ta = np.array([mine[k]["target_area"] for k in pairs])
            da = np.array([mine[k]["distractor_area"] for k in pairs])
            tm_ref = np.array([ref[k]["mean"]["target_mass"] for k in pairs])
            idx = bootstrap_indices(len(pairs), resamples, seed)
            diff = (tm[idx] - tm_ref[idx]).sum(1) / ta[idx].sum(1)
            per[label] = {"pairs": len(pairs), "target_ratio": _r(tm.sum() / ta.sum()),
                          "distractor_ratio": _r(dm.sum() / da.sum()) if da.sum() > 0 else None,
                          "target_ratio_minus_reference": {"value": _r((tm - tm_ref).sum() / ta.sum()),
                                                           "ci95": _ci(diff)}}
        out["splits"][split] = per
    return out


def compare_markdown(cmp: Mapping[str, Any]) -> str:
    ref = cmp["reference"]
    md = ["# Attention of the action prediction: policies compared", "",
          "Mean over heads, first observation of each scene; ratios = attention mass / box area share (1 = uniform), "
          "pooled over seeds and scenes; the difference is paired on the same (seed, scene) with a bootstrap 95 % "
          f"interval; reference `{ref}`.", "",
          "| split | policy | pairs | target ratio | distractor ratio | target ratio minus reference |",
          "|---|---|---|---|---|---|"]
    for split, per in cmp["splits"].items():
        for label, v in per.items():
            d = v["target_ratio_minus_reference"]
            ci = d["ci95"]
            dd = "-" if label == ref else f"{d['value']:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"
            dr = "-" if v["distractor_ratio"] is None else f"{v['distractor_ratio']:.3f}"
            md.append(f"| {split} | {label} | {v['pairs']} | {v['target_ratio']:.3f} | {dr} | {dd} |")
    md += ["", "Runs: " + "; ".join(f"`{k}`: " + ", ".join(v) for k, v in cmp["runs"].items()), ""]
    return "\n".join(md)
