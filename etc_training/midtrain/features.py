"""Frozen-VLM features of candidate / robot samples: batched, cached on disk as a numpy memmap, resumable.

Feature of a sample x (the paper uses "the last hidden states", pooling unpublished; ours):

    phi(x) = [ mean of h_L over the image-token positions ; mean of h_L over the text positions ]   (2 x E)

h_L = the backbone's last hidden states (after the final norm) for the sample laid out exactly as the recipe
trains it (VLAProcessor.build_etc_example: image tokens, <bos>, "Task: {question};\\n", "Answer: {answer}<eos>"),
text positions = every non-pad, non-image token (<bos>, prompt and answer). Averaging the two parts separately
keeps the image half from being swamped by long texts (and vice versa); pad tokens never count.

In the same forward pass the answer's next-token NLL is recorded (sum and token count; the perplexity
baselines use it). A pool question made of several human turns is joined into one question, the gpt turns into
one answer (pool.record_qa).

Cache directory:
    index.json      format, n, dim, dtype, pooling, batch_size, model {digest, ...}, items_digest, complete, timing
    rows.jsonl      one {"id", "group"} per row (row order = item order)
    features.f32    float32 memmap (n, dim)
    nll.f32         float32 memmap (n, 2): [answer NLL sum, answer tokens]
    progress.json   {"rows_done"}: rows [0, rows_done) are final (written after each batch, after the flush)

A killed extraction resumes at the first unfinished batch; the batch partition is fixed by the cache's
batch_size, so the result is bit-identical to an uninterrupted run.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from etc_training.midtrain import MidtrainError

FORMAT = "etc-midtrain-features/1"
POOLING = "image_text_mean"
INDEX_FILE, ROWS_FILE, FEATURES_FILE, NLL_FILE, PROGRESS_FILE = (
    "index.json", "rows.jsonl", "features.f32", "nll.f32", "progress.json")


# ---------------------------------------------------------------------------------------------- model
def load_model(path: str | Path | None = None, preset: str = "tiny", seed: int = 0, device: str = "cpu"):
    """The frozen VLM: an etc-vla policy checkpoint (vla.json), a raw local PaliGemma checkpoint (config.json),
    or (path None) a fresh random-init `preset` built with `seed` (the embedded default: the tiny preset with
    seed 0 has the same backbone weights as the recipe's tiny init with seed 0)."""
    from etc_training.models.presets import get_preset
    from etc_training.models.vla import VLAPolicy

    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    if path is None:
        pol = VLAPolicy.build(get_preset(preset, action_tokenizer="bin"), seed=seed)
    else:
        p = Path(path)
        if (p / "vla.json").is_file():
            pol = VLAPolicy.load(p, device="cpu")
        elif (p / "config.json").is_file():
            pol = VLAPolicy.build(get_preset("paligemma-3b", action_tokenizer="bin"), backbone_path=p, seed=seed)
        else:
            raise MidtrainError(f"not a model directory (no vla.json or config.json): {p}")
    pol.eval()
    for prm in pol.parameters():
        prm.requires_grad_(False)
    return pol.to(device)


def model_digest(policy) -> str:
    """Cheap fingerprint of the weights: names, shapes, dtypes, sums and the first / last values of every
    tensor (a changed checkpoint invalidates caches made with the old one)."""
    import torch

    h = hashlib.sha1()
    with torch.no_grad():
        for name, t in policy.backbone.state_dict().items():
            flat = t.detach().reshape(-1).float().cpu()
            h.update(f"{name}:{tuple(t.shape)}:{t.dtype}:{float(flat.double().sum()):.10e}".encode())
            h.update(flat[:256].numpy().tobytes())
            h.update(flat[-256:].numpy().tobytes())
    return h.hexdigest()[:16]


def items_digest(items: Sequence[dict]) -> str:
    h = hashlib.sha1()
    for it in items:
        h.update(json.dumps([it["id"], it.get("group"), it["prompt"], it["answer"], it["images"]],
                            sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- cache
class FeatureCache:
    """A feature cache directory, opened read-only. `features` is a read-only memmap; `iter_blocks` streams it
    with one short-lived memmap per block so resident memory stays at one block whatever the cache size."""

    def __init__(self, directory: str | Path):
        d = Path(directory)
        f = d / INDEX_FILE
        if not f.is_file():
            raise MidtrainError(f"not a feature cache (no {INDEX_FILE}): {d}")
        try:
            self.index = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise MidtrainError(f"{f}: invalid JSON: {e}") from None
        if self.index.get("format") != FORMAT:
            raise MidtrainError(f"{f}: not a mid-training feature cache (format {self.index.get('format')!r})")
        self.dir = d
        self.n = int(self.index["n"])
        self.dim = int(self.index["dim"])
        expect = self.n * self.dim * 4
        size = (d / FEATURES_FILE).stat().st_size if (d / FEATURES_FILE).is_file() else -1
        if size != expect:
            raise MidtrainError(f"{d / FEATURES_FILE}: {size} bytes, expected {expect} (n={self.n}, dim={self.dim})")
        self._rows: list[dict] | None = None

    @property
    def complete(self) -> bool:
        return bool(self.index.get("complete"))

    def require_complete(self) -> "FeatureCache":
        if not self.complete:
            done = _read_progress(self.dir)
            raise MidtrainError(f"{self.dir}: feature extraction is unfinished ({done}/{self.n} rows); run "
                                "`etc-vla midtrain features` again to resume it")
        return self

    @property
    def rows(self) -> list[dict]:
        if self._rows is None:
            rows = []
            with open(self.dir / ROWS_FILE, encoding="utf-8") as fh:
                for line in fh:
                    if line.strip():
                        rows.append(json.loads(line))
            if len(rows) != self.n:
                raise MidtrainError(f"{self.dir / ROWS_FILE}: {len(rows)} rows, index says {self.n}")
            self._rows = rows
        return self._rows

    @property
    def ids(self) -> list[str]:
        return [r["id"] for r in self.rows]

    @property
    def groups(self) -> np.ndarray:
        return np.asarray([r.get("group", "") for r in self.rows], dtype=object)

    @property
    def features(self) -> np.memmap:
        return np.memmap(self.dir / FEATURES_FILE, dtype=np.float32, mode="r", shape=(self.n, self.dim))

    def load(self, rows: Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """Features in memory (all rows, or the given row indices)."""
        mm = self.features
        out = np.array(mm if rows is None else mm[np.asarray(rows, dtype=np.int64)], dtype=np.float32)
        del mm
        return out

    def iter_blocks(self, block: int = 65536) -> Iterator[tuple[int, np.ndarray]]:
        """(start row, float32 array copy of rows [start, start + block)) over the whole cache."""
        if block < 1:
            raise MidtrainError(f"block must be >= 1, got {block}")
        row_bytes = self.dim * 4
        for s in range(0, self.n, block):
            m = min(block, self.n - s)
            mm = np.memmap(self.dir / FEATURES_FILE, dtype=np.float32, mode="r", offset=s * row_bytes,
                           shape=(m, self.dim))
            arr = np.array(mm)
            del mm  # unmaps: pages of earlier blocks do not stay resident
            yield s, arr

    def nll(self) -> tuple[np.ndarray, np.ndarray]:
        """(answer NLL sum, answer token count) per row."""
        p = self.dir / NLL_FILE
        if not p.is_file():
            raise MidtrainError(f"{self.dir}: no {NLL_FILE} (this cache has no perplexities)")
        a = np.array(np.memmap(p, dtype=np.float32, mode="r", shape=(self.n, 2)))
        return a[:, 0].astype(np.float64), a[:, 1].astype(np.float64)

    def mean_nll(self) -> np.ndarray:
        """Per-row mean answer NLL (log perplexity)."""
        s, n = self.nll()
        return s / np.maximum(n, 1.0)

    def group_rows(self) -> dict[str, np.ndarray]:
        g = self.groups
        return {k: np.flatnonzero(g == k) for k in sorted(set(g.tolist()))}


def _read_progress(d: Path) -> int:
    p = d / PROGRESS_FILE
    if not p.is_file():
        return 0
    try:
        return int(json.loads(p.read_text())["rows_done"])
    except (json.JSONDecodeError, KeyError, ValueError):
        return 0


def create_cache(out_dir: str | Path, rows: Sequence[dict], dim: int, meta: dict | None = None,
                 with_nll: bool = True) -> Path:
    """Allocate an empty cache (zeros) for len(rows) rows of `dim` floats; index.json is written last, with
    complete = False."""
    from etc_ros.core.io import atomic_write, atomic_write_json

    d = Path(out_dir)
    d.mkdir(parents=True, exist_ok=True)
    n = len(rows)
    if n < 1 or dim < 1:
        raise MidtrainError(f"a feature cache needs n >= 1 rows and dim >= 1 (got {n}, {dim})")

    def w(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps({"id": r["id"], "group": r.get("group", "")}, ensure_ascii=False) + "\n")

    atomic_write(d / ROWS_FILE, w)
    for name, shape in ((FEATURES_FILE, (n, dim)), (NLL_FILE, (n, 2))):
        if name == NLL_FILE and not with_nll:
            continue
        with open(d / name, "wb") as fh:  # sparse allocation of the right size
            fh.truncate(int(np.prod(shape)) * 4)
    atomic_write_json(d / PROGRESS_FILE, {"rows_done": 0})
    idx = {"format": FORMAT, "n": n, "dim": int(dim), "dtype": "float32", "pooling": POOLING, "complete": False}
    idx.update(meta or {})
    atomic_write_json(d / INDEX_FILE, idx)
    return d


def mark_complete(out_dir: str | Path, extra: dict | None = None) -> None:
    from etc_ros.core.io import atomic_write_json

    d = Path(out_dir)
    idx = json.loads((d / INDEX_FILE).read_text())
    idx.update(extra or {})
    idx["complete"] = True
    atomic_write_json(d / INDEX_FILE, idx)


# ---------------------------------------------------------------------------------------------- extraction
def _images_for(item: dict, resolver, n_views: int):
    views = [resolver.one(ref, item) for ref in item["images"][:n_views]]
    while len(views) < n_views:  # one-image candidates on a multi-view model: the image fills every view
        views.append(views[-1])
    return views[0] if n_views == 1 else views


def build_example(processor, item: dict, images) -> dict:
    """The recipe's ETC example of an item; a question too long for the model's max_length is shortened (first
    question only, then cut) rather than failing the whole extraction."""
    from etc_ros.core.errors import ModelError

    q = item["prompt"]
    for _ in range(12):
        try:
            return processor.build_etc_example(q, item["answer"], images)
        except ModelError as e:
            if "exceeds max_length" not in str(e) or len(q) < 8:
                raise MidtrainError(f"item {item['id']!r}: {e}") from None
            q = q.split("\n")[0] if "\n" in q else q[: len(q) // 2]
    raise MidtrainError(f"item {item['id']!r}: question does not fit the model's max_length")


def pool_hidden(hidden, input_ids, attention_mask, image_id: int):
    """(B, L, E) last hidden states -> (B, 2E): [mean over image tokens ; mean over text tokens]."""
    import torch

    am = attention_mask.bool()
    img = (input_ids == image_id) & am
    txt = am & ~img
    h = hidden.float()

    def masked_mean(m):
        w = m.unsqueeze(-1).float()
        return (h * w).sum(1) / w.sum(1).clamp(min=1.0)

    return torch.cat([masked_mean(img), masked_mean(txt)], dim=-1)


def answer_nll(policy, hidden, labels):
    """Per-row (sum of next-token NLL over the answer tokens, number of answer tokens)."""
    import torch
    import torch.nn.functional as F

    from etc_ros.core.processor import IGNORE_INDEX

    h = hidden[:, :-1]
    tgt = labels[:, 1:]
    sel = tgt != IGNORE_INDEX
    B = hidden.shape[0]
    tot = torch.zeros(B, dtype=torch.float64)
    cnt = sel.sum(1).to(torch.float64).cpu()
    if bool(sel.any()):
        logits = policy.logits(h[sel]).float()
        nll = F.cross_entropy(logits, tgt[sel], reduction="none").double().cpu()
        rows = torch.nonzero(sel, as_tuple=False)[:, 0].cpu()
        tot.index_add_(0, rows, nll)
    return tot.numpy(), cnt.numpy()


def extract_features(policy, items: Sequence[dict], out_dir: str | Path, batch_size: int = 16,
                     max_batches: int | None = None, progress: bool = True, overwrite: bool = False,
                     store=None, model_info: dict | None = None) -> FeatureCache:
    """Features (+ answer NLL) of `items` (pool.pool_items / pool.robot_items) into a cache at out_dir.

    Resumes an unfinished cache made from the same items and model; a cache of other items / another model is an
    error unless overwrite=True. max_batches stops after that many batches in this call (the cache is then
    incomplete; call again to resume). Returns the cache (complete or not)."""
    import shutil

    import torch
    from tqdm import tqdm

    from etc_ros.core.io import atomic_write_json
    from etc_training.recipe.data import EpisodeStore, RecordImages

    if batch_size < 1:
        raise MidtrainError(f"batch_size must be >= 1, got {batch_size}")
    if not items:
        raise MidtrainError("no items to extract features from")
    d = Path(out_dir)
    proc = policy.processor
    E = int(policy.backbone.config.text_config.hidden_size)
    dim = 2 * E
    want = {"pooling": POOLING, "dim": dim, "n": len(items), "items_digest": items_digest(items),
            "model_digest": model_digest(policy)}
    if (d / INDEX_FILE).is_file():
        try:
            old = json.loads((d / INDEX_FILE).read_text())
        except json.JSONDecodeError:
            old = {}
        same = all(old.get(k) == v for k, v in want.items())
        if not same:
            if not overwrite:
                diff = [k for k, v in want.items() if old.get(k) != v]
                raise MidtrainError(f"{d} holds features of other items / another model (differs in {diff}); "
                                    "use another directory or overwrite")
            shutil.rmtree(d)
        elif old.get("complete"):
            return FeatureCache(d)
        else:
            batch_size = int(old["batch_size"])  # the batch partition of the interrupted run
    if not (d / INDEX_FILE).is_file():
        meta = dict(want, batch_size=int(batch_size), model=dict(model_info or {}),
                    groups=sorted({str(it.get("group", "")) for it in items}))
        create_cache(d, items, dim, meta)
    done = _read_progress(d)
    n = len(items)
    n_batches = (n + batch_size - 1) // batch_size
    first = done // batch_size
    resolver = RecordImages(store or EpisodeStore(cache=8), (), 1)
    n_views = int(proc.config.n_views)
    feats = np.memmap(d / FEATURES_FILE, dtype=np.float32, mode="r+", shape=(n, dim))
    nllm = np.memmap(d / NLL_FILE, dtype=np.float32, mode="r+", shape=(n, 2))
    t0 = time.perf_counter()
    ran = 0
    was_training = policy.training
    policy.eval()
    try:
        with torch.no_grad(), tqdm(total=n_batches, initial=first, desc=f"features {d.name}", unit="batch",
                                   disable=not progress) as bar:
            for b in range(first, n_batches):
                if max_batches is not None and ran >= max_batches:
                    break
                lo, hi = b * batch_size, min(n, (b + 1) * batch_size)
                exs = [build_example(proc, it, _images_for(it, resolver, n_views)) for it in items[lo:hi]]
                batch = policy.to_torch(proc.collate(exs))
                out = policy.run_backbone(batch)
                f = pool_hidden(out.hidden_states, batch["input_ids"], batch["attention_mask"], proc.image_id)
                s, c = answer_nll(policy, out.hidden_states, batch["labels"])
                feats[lo:hi] = f.cpu().numpy()
                nllm[lo:hi, 0] = s
                nllm[lo:hi, 1] = c
                feats.flush()
                nllm.flush()
                atomic_write_json(d / PROGRESS_FILE, {"rows_done": hi})
                ran += 1
                bar.update(1)
    finally:
        policy.train(was_training)
        del feats, nllm
    wall = time.perf_counter() - t0
    rows_done = _read_progress(d)
    if rows_done >= n:
        idx = json.loads((d / INDEX_FILE).read_text())
        prev = float(idx.get("extract_s", 0.0))
        mark_complete(d, {"extract_s": round(prev + wall, 3),
                          "candidates_per_s_last_call": round(ran * batch_size / wall, 2) if wall > 0 else None})
    else:
        idx = json.loads((d / INDEX_FILE).read_text())
        idx["extract_s"] = round(float(idx.get("extract_s", 0.0)) + wall, 3)
        atomic_write_json(d / INDEX_FILE, idx)
    return FeatureCache(d)


def extract_all(policy, named_items: dict[str, Sequence[dict]], out_dir: str | Path, **kw) -> dict[str, FeatureCache]:
    """One cache per name under out_dir (e.g. {"pool": ..., "robot": ...})."""
    return {name: extract_features(policy, items, Path(out_dir) / name, **kw) for name, items in named_items.items()}


def feature_info(cache: FeatureCache) -> dict[str, Any]:
    g = cache.group_rows()
    return {"dir": str(cache.dir), "n": cache.n, "dim": cache.dim, "complete": cache.complete,
            "pooling": cache.index.get("pooling"), "groups": {k: int(len(v)) for k, v in g.items()},
            "extract_s": cache.index.get("extract_s")}


__all__ = ["FeatureCache", "extract_features", "extract_all", "load_model", "model_digest", "items_digest",
           "create_cache", "mark_complete", "pool_hidden", "answer_nll", "build_example", "POOLING", "FORMAT"]
