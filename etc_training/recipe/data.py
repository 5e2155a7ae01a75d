"""Training data of the recipe: action chunks from episodes, ETC / general VLM records, and the samplers that mix
them at fixed ratios. numpy only (the processor turns records into model inputs; the trainer makes tensors).

    store = EpisodeStore(cache=64)
    actions = ActionChunkDataset(store, "runs/episodes", splits=["train"], horizon=10, cameras=["primary"])
    etc = load_language_source(SourceConfig(kind="etc", path="runs/etc", splits=["train"]), store)
    data = StageData(processor, actions, [(etc, 1.0)], action_batch=32, etc_batch=8, seed=0)
    batches = data.next(rank=0, world=1)     # {"action": collated numpy batch, "etc": ..., "counts": {...}}
    state = data.state_dict(); data.load_state_dict(state)   # exact continuation after a resume

Determinism: every sampler's position is a small JSON-able state (epoch + offset, numpy bit-generator state,
allocator credits). All ranks draw the same global batch and each rank keeps its shard (rank::world), so the
sampler state is identical everywhere and one copy in the checkpoint restores all ranks.

Mixing ratios are exact in the long run: `RatioAllocator` splits every batch among sources by error diffusion
(each source's running credit w_i * n_total minus what it got stays within one sample).
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from etc_ros.data.schema import image_key
from etc_training.recipe.config import RecipeError, SourceConfig


# ---------------------------------------------------------------------------------------------- episode store
class EpisodeStore:
    """Opens etc_ros.data datasets once and keeps recently used decoded episodes in memory (LRU)."""

    def __init__(self, cache: int = 64, frame_size: int = 0):
        self.cache = max(0, int(cache))
        self.frame_size = int(frame_size)  # > 0: frames come from a FrameCache at this (model) resolution
        self._readers: dict[str, Any] = {}
        self._episodes: OrderedDict = OrderedDict()
        self._frame_caches: dict[tuple[str, str], Any] = {}

    def frame_cache(self, root: str | Path, camera: str):
        from etc_training.recipe.frame_cache import FrameCache

        key = (str(Path(root).resolve()), str(camera))
        fc = self._frame_caches.get(key)
        if fc is None:
            fc = FrameCache.open(key[0], camera, self.frame_size, reader=self.reader(root))
            self._frame_caches[key] = fc
        return fc

    def reader(self, root: str | Path):
        from etc_ros.data import DatasetReader

        key = str(Path(root).resolve())
        r = self._readers.get(key)
        if r is None:
            if not Path(key).is_dir():
                raise RecipeError(f"episode dataset not found: {root}")
            r = DatasetReader(key)
            self._readers[key] = r
        return r

    def episode(self, root: str | Path, i: int, images: bool = True):
        key = (str(Path(root).resolve()), int(i), bool(images))
        ep = self._episodes.get(key)
        if ep is not None:
            self._episodes.move_to_end(key)
            return ep
        hit = self._episodes.get((key[0], key[1], True)) if not images else None
        if hit is not None:
            return hit
        ep = self.reader(root).load_episode(int(i), images=images)
        if self.cache:
            self._episodes[key] = ep
            while len(self._episodes) > self.cache:
                self._episodes.popitem(last=False)
        return ep

    def image(self, root: str | Path, episode: int, frame: int, camera: str) -> np.ndarray:
        """One RGB frame (H, W, 3) uint8 (frame_size x frame_size with the frame cache)."""
        if self.frame_size > 0:
            return self.frame_cache(root, camera).frame(episode, frame)
        if self.cache:
            ep = self.episode(root, episode, images=True)
            if camera not in ep.images:
                raise RecipeError(f"{root}: episode {episode} has no camera {camera!r} (has {sorted(ep.images)})")
            frames = ep.images[camera]
            if not 0 <= int(frame) < len(frames):
                raise RecipeError(f"{root}: episode {episode} has frames 0..{len(frames) - 1}, asked for {frame}")
            return np.asarray(frames[int(frame)])
        fr = self.reader(root).episode_frame(int(episode), int(frame))
        k = image_key(camera)
        if k not in fr:
            raise RecipeError(f"{root}: episode {episode} has no camera {camera!r}")
        return np.asarray(fr[k])


# ---------------------------------------------------------------------------------------------- action chunks
def chunk_at(actions: np.ndarray, t: int, horizon: int) -> np.ndarray:
    """actions[t : t + horizon]; past the episode end the arm holds still (zero deltas) and the gripper keeps
    its last command."""
    T, D = actions.shape
    out = np.empty((horizon, D), dtype=np.float32)
    n = max(0, min(horizon, T - t))
    out[:n] = actions[t:t + n]
    if n < horizon:
        out[n:] = 0.0
        out[n:, -1] = actions[-1, -1]
    return out


GROUNDING_TEMPLATES = ("where is the {name}?", "pick up the {name}", "point to the {name}")


class ActionChunkDataset:
    """Every frame t of every episode in `splits` -> (images of `cameras` at t, state_t, instruction,
    actions[t : t + H])."""

    def __init__(self, store: EpisodeStore, root: str | Path, splits: Sequence[str], horizon: int,
                 cameras: Sequence[str] | None = None, early_frames: int = 0, early_factor: int = 1):
        """early_frames / early_factor: the first `early_frames` frames of every episode appear `early_factor`
        times in the index (sampled that much more often). The first chunk of an episode decides where the
        gripper goes; measured, a uniformly sampled policy localized objects near the gripper (most frames) to
        ~1 px but the object seen from the start pose (1 frame in 11) to ~11 px."""
        self.store = store
        self.root = str(Path(root).resolve())
        self.splits = list(splits)
        self.horizon = int(horizon)
        reader = store.reader(root)
        want = list(cameras or [])
        have = list(reader.cameras)
        if not want:
            want = have[:1]
        missing = [c for c in want if c not in have]
        if missing:
            raise RecipeError(f"{root}: cameras {missing} are not in the dataset (cameras: {have})")
        self.cameras = want
        self.episodes: list[int] = []
        for s in self.splits:
            self.episodes += reader.episodes(s)
        self.episodes = sorted(set(self.episodes))
        self._actions: dict[int, np.ndarray] = {}
        self._states: dict[int, np.ndarray] = {}
        self._instr: dict[int, str] = {}
        index = []
        for e in self.episodes:
            ep = store.episode(root, e, images=False)
            a = np.asarray(ep.action, dtype=np.float32)
            self._actions[e] = a
            self._states[e] = np.asarray(ep.state, dtype=np.float32)
            self._instr[e] = ep.instruction
            index += [(e, t) for t in range(len(a))]
            if early_factor > 1 and early_frames > 0:
                index += [(e, t) for t in range(min(early_frames, len(a)))] * (int(early_factor) - 1)
        self.index = np.asarray(index, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return int(len(self.index))

    def chunk(self, i: int) -> np.ndarray:
        e, t = (int(v) for v in self.index[i])
        return chunk_at(self._actions[e], t, self.horizon)

    def state(self, i: int) -> np.ndarray:
        e, t = (int(v) for v in self.index[i])
        return self._states[e][t]

    def all_chunks(self) -> tuple[np.ndarray, np.ndarray]:
        """(chunks (N, H, D), states (N, S)) of the whole dataset (normalization stats, FAST fitting)."""
        if not len(self):
            return np.zeros((0, self.horizon, 7), np.float32), np.zeros((0, 7), np.float32)
        return (np.stack([self.chunk(i) for i in range(len(self))]),
                np.stack([self.state(i) for i in range(len(self))]))

    def item(self, i: int) -> dict:
        e, t = (int(v) for v in self.index[i])
        imgs = [self.store.image(self.root, e, t, c) for c in self.cameras]
        out = {"images": imgs if len(imgs) > 1 else imgs[0], "state": self._states[e][t],
               "instruction": self._instr[e], "actions": chunk_at(self._actions[e], t, self.horizon),
               "episode": e, "frame": t}
        if self.store.frame_size > 0:  # object / target image points of the first camera (grounding target)
            out["grounding"] = self.store.frame_cache(self.root, self.cameras[0]).points(e, t)
        return out

    def grounding_query(self, processor, i: int, rng: np.random.Generator, shift: int = 0) -> dict | None:
        """A grounding question about frame i (continuous ETC scene grounding): one object of the scene, named in
        the prompt ("where is the {name}?" / "pick up the {name}" / "point to the {name}"), distractors as often as
        the target, with the normalized image point of that object as the target of the head's grounding slot
        0-1. None when the frame has no uniquely named object in view (or no frame cache)."""
        from etc_training.recipe.frame_cache import random_shift

        if self.store.frame_size <= 0:
            return None
        e, t = (int(v) for v in self.index[i])
        objs = self.store.frame_cache(self.root, self.cameras[0]).scene_objects(e, t)
        if not objs:
            return None
        name, pt = objs[int(rng.integers(len(objs)))]
        template = GROUNDING_TEMPLATES[int(rng.integers(len(GROUNDING_TEMPLATES)))]
        img = self.store.image(self.root, e, t, self.cameras[0])
        img, dx, dy = random_shift(np.asarray(img), shift, rng)
        h, w = img.shape[:2]
        g = np.full(6, np.nan, dtype=np.float32)
        g[:2] = pt + np.asarray([2 * dx / w, 2 * dy / h], dtype=np.float32)
        ex = processor.build_inference_prompt(img, self._states[e][t], template.format(name=name))
        ex["kind"] = "grounding"
        ex["grounding"] = g
        return ex

    def example(self, processor, i: int, rng: np.random.Generator | None = None, shift: int = 0) -> dict:
        """Training example of item i; with `rng` and `shift` > 0 every view is randomly shifted by up to
        `shift` pixels (the grounding points move with the first view's content)."""
        from etc_training.recipe.frame_cache import random_shift

        it = self.item(i)
        g = it.get("grounding")
        if rng is not None and shift > 0:
            views = it["images"] if isinstance(it["images"], list) else [it["images"]]
            out_views = []
            for k, v in enumerate(views):
                v2, dx, dy = random_shift(np.asarray(v), shift, rng)
                out_views.append(v2)
                if k == 0 and g is not None:
                    h, w = v.shape[:2]
                    g = g + np.asarray([2 * dx / w, 2 * dy / h] * (len(g) // 2), dtype=np.float32)
            it["images"] = out_views if len(out_views) > 1 else out_views[0]
        ex = processor.build_action_example(it["images"], it["state"], it["instruction"], it["actions"])
        if g is not None:
            ex["grounding"] = np.asarray(g, dtype=np.float32)
        return ex

    def inference_prompt(self, processor, i: int) -> dict:
        it = self.item(i)
        return processor.build_inference_prompt(it["images"], it["state"], it["instruction"])


# ---------------------------------------------------------------------------------------------- language records
@dataclass
class LanguageSource:
    """A list of question/answer records with image references (ETC or general VLM)."""

    name: str
    kind: str
    records: list[dict]
    base_dir: str  # relative paths in the records resolve against this directory

    def __len__(self) -> int:
        return len(self.records)


def _conversation_qa(rec: dict, where: str) -> tuple[str, str]:
    conv = rec.get("conversations")
    if isinstance(conv, list) and conv:
        q = a = None
        for turn in conv:
            if not isinstance(turn, dict):
                continue
            who = str(turn.get("from", turn.get("role", ""))).lower()
            val = turn.get("value", turn.get("content"))
            if who in ("human", "user") and q is None:
                q = val
            elif who in ("gpt", "assistant", "model") and q is not None and a is None:
                a = val
        if isinstance(q, str) and isinstance(a, str):
            return q.replace("<image>", "").strip(), a
        raise RecipeError(f"{where}: 'conversations' needs a human turn followed by a model turn")
    q = rec.get("prompt", rec.get("question"))
    a = rec.get("answer")
    if not isinstance(q, str) or not isinstance(a, str):
        raise RecipeError(f"{where}: a record needs 'prompt' (or 'question') and 'answer' strings, "
                          f"or 'conversations'")
    return q, a


def normalize_record(rec: Any, where: str, kind: str) -> dict:
    """A general VLM / ETC JSONL record -> {"prompt", "answer", "images": [ref...], "subtype", "split", ...}.

    Image references: {"episode", "frame", "camera", "dataset"} (a frame of an etc_ros.data dataset, as ETC
    records hold) or {"path": "file.png"} / a plain path string (an image file)."""
    if not isinstance(rec, dict):
        raise RecipeError(f"{where}: a record must be a JSON object, got {type(rec).__name__}")
    q, a = _conversation_qa(rec, where)
    imgs = rec.get("images", rec.get("image"))
    if imgs is None:
        raise RecipeError(f"{where}: the record has no image ('images' or 'image')")
    if isinstance(imgs, (str, dict)):
        imgs = [imgs]
    if not isinstance(imgs, list):
        raise RecipeError(f"{where}: bad image reference {imgs!r}: use a path, {{'path': ...}} or a list of them")
    refs = []
    for im in imgs:
        if isinstance(im, str):
            refs.append({"path": im})
        elif isinstance(im, dict) and ("path" in im or {"episode", "frame", "camera"} <= set(im)):
            refs.append(im)
        else:
            raise RecipeError(f"{where}: bad image reference {im!r}: use {{'path': ...}} or "
                              "{'episode', 'frame', 'camera', 'dataset'}")
    if not refs:
        raise RecipeError(f"{where}: the record's image list is empty")
    out = dict(rec)
    out.update(prompt=q, answer=a, images=refs)
    out.setdefault("split", "train")
    if kind == "general":
        out.setdefault("subtype", "general")
    return out


def _jsonl_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.rglob("*.jsonl"))
        if not files:
            raise RecipeError(f"{path}: no *.jsonl files in this directory")
        return files
    if not path.is_file():
        raise RecipeError(f"data source not found: {path}")
    return [path]


def read_jsonl(path: str | Path, kind: str = "general") -> list[dict]:
    from etc_ros.core.io import iter_jsonl

    out = []
    for f in _jsonl_files(Path(path)):
        for ln, rec in iter_jsonl(f, RecipeError):
            rec = normalize_record(rec, f"{f}:{ln}", kind)
            rec["_base_dir"] = str(f.parent)
            out.append(rec)
    return out


def load_language_source(src: SourceConfig, default_etc: str | None = None,
                         default_general: Sequence[str] = ()) -> LanguageSource:
    """Records of one stage source, filtered by split / category."""
    if src.kind == "etc":
        path = src.path or default_etc
        if not path:
            raise RecipeError(f"ETC source {src.name!r} has no path and data.etc is not set")
        p = Path(path)
        if p.is_dir() and (p / "index.json").is_file():
            from etc_training.etc import load_samples

            recs = load_samples(p, src.splits or None, src.categories or None)
            base = str(p)
        else:  # plain JSONL file(s) of ETC records
            recs = read_jsonl(p, "etc")
            base = str(p if p.is_dir() else p.parent)
            if src.splits:
                recs = [r for r in recs if r.get("split") in src.splits]
            if src.categories:
                recs = [r for r in recs if r.get("category") in src.categories]
        for k, r in enumerate(recs):
            if "_base_dir" not in r:
                r.update(normalize_record(r, f"{path} record {k}", "etc"))
                r["_base_dir"] = base
    elif src.kind == "general":
        paths = [src.path] if src.path else list(default_general)
        if not paths:
            raise RecipeError(f"general source {src.name!r} has no path and data.general is empty")
        recs = []
        for p in paths:
            recs += read_jsonl(p, "general")
        if src.splits:
            recs = [r for r in recs if r.get("split") in src.splits]
        base = str(Path(paths[0]).parent)
    else:
        raise RecipeError(f"unknown source kind {src.kind!r}; use 'etc' or 'general'")
    if not recs:
        raise RecipeError(f"source {src.name!r} ({src.kind}, path {src.path or default_etc or list(default_general)},"
                          f" splits {src.splits or 'all'}) has no records")
    return LanguageSource(src.name, src.kind, recs, base)


class RecordImages:
    """Resolves a record's image references to (H, W, 3) uint8 arrays, in the model's view order."""

    def __init__(self, store: EpisodeStore, cameras: Sequence[str] = (), n_views: int = 1):
        self.store = store
        self.cameras = list(cameras)
        self.n_views = int(n_views)
        self._files: OrderedDict = OrderedDict()

    def _dataset_root(self, ref: dict, rec: dict) -> str:
        ds = ref.get("dataset")
        if not ds or ds == "memory":
            raise RecipeError(f"record {rec.get('id', '?')}: image reference has no dataset path")
        p = Path(ds)
        if not p.is_absolute():
            p = (Path(rec.get("_base_dir", ".")) / p).resolve()
        return str(p)

    def _file(self, path: Path) -> np.ndarray:
        from PIL import Image

        key = str(path)
        hit = self._files.get(key)
        if hit is not None:
            return hit
        if not path.is_file():
            raise RecipeError(f"image file not found: {path}")
        try:
            with Image.open(path) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as e:  # noqa: BLE001
            raise RecipeError(f"{path}: cannot read image ({e})") from None
        self._files[key] = arr
        while len(self._files) > 256:
            self._files.popitem(last=False)
        return arr

    def one(self, ref: dict, rec: dict) -> np.ndarray:
        if "path" in ref:
            p = Path(ref["path"])
            if not p.is_absolute():
                p = Path(rec.get("_base_dir", ".")) / p
            return self._file(p)
        return self.store.image(self._dataset_root(ref, rec), int(ref["episode"]), int(ref["frame"]),
                                str(ref["camera"]))

    def __call__(self, rec: dict):
        refs = rec["images"]
        if self.n_views == 1:
            return self.one(refs[0], rec)
        # several views: the referenced camera fills its slot, the other slots come from the same frame
        first = refs[0]
        views = []
        by_cam = {r.get("camera"): r for r in refs if "camera" in r}
        for k, cam in enumerate(self.cameras[: self.n_views]):
            if cam in by_cam:
                views.append(self.one(by_cam[cam], rec))
            elif "episode" in first:
                views.append(self.one({**first, "camera": cam}, rec))
            elif k < len(refs):
                views.append(self.one(refs[k], rec))
            else:
                raise RecipeError(f"record {rec.get('id', '?')}: has {len(refs)} image(s), the model needs "
                                  f"{self.n_views} views")
        return views


# ---------------------------------------------------------------------------------------------- samplers
class EpochSampler:
    """Shuffled passes over range(n); pass e uses permutation default_rng([seed, e]). State: {epoch, pos}."""

    def __init__(self, n: int, seed: int = 0):
        if n <= 0:
            raise RecipeError("cannot sample from an empty data source")
        self.n, self.seed = int(n), int(seed)
        self.epoch, self.pos = 0, 0
        self._perm = self._make_perm()

    def _make_perm(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(self.n)

    def draw(self, k: int) -> np.ndarray:
        out = []
        while k > 0:
            take = min(k, self.n - self.pos)
            out.append(self._perm[self.pos:self.pos + take])
            self.pos += take
            k -= take
            if self.pos >= self.n:
                self.epoch += 1
                self.pos = 0
                self._perm = self._make_perm()
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)

    def state_dict(self) -> dict:
        return {"type": "epoch", "n": self.n, "seed": self.seed, "epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: Mapping) -> None:
        if int(s["n"]) != self.n:
            raise RecipeError(f"sampler state is for {s['n']} samples, this source has {self.n} (data changed?)")
        self.seed, self.epoch, self.pos = int(s["seed"]), int(s["epoch"]), int(s["pos"])
        self._perm = self._make_perm()


class MixtureSampler:
    """ETC records drawn through etc_training.etc.EtcMixture (group / subtype weights)."""

    def __init__(self, records: Sequence[dict], groups: Mapping[str, float] | None, seed: int = 0):
        from etc_training.etc import EtcMixture

        self.n = len(records)
        self.mix = EtcMixture(records, dict(groups) if groups else None, seed=seed)

    def draw(self, k: int) -> np.ndarray:
        return self.mix.sample_indices(int(k))

    def state_dict(self) -> dict:
        return {"type": "mixture", "n": self.n, "rng": self.mix._rng.bit_generator.state}

    def load_state_dict(self, s: Mapping) -> None:
        if int(s["n"]) != self.n:
            raise RecipeError(f"sampler state is for {s['n']} records, this source has {self.n} (data changed?)")
        self.mix._rng.bit_generator.state = s["rng"]


class RatioAllocator:
    """Splits a batch of n among sources with weights w (normalised) by error diffusion: credit_i += w_i * n,
    the n units go to the largest credits (floor first, then largest remainders, ties by index), credit_i -=
    given_i. Every source's cumulative count stays within one sample of w_i * total."""

    def __init__(self, weights: Sequence[float]):
        w = np.asarray([max(0.0, float(x)) for x in weights], dtype=np.float64)
        if w.size == 0 or w.sum() <= 0:
            raise RecipeError("mixing weights must contain a positive value")
        self.w = w / w.sum()
        self.credit = np.zeros(len(w), dtype=np.float64)

    def split(self, n: int) -> np.ndarray:
        self.credit += self.w * n
        give = np.floor(self.credit + 1e-9).astype(np.int64)
        give = np.maximum(give, 0)
        excess = int(give.sum()) - n
        if excess > 0:  # floating point: take back from the smallest credits
            for i in np.argsort(self.credit - give, kind="stable")[:excess]:
                give[i] -= 1
        rest = n - int(give.sum())
        if rest > 0:
            frac = self.credit - give
            order = sorted(range(len(frac)), key=lambda i: (-frac[i], i))
            for i in order[:rest]:
                give[i] += 1
        self.credit -= give
        return give

    def state_dict(self) -> dict:
        return {"credit": [float(c) for c in self.credit]}

    def load_state_dict(self, s: Mapping) -> None:
        c = np.asarray(s["credit"], dtype=np.float64)
        if c.shape != self.credit.shape:
            raise RecipeError("mixing state does not match the number of sources (config changed?)")
        self.credit = c


# ---------------------------------------------------------------------------------------------- stage data
def shard(items: Sequence[Any], rank: int, world: int) -> list:
    return list(items)[rank::world]


class StageData:
    """One stage's batches: an action batch (from `actions`) and an ETC batch mixed from `sources`
    [(LanguageSource, weight), ...]. next() returns collated numpy batches for this rank."""

    def __init__(self, processor, actions: ActionChunkDataset | None, sources: Sequence[tuple[LanguageSource, float]],
                 action_batch: int, etc_batch: int, seed: int, images: RecordImages | None = None,
                 etc_groups: Sequence[Mapping[str, float] | None] | None = None, augment_shift: int = 0,
                 grounding_batch: int = 0):
        self.processor = processor
        self.grounding_batch = int(grounding_batch)
        if self.grounding_batch > 0 and (actions is None or len(actions) == 0):
            raise RecipeError("the stage asks for a grounding batch but has no action data (its frames are used)")
        self.augment_shift = int(augment_shift)
        self.aug_rng = np.random.default_rng([int(seed), 0xA06])
        self.actions = actions
        self.action_batch = int(action_batch)
        self.etc_batch = int(etc_batch)
        if self.action_batch > 0 and (actions is None or len(actions) == 0):
            raise RecipeError("the stage asks for an action batch but its action data is empty")
        self.action_sampler = EpochSampler(len(actions), seed) if self.action_batch > 0 else None
        self.sources = [s for s, _ in sources]
        weights = [w for _, w in sources]
        self.source_samplers: list[Any] = []
        groups = list(etc_groups or [None] * len(self.sources))
        for k, src in enumerate(self.sources):
            sseed = int(np.random.default_rng([seed, 7919, k]).integers(2**31))
            if src.kind == "etc" and all(r.get("subtype") in _known_subtypes() for r in src.records):
                self.source_samplers.append(MixtureSampler(src.records, groups[k], seed=sseed))
            else:
                self.source_samplers.append(EpochSampler(len(src), sseed))
        self.allocator = RatioAllocator(weights) if (self.sources and self.etc_batch > 0) else None
        if self.etc_batch > 0 and not self.sources:
            raise RecipeError("the stage asks for an ETC batch but has no ETC sources")
        self.images = images or RecordImages(EpisodeStore(), (), 1)
        self.counts = {src.name: 0 for src in self.sources}
        self.counts["action"] = 0

    # -------------------------------------------------------------- drawing (global, identical on every rank)
    def draw(self) -> tuple[list[int], list[tuple[int, int]]]:
        """Global batch as indices: action indices, [(source index, record index)] for the ETC batch."""
        a_idx: list[int] = []
        if self.action_batch > 0:
            a_idx = [int(i) for i in self.action_sampler.draw(self.action_batch)]
        e_idx: list[tuple[int, int]] = []
        if self.etc_batch > 0:
            per = self.allocator.split(self.etc_batch)
            for k, c in enumerate(per):
                if c:
                    e_idx += [(k, int(i)) for i in self.source_samplers[k].draw(int(c))]
        self.counts["action"] += len(a_idx)
        for k, _ in e_idx:
            self.counts[self.sources[k].name] += 1
        return a_idx, e_idx

    def etc_example(self, k: int, i: int) -> dict:
        rec = self.sources[k].records[i]
        return self.processor.build_etc_example(rec["prompt"], rec["answer"], self.images(rec))

    def next(self, rank: int = 0, world: int = 1) -> dict:
        a_idx, e_idx = self.draw()
        out: dict[str, Any] = {"action": None, "etc": None,
                               "n_action": len(a_idx), "n_etc": len(e_idx),
                               "etc_sources": [self.sources[k].name for k, _ in e_idx]}
        a_loc, e_loc = shard(a_idx, rank, world), shard(e_idx, rank, world)
        if a_loc:
            exs = [self.actions.example(self.processor, i, self.aug_rng, self.augment_shift) for i in a_loc]
            out["action"] = self.processor.collate(exs)
            if all("grounding" in e for e in exs):
                out["action"]["grounding"] = np.stack([e["grounding"] for e in exs]).astype(np.float32)
        if e_loc:
            out["etc"] = self.processor.collate([self.etc_example(k, i) for k, i in e_loc])
        out["grounding"] = None
        if self.grounding_batch > 0:
            g_idx = [int(i) for i in self.aug_rng.integers(0, len(self.actions), self.grounding_batch)]
            exs = [self.actions.grounding_query(self.processor, i, self.aug_rng, self.augment_shift)
                   for i in shard(g_idx, rank, world)]
            exs = [x for x in exs if x is not None]
            if exs:
                out["grounding"] = self.processor.collate(exs)
                out["grounding"]["grounding"] = np.stack([x["grounding"] for x in exs]).astype(np.float32)
                out["n_grounding"] = len(exs)
        return out

    # -------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "action": self.action_sampler.state_dict() if self.action_sampler else None,
            "sources": [s.state_dict() for s in self.source_samplers],
            "allocator": self.allocator.state_dict() if self.allocator else None,
            "counts": dict(self.counts),
            "aug_rng": self.aug_rng.bit_generator.state,
        }

    def load_state_dict(self, s: Mapping) -> None:
        if (s.get("action") is None) != (self.action_sampler is None):
            raise RecipeError("checkpoint data state does not match this stage (action batch changed?)")
        if self.action_sampler is not None:
            self.action_sampler.load_state_dict(s["action"])
        if len(s.get("sources", [])) != len(self.source_samplers):
            raise RecipeError("checkpoint data state has a different number of ETC sources (config changed?)")
        for smp, st in zip(self.source_samplers, s["sources"]):
            smp.load_state_dict(st)
        if self.allocator is not None and s.get("allocator") is not None:
            self.allocator.load_state_dict(s["allocator"])
        self.counts = {k: int(v) for k, v in s.get("counts", self.counts).items()}
        if s.get("aug_rng") is not None:
            self.aug_rng.bit_generator.state = s["aug_rng"]


def _known_subtypes() -> set[str]:
    from etc_training.etc.mixture import SUBTYPE_GROUP

    return set(SUBTYPE_GROUP)


# ---------------------------------------------------------------------------------------------- synthetic data
TRAIN_FAMILIES = ("pick_place", "pick_up", "push")


def make_synthetic_data(out_dir: str | Path, cfg, progress: bool = False) -> tuple[Path, Path]:
    """Tiny self-contained data for the recipe: one episode dataset with splits train / val / target / ood
    (etc_training.etc.synthetic) and the ETC records built from it. Returns (episodes_dir, etc_dir); reuses
    a complete earlier build (marker file)."""
    from etc_ros.core.io import atomic_write_json
    from etc_training.etc import EtcConfig, build_etc
    from etc_training.etc.synthetic import make_episode, write_dataset

    out = Path(out_dir)
    eps_dir, etc_dir = out / "episodes", out / "etc"
    marker = out / "synthetic.json"
    want = {"episodes": cfg.episodes, "val": cfg.val_episodes, "target": cfg.target_episodes,
            "ood": cfg.ood_episodes, "width": cfg.width, "height": cfg.height, "seed": cfg.seed,
            "stride": cfg.etc_stride, "version": 1}
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == want and (etc_dir / "index.json").is_file():
                return eps_dir, etc_dir
        except json.JSONDecodeError:
            pass
    import shutil

    for d in (eps_dir, etc_dir):
        if d.exists():
            shutil.rmtree(d)
    out.mkdir(parents=True, exist_ok=True)
    episodes = []
    s0 = int(cfg.seed) * 10_000
    kw = dict(width=int(cfg.width), height=int(cfg.height))
    for i in range(cfg.episodes):
        episodes.append(make_episode(s0 + i, TRAIN_FAMILIES[i % len(TRAIN_FAMILIES)], split="train", **kw))
    for i in range(cfg.val_episodes):
        episodes.append(make_episode(s0 + 1000 + i, TRAIN_FAMILIES[i % len(TRAIN_FAMILIES)], split="val", **kw))
    for i in range(cfg.target_episodes):
        episodes.append(make_episode(s0 + 2000 + i, "stack", split="target", **kw))
    for i in range(cfg.ood_episodes):
        episodes.append(make_episode(s0 + 3000 + i, ("stack", "pick_place")[i % 2], split="ood", n_distractors=2,
                                     **kw))
    write_dataset(eps_dir, episodes)
    build_etc(eps_dir, etc_dir, EtcConfig(stride=int(cfg.etc_stride), overlays=0, seed=int(cfg.seed)),
              progress=progress, write_extras=False)
    atomic_write_json(marker, want)
    return eps_dir, etc_dir


def splits_present(store: EpisodeStore, root: str | Path) -> set[str]:
    r = store.reader(root)
    return {str(r.episode_meta(i)["split"]) for i in r.episodes()}


def iter_records(sources: Iterable[LanguageSource]) -> Iterable[dict]:
    for s in sources:
        yield from s.records


__all__ = ["EpisodeStore", "ActionChunkDataset", "LanguageSource", "load_language_source", "read_jsonl",
           "normalize_record", "RecordImages", "EpochSampler", "MixtureSampler", "RatioAllocator", "StageData",
           "make_synthetic_data", "chunk_at", "shard", "splits_present"]
