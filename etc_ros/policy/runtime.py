"""PolicyRuntime: ONE way to run an exported policy bundle, on the robot, in the simulated evaluation and in the
benchmarks.

    rt = PolicyRuntime.load("bundles/tiny", backend="onnxruntime", variant="fp32")
    chunk = rt.step({"images": {"primary": rgb_uint8}, "state": state7, "instruction": "put the cube in the bowl"})
    chunk.shape == (rt.spec.horizon, 7); rt.last_timing -> {"preprocess_ms": ..., "vision_ms": ..., ...}

Backends:
- "onnxruntime" (default): the bundle's ONNX graphs in ONNX Runtime; `providers` picks execution providers
  ("cpu", "cuda", "tensorrt" or full ORT names, in priority order). A requested provider that this onnxruntime
  build lacks, or that fails to initialise, is an error (never a silent CPU fallback).
- "tensorrt": TensorRT engines built from the bundle's graphs (strongly typed: precision = the variant's ONNX
  types) and cached on disk; needs the tensorrt and cuda-python packages and a GPU.
- "torch": PyTorch eager on the bundle's copy of the source checkpoint (training side code, imported lazily
  registered by etc_training.export.torch_backend when imported; for parity checks and benchmarks, not for the robot).

Preprocessing and postprocessing are the training code itself: `VLAProcessor` (etc_ros.core.processor) builds the
prompt and pixels, `NormStats` (through the processor) unnormalizes the chunk, `processor.decode_actions`
turns generated ids into actions. The greedy decoding loop below mirrors
etc_training.models.heads.token.greedy_decode (argmax over the action-token block + stop token, KV cache);
parity tests check that both produce the same ids.

No torch import here: numpy + onnxruntime (+ tensorrt when selected).
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

import numpy as np

from etc_ros.core.action_tokenizer import decode_phase
from etc_ros.core.errors import BundleError, ModelError, UserError
from etc_ros.policy.bundle import (
    VARIANTS,
    BundleInfo,
    check_expected_spec,
    load_bundle,
    load_processor,
)
from etc_ros.policy.interface import Observation, PolicySpec
from etc_ros.policy.tensorrt_config import default_engine_cache, tensorrt_provider_options

BACKENDS = ("onnxruntime", "tensorrt", "torch")
# Additive attention-mask value for masked positions: exp() underflows to 0 in fp32 and fp16, fits in fp16.
MASK_VALUE = -30000.0
PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}
_NP_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32, "tensor(double)": np.float64, "tensor(bool)": np.bool_}



# Model backends that live outside the robot side register here (dependency direction: etc_training imports
# etc_ros, never the reverse). etc_training.export.torch_backend registers "torch" when imported.
MODEL_BACKENDS: dict = {}


def register_model_backend(name: str, factory) -> None:
    """factory(info, processor, threads=...) -> object with .predict(batch, timing) (see GraphPolicy)."""
    MODEL_BACKENDS[name] = factory

class RuntimeConfigError(UserError):
    """Bad arguments to PolicyRuntime.load (unknown backend / provider / option)."""


# ------------------------------------------------------------------------------------------------ masks
def positions(attention_mask: np.ndarray) -> np.ndarray:
    """PaliGemma positions: cumsum of the mask, 1-based, left padding shifts nothing (as VLAPolicy)."""
    return np.maximum(np.cumsum(attention_mask, axis=-1), 1).astype(np.int64)


def prefill_mask(attention_mask: np.ndarray, token_type_ids: np.ndarray) -> np.ndarray:
    """(B, 1, L, L) additive mask of the prefix-LM: a query attends key j if j is not padding and (j <= i, or
    both are prefix tokens (token type 0): bidirectional prefix, causal target)."""
    am = np.asarray(attention_mask).astype(bool)
    tt = np.asarray(token_type_ids)
    L = am.shape[1]
    causal = np.tril(np.ones((L, L), dtype=bool))[None]
    prefix = (tt == 0)
    both_prefix = prefix[:, :, None] & prefix[:, None, :]
    allowed = (causal | both_prefix) & am[:, None, :]
    return np.where(allowed, 0.0, MASK_VALUE).astype(np.float32)[:, None]


def decode_mask(attention_mask: np.ndarray) -> np.ndarray:
    """(B, 1, 1, P + 1) additive mask of one decode step over the whole (past + new) sequence."""
    am = np.asarray(attention_mask).astype(bool)
    return np.where(am, 0.0, MASK_VALUE).astype(np.float32)[:, None, None, :]


def _providers(providers: Sequence[Any] | str | None) -> list:
    if providers is None:
        return ["CPUExecutionProvider"]
    if isinstance(providers, str):
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    out: list[str | tuple[str, dict[Any, Any]]] = []  # provider names, or (name, options)
    for p in providers:
        if isinstance(p, (tuple, list)) and len(p) == 2:  # (name, options)
            out.append((PROVIDER_ALIASES.get(str(p[0]).lower(), str(p[0])), dict(p[1])))
        else:
            out.append(PROVIDER_ALIASES.get(str(p).lower(), str(p)))
    if not out:
        raise RuntimeConfigError("providers is empty")
    return out


def _provider_name(p: Any) -> str:
    return p[0] if isinstance(p, tuple) else str(p)


# ------------------------------------------------------------------------------------------------ graph runners
class GraphSet(Protocol):
    """The graph runners GraphPolicy drives: OrtGraphs here, TrtGraphs in etc_ros.policy.tensorrt."""

    def input_names(self, role: str) -> list[str]: ...

    def output_names(self, role: str) -> list[str]: ...

    def run(self, role: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class OrtGraphs:
    """One ONNX Runtime session per graph role."""

    name = "onnxruntime"

    def __init__(self, paths: Mapping[str, Path], providers: Sequence[Any] | str | None = None,
                 threads: int | None = None, graph_io: Mapping[str, Any] | None = None,
                 engine_cache_dir: str | Path | None = None, trt_fp16: bool = False):
        try:
            import onnxruntime as ort
        except ImportError as e:  # pragma: no cover - onnxruntime is a robot dependency
            raise RuntimeConfigError(f"backend 'onnxruntime' needs the onnxruntime package: {e}") from None
        provs = _providers(providers)
        available = ort.get_available_providers()
        missing = [_provider_name(p) for p in provs if _provider_name(p) not in available]
        if missing:
            raise RuntimeConfigError(
                f"execution provider(s) {missing} are not available in this onnxruntime build "
                f"(available: {available}); install onnxruntime-gpu (CUDA/TensorRT) or choose providers from the "
                "available list -- no automatic fallback")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
            # ORT's pool threads otherwise spin-wait after each run, taking CPU from the control loop between chunks
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.sessions = {}
        self.providers = [_provider_name(p) for p in provs]
        for role, path in paths.items():
            role_provs = []
            for p in provs:
                if _provider_name(p) == "TensorrtExecutionProvider" and not isinstance(p, tuple):
                    cache = Path(engine_cache_dir or default_engine_cache(path)) / role
                    p = ("TensorrtExecutionProvider",
                         tensorrt_provider_options(role, (graph_io or {}).get(role), cache, fp16=trt_fp16))
                role_provs.append(p)
            try:
                sess = ort.InferenceSession(str(path), sess_options=so, providers=role_provs)
            except Exception as e:  # noqa: BLE001 - ORT raises plain RuntimeError/Fail/InvalidGraph
                msg = " ".join(str(e).split())[:300]
                raise BundleError(f"{path}: ONNX Runtime cannot load the {role!r} graph: {msg}") from None
            got = sess.get_providers()
            lost = [n for n in self.providers if n not in got]
            if lost:
                raise RuntimeConfigError(f"{path}: provider(s) {lost} failed to initialise (session has {got}); "
                                         "refusing to fall back to another provider")
            self.sessions[role] = sess
        self._in = {r: {i.name: _NP_DTYPES.get(i.type, np.float32) for i in s.get_inputs()}
                    for r, s in self.sessions.items()}
        self._out = {r: [o.name for o in s.get_outputs()] for r, s in self.sessions.items()}

    def input_names(self, role: str) -> list[str]:
        return list(self._in[role])

    def output_names(self, role: str) -> list[str]:
        return list(self._out[role])

    def run(self, role: str, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        want = self._in[role]
        f: dict[str, np.ndarray] = {k: np.ascontiguousarray(v, dtype=want[k]) for k, v in feeds.items() if k in want}
        missing = [k for k in want if k not in f]
        if missing:
            raise BundleError(f"graph {role!r} needs input(s) {missing}; the runtime gave {sorted(feeds)}")
        outs = self.sessions[role].run(None, f)
        return dict(zip(self._out[role], outs))


# ------------------------------------------------------------------------------------------------ the pipeline
class GraphPolicy:
    """The model pipeline over a graph runner (ORT or TensorRT): vision -> embed + merge -> prefill ->
    greedy decode with KV cache (token head) or the continuous head graph."""

    def __init__(self, graphs: Any, processor: Any, head: Mapping[str, Any], head_type: str):
        self.graphs = graphs
        self.processor = processor
        self.head = dict(head)
        self.head_type = head_type
        self.name = graphs.name
        self.providers = list(getattr(graphs, "providers", []))
        outs = graphs.output_names("prefill")
        self.kv_names = [n for n in outs if n.startswith("present.")]
        self._n_layers = len(self.kv_names) // 2
        if head_type == "tokens":
            at = processor.action_tokenizer
            self.stop_ids = np.asarray([processor.stop_id], dtype=np.int64)
            self.allowed_ids = np.asarray(processor.action_ids, dtype=np.int64)
            self.max_new_tokens = int(self.head.get("max_new_tokens") or (at.max_tokens + 1))
            self.fixed_length = at.fixed_length  # binning: exactly horizon x dim tokens, then stop
            if self.fixed_length is not None:
                self.max_new_tokens = max(self.max_new_tokens, self.fixed_length + 1)
            self._bias: np.ndarray | None = None
        self._rng = np.random.default_rng(self.head.get("noise_seed", 0))

    # -- pieces (also used by the parity checks)
    def image_embeds(self, pixel_values: np.ndarray) -> np.ndarray:
        pv = np.asarray(pixel_values, dtype=np.float32)
        if pv.ndim == 5:
            pv = pv.reshape(-1, *pv.shape[2:])
        return self.graphs.run("vision", {"pixel_values": pv})["image_embeds"]

    def embed(self, input_ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.graphs.run("embed", {"input_ids": np.asarray(input_ids, dtype=np.int64)})["embeds"],
                          dtype=np.float32)

    def inputs_embeds(self, batch: Mapping[str, np.ndarray], timing: dict | None = None) -> np.ndarray:
        ids = np.asarray(batch["input_ids"], dtype=np.int64)
        t0 = time.perf_counter()
        img = self.image_embeds(batch["pixel_values"]).astype(np.float32)
        t1 = time.perf_counter()
        is_img = ids == self.processor.image_id
        emb = self.embed(np.where(is_img, self.processor.pad_id, ids))
        n_img = int(is_img.sum())
        if n_img * emb.shape[-1] != img.size:
            raise ModelError(f"image tokens ({n_img}) and image features ({img.shape}) do not match")
        emb[is_img] = img.reshape(-1, emb.shape[-1])
        if timing is not None:
            timing["vision_ms"] = 1000 * (t1 - t0)
            timing["embed_ms"] = 1000 * (time.perf_counter() - t1)
        return emb

    def prefill(self, emb: np.ndarray, am: np.ndarray, tt: np.ndarray) -> dict[str, np.ndarray]:
        return self.graphs.run("prefill", {"inputs_embeds": emb, "attention_mask": prefill_mask(am, tt),
                                           "position_ids": positions(am)})

    def _allowed_bias(self, vocab: int) -> np.ndarray:
        if self._bias is None or self._bias.shape[0] != vocab:
            b = np.full((vocab,), -np.inf, dtype=np.float32)
            b[self.allowed_ids] = 0.0
            b[self.stop_ids] = 0.0
            self._bias = b
        return self._bias

    def generate(self, batch: Mapping[str, np.ndarray], timing: dict | None = None,
                 force: np.ndarray | None = None, record: bool = False) -> tuple[np.ndarray, dict]:
        """Greedy ids after the prefix (B, T) (the rule of heads.token.greedy_decode). force: (B, T) ids fed
        instead of the argmax (teacher forcing, parity checks); record: keep logits / hidden states."""
        am = np.asarray(batch["attention_mask"], dtype=np.int64)
        tt = np.asarray(batch["token_type_ids"], dtype=np.int64)
        emb = self.inputs_embeds(batch, timing)
        t0 = time.perf_counter()
        out = self.prefill(emb, am, tt)
        t1 = time.perf_counter()
        rec: dict[str, Any] = {"prefill": out} if record else {}
        logits = np.asarray(out["logits"], dtype=np.float32)
        past = [out[n] for n in self.kv_names]
        B = am.shape[0]
        bias = self._allowed_bias(logits.shape[-1])
        done = np.zeros(B, dtype=bool)
        gen: list[np.ndarray] = []
        step_logits = [logits] if record else None
        last_pos = positions(am)[:, -1:]
        max_new = self.max_new_tokens if force is None else int(np.asarray(force).shape[1])
        for k in range(max_new):
            if force is not None:
                nxt = np.asarray(force, dtype=np.int64)[:, k]
            else:
                scores = logits + bias
                phase = decode_phase(k, getattr(self, "fixed_length", None))
                if phase == "actions":
                    scores = scores.copy()
                    scores[:, self.stop_ids] = -np.inf
                nxt = np.argmax(scores, axis=-1).astype(np.int64)
                if phase == "stop":
                    nxt = np.full_like(nxt, self.stop_ids[0])
                nxt = np.where(done, self.stop_ids[0], nxt)
            gen.append(nxt)
            done = done | np.isin(nxt, self.stop_ids)
            if (force is None and bool(done.all())) or len(gen) == max_new:
                break
            am = np.concatenate([am, np.ones((B, 1), dtype=np.int64)], axis=1)
            last_pos = last_pos + 1
            feeds = {"inputs_embeds": self.embed(nxt[:, None]), "attention_mask": decode_mask(am),
                     "position_ids": last_pos}
            for i, n in enumerate(self.kv_names):
                feeds["past." + n[len("present."):]] = past[i]
            o = self.graphs.run("decode", feeds)
            logits = np.asarray(o["logits"], dtype=np.float32)
            past = [o[n] for n in self.kv_names]
            if step_logits is not None:
                step_logits.append(logits)
        t2 = time.perf_counter()
        if timing is not None:
            timing["prefill_ms"] = 1000 * (t1 - t0)
            timing["decode_ms"] = 1000 * (t2 - t1)
            timing["decode_steps"] = len(gen)
        if record:
            assert step_logits is not None  # a list exactly when record
            rec["step_logits"] = np.stack(step_logits, axis=1)  # (B, T(+1), V)
        ids = np.stack(gen, axis=1) if gen else np.zeros((B, 0), dtype=np.int64)
        return ids, rec

    def continuous(self, batch: Mapping[str, np.ndarray], timing: dict | None = None,
                   noise: np.ndarray | None = None) -> np.ndarray:
        """Continuous head slot: prefix hidden states + condition mask + noise -> normalized chunk (B, H, D)."""
        am = np.asarray(batch["attention_mask"], dtype=np.int64)
        tt = np.asarray(batch["token_type_ids"], dtype=np.int64)
        emb = self.inputs_embeds(batch, timing)
        t0 = time.perf_counter()
        out = self.prefill(emb, am, tt)
        t1 = time.perf_counter()
        H, D = int(self.head["horizon"]), int(self.head["action_dim"])
        if noise is None:
            noise = self._rng.standard_normal((am.shape[0], H, D)).astype(np.float32)
        cond = (am * (tt == 0)).astype(np.float32)
        feeds = {"hidden_states": out["hidden_states"], "condition_mask": cond, "noise": noise}
        if "state" in batch:  # state-embedding heads (graphs without a "state" input ignore it)
            feeds["state"] = np.asarray(batch["state"], dtype=np.float32)
        # spatial-attention heads read which positions are image tokens (ignored by graphs without the input)
        feeds["image_mask"] = (np.asarray(batch["input_ids"]) == self.processor.image_id).astype(np.float32)
        x = self.graphs.run("head", feeds)["actions"]
        if timing is not None:
            timing["prefill_ms"] = 1000 * (t1 - t0)
            timing["head_ms"] = 1000 * (time.perf_counter() - t1)
        return np.asarray(x, dtype=np.float32)

    def predict(self, batch: Mapping[str, np.ndarray], timing: dict) -> tuple[np.ndarray, np.ndarray, Any]:
        """normalized chunks (B, H, D), valid (B,), generated ids (token head) or None."""
        if self.head_type == "continuous":
            x = self.continuous(batch, timing)
            return x, np.all(np.isfinite(x), axis=(1, 2)), None
        ids, _ = self.generate(batch, timing)
        chunks, valid = [], []
        for row in ids:
            c, ok = self.processor.decode_actions(row, unnormalize=False)
            chunks.append(c)
            valid.append(ok)
        return np.stack(chunks).astype(np.float32), np.asarray(valid, dtype=bool), ids


# ------------------------------------------------------------------------------------------------ the runtime
def check_graph_vocabulary(model: Any, processor: Any, info: Any, embed_path: str | Path | None = None) -> None:
    """Every id the tokenizer (and the action block) can produce must fit the embed graph's table: probed once at
    load with the highest id, so a mismatch is a BundleError naming both files, not an ONNX Gather error at the
    first inference."""
    where = f"{embed_path}: the embed graph" if embed_path is not None else f"{info.root}: the embed graph"
    top = int(processor.vocab_size) - 1
    what = f"{info.processor_dir.name}/tokenizer.json has {processor.vocab_size} ids"
    if processor.action_tokenizer is not None and processor.config.action_format == "tokens":
        a_top = int(processor.action_ids.max())
        if a_top > top:
            top, what = a_top, f"the action token block ends at id {a_top}"
    try:
        out = model.embed(np.array([[top]], dtype=np.int64))
        ok = bool(np.all(np.isfinite(out)))
    except Exception as e:  # noqa: BLE001 - any backend error means the graph cannot take the id
        msg = " ".join(str(e).split())[:200]
        raise BundleError(f"{where} cannot take token id {top} ({what}; expected an embedding table of at least "
                          f"{top + 1} rows): {msg}") from None
    if not ok:
        raise BundleError(f"{where} returns non-finite values for token id {top} ({what})")


def check_graph_io(graphs: Any, info: Any, variant: str) -> None:
    """Each graph file takes the inputs the manifest's graph_io lists for its role (a graph file swapped for another
    is a BundleError naming it at load, not a missing-input error at the first inference)."""
    io = info.manifest.get("graph_io") or {}
    for role, path in info.graph_paths(variant).items():
        want = (io.get(role) or {}).get("inputs")
        if not isinstance(want, Mapping) or not hasattr(graphs, "input_names"):
            continue
        found = sorted(graphs.input_names(role))
        if found != sorted(want):
            raise BundleError(f"{path}: the {role!r} graph takes inputs {found}, the manifest's graph_io expects "
                              f"inputs {sorted(want)}")


class PolicyRuntime:
    """See the module docstring. Thread safe: one inference at a time."""

    def __init__(self, info: BundleInfo, processor: Any, model: Any, *, backend: str, variant: str,
                 on_invalid: str = "nan"):
        if on_invalid not in ("nan", "keep"):
            raise RuntimeConfigError(f"on_invalid must be 'nan' or 'keep', got {on_invalid!r}")
        self.info = info
        self.bundle_dir = info.root
        self.processor = processor
        self.model = model
        self.backend = backend
        self.variant = variant
        self.on_invalid = on_invalid
        self._spec = dict(info.spec)
        self._spec.update(bundle=str(info.root), backend=backend, variant=variant,
                          providers=list(getattr(model, "providers", [])))
        self._policy_spec = PolicySpec.from_mapping(self._spec)
        self.cameras: tuple[str, ...] = self._policy_spec.cameras
        self.last_timing: dict[str, float] = {}
        self.last_valid: bool | None = None
        self.last_tokens: np.ndarray | None = None
        self._lock = threading.Lock()

    @property
    def spec(self) -> PolicySpec:
        """What the bundle promises (spec.json + backend, variant, bundle in .extra; providers); immutable."""
        return self._policy_spec

    @classmethod
    def load(cls, bundle_dir: str | Path, backend: str = "onnxruntime", providers: Sequence[Any] | str | None = None,
             variant: str = "fp32", *, threads: int | None = None, expect: Mapping[str, Any] | None = None,
             on_invalid: str = "nan", engine_cache_dir: str | Path | None = None, trt_fp16: bool = False,
             verify: bool = True) -> "PolicyRuntime":
        """Validate the bundle (checksums, versions, spec; BundleError on any mismatch) and open `variant` with
        `backend`. expect: spec values the caller relies on (e.g. {"cameras": [...], "control_hz": 5.0}).
        on_invalid: "nan" (default: a chunk whose tokens do not decode cleanly is returned as NaN so the safety
        layer rejects it) or "keep" (return the best-effort decode, as VLAPolicy.predict_chunk does)."""
        if backend not in BACKENDS:
            raise RuntimeConfigError(f"unknown backend {backend!r}; use one of {list(BACKENDS)}")
        if variant not in VARIANTS:
            raise RuntimeConfigError(f"unknown variant {variant!r}; use one of {list(VARIANTS)}")
        if backend != "onnxruntime" and providers is not None:
            raise RuntimeConfigError(f"providers only apply to backend 'onnxruntime', not {backend!r}")
        info = load_bundle(bundle_dir, verify=verify, variant=None if backend == "torch" else variant)
        check_expected_spec(info.spec, expect, info.root)
        processor = load_processor(info)
        graphs: GraphSet
        if backend == "torch":
            if variant != "fp32":
                raise RuntimeConfigError(f"backend 'torch' runs the source checkpoint (fp32); variant {variant!r} "
                                         "exists only as ONNX graphs")
            factory = MODEL_BACKENDS.get("torch")
            if factory is None:
                raise RuntimeConfigError(
                    "backend 'torch' is provided by the training side (it needs torch + transformers): "
                    "`import etc_training.export.torch_backend` registers it; the robot runs onnxruntime/tensorrt")
            model = factory(info, processor, threads=threads)
        elif backend == "onnxruntime":
            graphs = OrtGraphs(info.graph_paths(variant), providers, threads, info.manifest.get("graph_io"),
                               engine_cache_dir, trt_fp16)
            model = GraphPolicy(graphs, processor, info.head, info.head_type)
        else:
            try:
                import tensorrt  # noqa: F401
            except ImportError as e:
                raise RuntimeConfigError(f"backend 'tensorrt' needs the tensorrt package (and a GPU): {e}; "
                                         "no CPU fallback") from None
            from etc_ros.policy.tensorrt import TrtGraphs

            graphs = TrtGraphs(info.graph_paths(variant), info.manifest.get("graph_io") or {},
                               cache_dir=engine_cache_dir)
            model = GraphPolicy(graphs, processor, info.head, info.head_type)
        if backend != "torch":
            check_graph_io(graphs, info, variant)
            check_graph_vocabulary(model, processor, info, info.graph_paths(variant).get("embed"))
        return cls(info, processor, model, backend=backend, variant=variant, on_invalid=on_invalid)

    # -- observations
    def _views(self, observation: Mapping[str, Any]) -> list[np.ndarray]:
        if not isinstance(observation, Mapping):
            raise ModelError("observation must be a dict with images/state/instruction, "
                             f"got {type(observation).__name__}")
        imgs = observation.get("images")
        if isinstance(imgs, np.ndarray) and imgs.ndim == 3 and len(self.cameras) == 1:
            return [imgs]
        if not isinstance(imgs, Mapping):
            raise ModelError(f"observation['images'] must map camera name -> HxWx3 uint8 image "
                             f"(cameras: {list(self.cameras)})")
        missing = [c for c in self.cameras if c not in imgs]
        if missing:
            raise ModelError(f"observation lacks camera(s) {missing}; the policy needs {list(self.cameras)} "
                             f"(got {sorted(imgs)})")
        return [np.asarray(imgs[c]) for c in self.cameras]

    def _state(self, observation: Mapping[str, Any]) -> np.ndarray | None:
        s = observation.get("state")
        if s is None:
            if self._spec.get("uses_state", True):
                raise ModelError("observation has no 'state' (the policy takes the 7-D joint state)")
            return None
        arr = np.asarray(s, dtype=np.float64).reshape(-1)
        n = int(self._spec["state_dim"])
        if arr.shape != (n,):
            raise ModelError(f"observation['state'] must have {n} values ({self._spec.get('state_names')}), "
                             f"got shape {np.asarray(s).shape}")
        return arr

    def build_batch(self, observations: Sequence[Mapping[str, Any]]) -> dict:
        """Observations -> the model batch, through the shared VLAProcessor (the very code training uses)."""
        exs = []
        for o in observations:
            views = self._views(o)
            exs.append(self.processor.build_inference_prompt(views if len(views) > 1 else views[0], self._state(o),
                                                             o.get("instruction")))
        return self.processor.collate(exs, padding_side="left")

    # -- inference
    def predict_chunks(self, observations: Sequence[Mapping[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """Several observations at once (left-padded batch) -> (chunks (B, H, 7) float32 raw units, valid (B,))."""
        if not observations:
            raise ModelError("predict_chunks needs at least one observation")
        with self._lock:
            timing: dict[str, float] = {}
            t0 = time.perf_counter()
            batch = self.build_batch(observations)
            t1 = time.perf_counter()
            norm, valid, ids = self.model.predict(batch, timing)
            t2 = time.perf_counter()
            norm = np.asarray(norm, dtype=np.float64)
            finite = np.all(np.isfinite(norm), axis=(1, 2))
            safe = np.where(np.isfinite(norm), norm, 0.0)
            chunks = self.processor.unnormalize_actions(safe).astype(np.float32)
            chunks[~finite] = np.nan
            valid = np.asarray(valid, dtype=bool) & finite
            if self.on_invalid == "nan":
                chunks[~valid] = np.nan
            t3 = time.perf_counter()
            timing.update(preprocess_ms=1000 * (t1 - t0), model_ms=1000 * (t2 - t1),
                          postprocess_ms=1000 * (t3 - t2), total_ms=1000 * (t3 - t0))
            self.last_timing = {k: (round(float(v), 3) if k != "decode_steps" else int(v)) for k, v in timing.items()}
            self.last_valid = bool(valid.all())
            self.last_tokens = None if ids is None else np.asarray(ids)
            return chunks, valid

    def step(self, observation: Observation) -> np.ndarray:
        """{"images": {cam: HxWx3 uint8}, "state": (7,), "instruction": str} -> (H, 7) float32 actions in raw
        units (Bridge deltas + absolute gripper). An invalid decode gives NaNs (on_invalid="nan")."""
        chunks, _ = self.predict_chunks([observation])
        return chunks[0]

    def __repr__(self) -> str:
        return (f"PolicyRuntime({str(self.bundle_dir)!r}, backend={self.backend!r}, variant={self.variant!r}, "
                f"providers={self._spec.get('providers')})")


def bundle_summary(bundle_dir: str | Path) -> dict:
    """Validated manifest summary (for `etc-vla export --check` and logs)."""
    info = load_bundle(bundle_dir)
    return {"bundle": str(info.root), "head": info.head_type, "variants": sorted(info.variants),
            "spec": info.spec, "source": info.manifest.get("source"), "files": len(info.manifest.get("files", {}))}


__all__ = ["PolicyRuntime", "GraphPolicy", "OrtGraphs", "BACKENDS", "MASK_VALUE", "prefill_mask", "decode_mask",
           "positions", "bundle_summary", "RuntimeConfigError"]
