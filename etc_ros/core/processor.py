"""VLAProcessor: the ONE preprocessing path of the VLA, used by training and by the robot runtime.

numpy + PIL + the `tokenizers` library only (no torch, no transformers): the robot's PolicyRuntime imports this
module, training imports the very same code and converts the numpy output to tensors.

Sequence layout (PaliGemma style, prefix-LM):

    [<image>] * (tokens_per_view * n_views)  <bos>  prompt  |  target
    token_type_ids:          0 ...                  0  0 .. |  1 ...       (0 = bidirectional prefix, 1 = causal)
    labels:               -100 ...               -100  -100 |  target ids  (loss on the target only)

- action example: prompt "Task: {instruction}, State: {s_1 ... s_D};\\n" (state quantile-normalized, then one
  of 256 bins over [-1, 1] per dimension), target "Action: " + action tokens + "|" + <eos>.
  Action tokens are the action tokenizer's ids shifted into the reserved block of the VLM vocabulary
  (vlm_id = action_token_offset + token).
- ETC example: prompt "Task: {question};\\n", target "Answer: {answer}" + <eos>.
- inference prompt: the action example up to and including "Action: ", token for token identical to the
  training prefix (same function builds both); the model then decodes action tokens until "|".

Images: uint8 HxWx3 RGB -> resize to image_size x image_size (etc_ros.core.image: PIL bicubic, the one resize
of the project) -> float32 CHW in [-1, 1]
((x / 255 - 0.5) / 0.5, as SigLIP expects).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.action_tokenizer import (
    ACTION_TOKENIZER_FILE,
    ActionTokenizer,
    action_tokenizer_from_dict,
)
from etc_ros.core.errors import ModelError
from etc_ros.core.image import resize_image
from etc_ros.core.normalize import NORM_STATS_FILE, NormStats, load_norm_stats

PROCESSOR_FILE = "processor.json"
TOKENIZER_FILE = "tokenizer.json"
IGNORE_INDEX = -100


@dataclass
class ProcessorConfig:
    image_size: int = robot_spec.IMAGE_SIZE
    image_tokens_per_view: int = 49
    n_views: int = 1
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    state_bins: int = 256
    use_state: bool = True  # the state written into the prompt as bin numbers (~25 tokens)
    # the state as a vector input (batch key "state": quantile-normalized, (B, D) float32) that the action head
    # projects: the compact form (no prompt tokens)
    state_embedding: bool = False
    max_length: int = 0  # 0 = no limit; longer examples have their target truncated (prompt never)
    action_token_offset: int = 0  # VLM id of action token 0
    n_action_tokens: int = 0  # size of the reserved block (>= the action tokenizer's vocab_size)
    action_format: str = "tokens"  # "tokens": action tokens are the target; "continuous": prompt only
    image_token: str = "<image>"
    bos_token: str = "<bos>"
    eos_token: str = "<eos>"
    pad_token: str = "<pad>"
    stop_text: str = "|"
    action_prefix: str = "Action: "
    answer_prefix: str = "Answer: "

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ProcessorConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(f"processor config: unknown key(s) {unknown}")
        kw = dict(d)
        for k in ("image_mean", "image_std"):
            if k in kw:
                kw[k] = tuple(float(v) for v in kw[k])
        return cls(**kw)


def clean_text(text: Any, what: str = "text") -> str:
    """Collapse whitespace and strip; non-strings and empty text are errors."""
    if not isinstance(text, str):
        raise ModelError(f"{what} must be a string, got {type(text).__name__}")
    out = re.sub(r"\s+", " ", text).strip()
    if not out:
        raise ModelError(f"{what} is empty")
    return out


class VLAProcessor:
    """Turns (images, state, instruction[, actions]) and ETC (images, question, answer) records into model
    inputs (numpy), and generated token ids back into actions / text."""

    def __init__(
        self,
        tokenizer: Any,
        config: ProcessorConfig,
        action_tokenizer: ActionTokenizer | None = None,
        norm_stats: Mapping[str, NormStats] | None = None,
    ):
        from tokenizers import Tokenizer

        if isinstance(tokenizer, (str, Path)):
            tokenizer = _load_tokenizer(Path(tokenizer))
        self._tokenizer_json = tokenizer.to_str()
        # Private copy: special-token strings inside user text are encoded as plain text, never as
        # control tokens (an instruction containing "<image>" cannot inject an image placeholder).
        self.tokenizer = Tokenizer.from_str(self._tokenizer_json)
        self.tokenizer.encode_special_tokens = True
        self.config = config
        self.action_tokenizer = action_tokenizer
        self.norm_stats: dict[str, NormStats] = dict(norm_stats or {})
        c = config
        if c.image_size < 1 or c.image_tokens_per_view < 1 or c.n_views < 1:
            raise ModelError("processor config: image_size, image_tokens_per_view and n_views must be >= 1")
        if c.state_bins < 2:
            raise ModelError(f"processor config: state_bins must be >= 2, got {c.state_bins}")
        if c.action_format not in ("tokens", "continuous"):
            raise ModelError("processor config: action_format must be 'tokens' or 'continuous', "
                             f"got {c.action_format!r}")
        self.image_id = self._special_id(c.image_token)
        self.bos_id = self._special_id(c.bos_token)
        self.eos_id = self._special_id(c.eos_token)
        self.pad_id = self._special_id(c.pad_token)
        stop = self.encode_text(c.stop_text)
        if len(stop) != 1:
            raise ModelError(f"stop text {c.stop_text!r} must be one token, the tokenizer gives {len(stop)}")
        self.stop_id = stop[0]
        self._action_prefix_ids = self.encode_text(c.action_prefix)
        self._answer_prefix_ids = self.encode_text(c.answer_prefix)
        self._mean = np.asarray(c.image_mean, dtype=np.float32).reshape(3, 1, 1)
        self._std = np.asarray(c.image_std, dtype=np.float32).reshape(3, 1, 1)
        self.vocab_size = self.tokenizer.get_vocab_size(with_added_tokens=True)
        if action_tokenizer is not None and c.action_format == "tokens":
            self._check_action_block()

    # ------------------------------------------------------------------ vocabulary
    def _special_id(self, token: str) -> int:
        i = self.tokenizer.token_to_id(token)
        if i is None:
            raise ModelError(f"the tokenizer has no {token!r} token")
        return int(i)

    def _check_action_block(self) -> None:
        c, at = self.config, self.action_tokenizer
        if at.vocab_size > c.n_action_tokens:
            raise ModelError(f"action tokenizer needs {at.vocab_size} ids but only {c.n_action_tokens} are reserved "
                             "in the vocabulary")
        lo, hi = c.action_token_offset, c.action_token_offset + c.n_action_tokens
        if lo < 0:
            raise ModelError(f"action token offset {lo} is negative")
        for name, i in (("image", self.image_id), ("bos", self.bos_id), ("eos", self.eos_id),
                        ("pad", self.pad_id), ("stop", self.stop_id)):
            if lo <= i < hi:
                raise ModelError(f"the {name} token (id {i}) lies inside the action token block [{lo}, {hi})")

    @property
    def action_ids(self) -> np.ndarray:
        """VLM ids the action tokenizer can produce."""
        if self.action_tokenizer is None:
            raise ModelError("processor has no action tokenizer")
        return np.arange(self.action_tokenizer.vocab_size, dtype=np.int64) + self.config.action_token_offset

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def decode_text(self, ids: Sequence[int]) -> str:
        """Generated ids -> text, cut at <eos>, special tokens dropped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            out.append(i)
        return self.tokenizer.decode(out, skip_special_tokens=True)

    # ------------------------------------------------------------------ images / state
    def preprocess_images(self, images: Any) -> np.ndarray:
        """One HxWx3 uint8 image or a sequence / (V, H, W, 3) array of n_views -> float32 (V, 3, S, S)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            views = [images]
        elif isinstance(images, np.ndarray) and images.ndim == 4:
            views = list(images)
        elif isinstance(images, (list, tuple)):
            views = list(images)
        else:
            raise ModelError(f"images must be an HxWx3 uint8 array or a list of them, got {type(images).__name__}")
        n = self.config.n_views
        if len(views) != n:
            raise ModelError(f"expected {n} camera view(s), got {len(views)}")
        s = self.config.image_size
        out = np.empty((n, 3, s, s), dtype=np.float32)
        for k, img in enumerate(views):
            img = np.asarray(img)
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
                raise ModelError(f"view {k}: expected an HxWx3 uint8 RGB image, got {img.dtype} {img.shape}")
            img = resize_image(img, s, s)
            chw = img.transpose(2, 0, 1).astype(np.float32) / 255.0
            out[k] = (chw - self._mean) / self._std
        return out

    def state_stats(self, dim: int) -> NormStats:
        st = self.norm_stats.get("state")
        if st is None:
            return NormStats.identity(dim)
        if st.dim != dim:
            raise ModelError(f"state has {dim} values but the state norm stats have {st.dim}")
        return st

    def discretize_state(self, state: Any) -> np.ndarray:
        """Raw state (D,) -> normalized -> bin index per dimension in [0, state_bins)."""
        arr = np.asarray(state, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise ModelError(f"state must be a 1-D vector, got shape {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ModelError("state contains NaN or Inf")
        x = self.state_stats(arr.shape[0]).normalize(arr).astype(np.float64)
        x = np.clip(x, -1.0, 1.0)
        b = self.config.state_bins
        return np.clip(np.floor((x + 1.0) / 2.0 * b), 0, b - 1).astype(np.int64)

    def action_prompt(self, instruction: str, state: Any = None) -> str:
        instr = clean_text(instruction, "instruction")
        if self.config.use_state:
            if state is None:
                raise ModelError("this processor writes the state into the prompt: a state is required")
            bins = " ".join(str(int(v)) for v in self.discretize_state(state))
            return f"Task: {instr}, State: {bins};\n"
        return f"Task: {instr};\n"

    @staticmethod
    def etc_prompt(question: str) -> str:
        return f"Task: {clean_text(question, 'question')};\n"

    # ------------------------------------------------------------------ actions
    def action_stats(self, dim: int) -> NormStats:
        st = self.norm_stats.get("action")
        if st is None:
            return NormStats.identity(dim)
        if st.dim != dim:
            raise ModelError(f"actions have {dim} dimensions but the action norm stats have {st.dim}")
        return st

    def normalize_actions(self, actions: Any) -> np.ndarray:
        at = self._require_action_tokenizer()
        arr = np.asarray(actions, dtype=np.float64)
        if arr.shape != (at.horizon, at.action_dim):
            raise ModelError(f"actions must have shape ({at.horizon}, {at.action_dim}), got {arr.shape}")
        return self.action_stats(at.action_dim).normalize(arr)

    def unnormalize_actions(self, chunk: Any) -> np.ndarray:
        arr = np.asarray(chunk, dtype=np.float64)
        return self.action_stats(arr.shape[-1]).unnormalize(arr)

    def _require_action_tokenizer(self) -> ActionTokenizer:
        if self.action_tokenizer is None:
            raise ModelError("processor has no action tokenizer")
        return self.action_tokenizer

    def action_token_ids(self, normalized_chunk: Any) -> list[int]:
        """Normalized chunk -> VLM ids of its action tokens."""
        off = self.config.action_token_offset
        return [off + t for t in self._require_action_tokenizer().encode(normalized_chunk)]

    def decode_actions(self, generated: Sequence[int], unnormalize: bool = True) -> tuple[np.ndarray, bool]:
        """Generated VLM ids (after "Action: ") -> (chunk (H, D), valid). Reads up to the stop token; ids outside
        the action block, a missing stop token or a malformed token sequence make it invalid (the chunk still
        has the right shape)."""
        at = self._require_action_tokenizer()
        off = self.config.action_token_offset
        toks: list[int] = []
        valid, stopped = True, False
        for i in np.asarray(generated, dtype=np.int64).reshape(-1).tolist():
            if i == self.stop_id:
                stopped = True
                break
            t = i - off
            if 0 <= t < at.vocab_size:
                toks.append(t)
            else:
                valid = False
        chunk, ok = at.decode(toks, return_valid=True)
        valid = valid and ok and stopped
        if unnormalize:
            chunk = self.unnormalize_actions(chunk)
        return chunk, bool(valid)

    # ------------------------------------------------------------------ examples
    def _assemble(self, prompt_ids: list[int], target_ids: list[int], pixel_values: np.ndarray, kind: str) -> dict:
        n_img = self.config.image_tokens_per_view * self.config.n_views
        prefix = [self.image_id] * n_img + [self.bos_id] + prompt_ids
        truncated = False
        ml = self.config.max_length
        if ml and len(prefix) + len(target_ids) > ml:
            if len(prefix) >= ml:
                raise ModelError(f"prompt of {len(prefix)} tokens (images included) exceeds max_length {ml}")
            target_ids = target_ids[: ml - len(prefix)]
            truncated = True
        ids = np.asarray(prefix + target_ids, dtype=np.int64)
        n_p = len(prefix)
        labels = ids.copy()
        labels[:n_p] = IGNORE_INDEX
        tt = np.zeros(len(ids), dtype=np.int64)
        tt[n_p:] = 1
        return {
            "input_ids": ids,
            "attention_mask": np.ones(len(ids), dtype=np.int64),
            "token_type_ids": tt,
            "labels": labels,
            "pixel_values": pixel_values,
            "kind": kind,
            "truncated": truncated,
        }

    @property
    def needs_state(self) -> bool:
        return bool(self.config.use_state or self.config.state_embedding)

    def state_vector(self, state: Any) -> np.ndarray:
        """Raw state (D,) -> the normalized float32 vector the state-embedding head reads."""
        arr = np.asarray(state, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(arr)):
            raise ModelError("state contains NaN or Inf")
        return self.state_stats(arr.shape[0]).normalize(arr).astype(np.float32)

    def _with_state(self, ex: dict, state: Any) -> dict:
        if self.config.state_embedding:
            if state is None:
                raise ModelError("this processor feeds the state to the action head: a state is required")
            ex["state"] = self.state_vector(state)
        return ex

    def build_action_example(self, images: Any, state: Any, instruction: str, actions: Any) -> dict:
        """Training example from one observation and its (H, D) raw action chunk."""
        pix = self.preprocess_images(images)
        prompt = self.encode_text(self.action_prompt(instruction, state))
        norm = self.normalize_actions(actions)
        if self.config.action_format == "tokens":
            target = list(self._action_prefix_ids) + self.action_token_ids(norm) + [self.stop_id, self.eos_id]
            ex = self._assemble(prompt, target, pix, "action")
        else:  # continuous head: prompt (+ "Action: ") only, the head reads "actions"
            ex = self._assemble(prompt + list(self._action_prefix_ids), [], pix, "action")
        ex["actions"] = norm.astype(np.float32)
        return self._with_state(ex, state)

    def build_etc_example(self, question: str, answer: str, images: Any) -> dict:
        """ETC training example: loss on "Answer: {answer}<eos>" only."""
        pix = self.preprocess_images(images)
        prompt = self.encode_text(self.etc_prompt(question))
        target = list(self._answer_prefix_ids) + self.encode_text(clean_text(answer, "answer")) + [self.eos_id]
        return self._assemble(prompt, target, pix, "etc")

    def build_inference_prompt(self, images: Any, state: Any, instruction: str) -> dict:
        """Runtime input: identical to the prefix of build_action_example up to and including "Action: "."""
        pix = self.preprocess_images(images)
        prompt = self.encode_text(self.action_prompt(instruction, state))
        if self.config.action_format == "tokens":
            ex = self._assemble(prompt, list(self._action_prefix_ids), pix, "action")
        else:
            ex = self._assemble(prompt + list(self._action_prefix_ids), [], pix, "action")
        del ex["labels"]
        return self._with_state(ex, state)

    def build_etc_prompt(self, question: str, images: Any) -> dict:
        """Prompt for generating an ETC answer (up to and including "Answer: ")."""
        pix = self.preprocess_images(images)
        ex = self._assemble(self.encode_text(self.etc_prompt(question)), list(self._answer_prefix_ids), pix, "etc")
        del ex["labels"]
        return ex

    def collate(self, examples: Sequence[Mapping[str, Any]], padding_side: str = "right") -> dict:
        """Stack examples into a batch of numpy arrays, padded to the longest. Right padding for training,
        left padding for batched generation."""
        if not examples:
            raise ModelError("cannot collate an empty list of examples")
        if padding_side not in ("right", "left"):
            raise ModelError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        kinds = {e.get("kind") for e in examples}
        if len(kinds) != 1:
            raise ModelError(f"a batch must hold one kind of example, got {sorted(map(str, kinds))}")
        L = max(len(e["input_ids"]) for e in examples)
        B = len(examples)
        has_labels = all("labels" in e for e in examples)
        ids = np.full((B, L), self.pad_id, dtype=np.int64)
        am = np.zeros((B, L), dtype=np.int64)
        tt = np.full((B, L), 1 if padding_side == "right" else 0, dtype=np.int64)
        labels = np.full((B, L), IGNORE_INDEX, dtype=np.int64)
        for b, e in enumerate(examples):
            n = len(e["input_ids"])
            sl = slice(0, n) if padding_side == "right" else slice(L - n, L)
            ids[b, sl] = e["input_ids"]
            am[b, sl] = e["attention_mask"]
            tt[b, sl] = e["token_type_ids"]
            if has_labels:
                labels[b, sl] = e["labels"]
        out = {
            "input_ids": ids,
            "attention_mask": am,
            "token_type_ids": tt,
            "pixel_values": np.stack([e["pixel_values"] for e in examples]).astype(np.float32),
            "kind": kinds.pop(),
        }
        if has_labels:
            out["labels"] = labels
        if all("actions" in e for e in examples):
            out["actions"] = np.stack([e["actions"] for e in examples]).astype(np.float32)
        if all("state" in e for e in examples):
            out["state"] = np.stack([e["state"] for e in examples]).astype(np.float32)
        return out

    # ------------------------------------------------------------------ save / load
    def save(self, directory: str | Path) -> Path:
        """processor.json, tokenizer.json, action_tokenizer.json and norm_stats.json into `directory`."""
        from etc_ros.core.io import atomic_write_json, atomic_write_text
        from etc_ros.core.normalize import save_norm_stats

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        atomic_write_text(d / TOKENIZER_FILE, self._tokenizer_json)
        if self.action_tokenizer is not None:
            self.action_tokenizer.save(d / ACTION_TOKENIZER_FILE)
        save_norm_stats(d / NORM_STATS_FILE, self.norm_stats)
        cfg = asdict(self.config)
        atomic_write_json(d / PROCESSOR_FILE, {"format": "etc-vla-processor", "version": 1, "config": cfg})
        return d

    @classmethod
    def load(cls, directory: str | Path) -> "VLAProcessor":
        d = Path(directory)
        p = d / PROCESSOR_FILE
        if not p.is_file():
            raise ModelError(f"not a processor directory (no {PROCESSOR_FILE}): {d}")
        try:
            meta = json.loads(p.read_text())
        except json.JSONDecodeError as e:
            raise ModelError(f"{p}: invalid JSON: {e}") from None
        if not isinstance(meta, dict) or meta.get("format") != "etc-vla-processor":
            raise ModelError(f"{p}: not an etc-vla processor file")
        cfg = ProcessorConfig.from_dict(meta.get("config", {}))
        at = None
        if (d / ACTION_TOKENIZER_FILE).is_file():
            try:
                at = action_tokenizer_from_dict(json.loads((d / ACTION_TOKENIZER_FILE).read_text()))
            except json.JSONDecodeError as e:
                raise ModelError(f"{d / ACTION_TOKENIZER_FILE}: invalid JSON: {e}") from None
        stats = load_norm_stats(d / NORM_STATS_FILE) if (d / NORM_STATS_FILE).is_file() else {}
        return cls(_load_tokenizer(d / TOKENIZER_FILE), cfg, at, stats)


def _load_tokenizer(path: Path):
    from tokenizers import Tokenizer

    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise ModelError(f"tokenizer file not found: {path}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as e:
        raise ModelError(f"{path}: cannot read tokenizer: {e}") from None
