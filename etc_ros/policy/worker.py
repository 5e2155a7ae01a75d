"""Policy inference off the control path (pure: no ROS).

The policy node feeds the latest images, joint state and accepted instruction into a PolicyWorker; a worker
thread runs `runtime.step(observation)` whenever a NEW observation is available (at most `max_rate_hz`) and
hands the chunk to `publish(actions (H, 7), obs_stamp)`, where obs_stamp is the stamp of the OLDEST image used
(the chunk is as old as its oldest input). Inference never blocks the callers: setters only swap references.

No instruction, no image of every camera or no joint state -> no chunk (the safety layer then holds).
Chunks are forwarded unchanged when their shape is (H, 7), non-finite values included: the safety executor
is the single gate that rejects them (and counts them); the worker counts them too.
"""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import UserError

if TYPE_CHECKING:  # typing only: importing the contract costs nothing, but keep the worker's imports minimal
    from etc_ros.policy.interface import Policy


class PolicyConfigError(UserError):
    pass


def parse_providers(value: object) -> list[str] | None:
    """'' / None -> None (the runtime's default: CPU); 'cuda' / 'tensorrt' / 'cpu' shorthands or full ONNX Runtime
    names, comma-separated, in priority order ('tensorrt,cuda,cpu')."""
    names = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider",
             "trt": "TensorrtExecutionProvider"}
    items = [v.strip() for v in str(value or "").split(",") if v.strip()]
    if not items:
        return None
    out = []
    for v in items:
        full = names.get(v.lower(), v)
        if not full.endswith("ExecutionProvider"):
            raise PolicyConfigError(f"providers: {v!r} is not an ONNX Runtime execution provider "
                                    f"(use {sorted(names)} or full names such as CUDAExecutionProvider)")
        out.append(full)
    return out


INFERENCE_NICE = 5  # the inference thread yields the CPU to the control loop when cores are oversubscribed


def lower_thread_priority(increment: int) -> bool:
    """Raise the calling thread's nice value by `increment` (Linux: per thread; needs no privilege). Returns whether
    it worked; elsewhere it does nothing."""
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + int(increment)))
        return True
    except (AttributeError, OSError):
        return False


def inference_threads() -> int:
    """CPU inference threads on the robot: every core but one, which stays with the 50 Hz safety / driver loop.
    Measured on 2 cores, make demo's ros stage with its token-decoder bundle (inference p50 211-232 ms): safety-tick
    period p99 33 ms with ONNX Runtime's default (a spinning thread per core), 30.5 ms with 1 thread and no
    spinning, 26.9 ms with the inference thread also at nice +5 (INFERENCE_NICE)."""
    return max(1, (os.cpu_count() or 2) - 1)


def load_runtime(policy_bundle: str, backend: str = "onnxruntime", cameras: tuple[str, ...] = ("primary",),
                 providers: object = None, threads: int | None = None) -> Policy:
    """`fake:<name>` -> a scripted stand-in (etc_ros.policy.scripted); otherwise PolicyRuntime.load(bundle) with the
    requested execution providers (refuses to start when one is missing: no silent CPU fallback) and `threads`
    CPU inference threads (None: inference_threads())."""
    b = (policy_bundle or "").strip()
    if not b:
        raise PolicyConfigError("policy_bundle is empty: give a bundle directory (etc-vla export) or fake:<name>")
    if b.startswith("fake:"):
        from etc_ros.policy.scripted import make_fake_runtime

        return make_fake_runtime(b[5:], cameras=cameras)
    try:
        from etc_ros.policy.runtime import PolicyRuntime  # noqa: WPS433
    except ImportError as e:
        raise PolicyConfigError(f"cannot load bundle {b!r}: etc_ros.policy.runtime is not available ({e})") from e
    provs = parse_providers(providers)
    if provs is not None and backend != "onnxruntime":
        raise PolicyConfigError(f"providers apply to runtime_backend onnxruntime, not {backend!r}")
    if provs is not None:
        try:  # the pip CUDA / cuDNN libraries (robot image): load them before the session asks for them
            import onnxruntime as ort

            if any(p != "CPUExecutionProvider" for p in provs) and hasattr(ort, "preload_dlls"):
                ort.preload_dlls()
        except Exception:  # noqa: BLE001 - a missing library shows up as the provider check below
            pass
    return PolicyRuntime.load(b, backend=backend, providers=provs,
                              threads=inference_threads() if threads is None else int(threads))


def percentile(values: Iterable[float], q: float) -> float | None:
    v = list(values)
    return float(np.percentile(np.asarray(v, dtype=float), q)) if v else None


class PolicyWorker:
    def __init__(self, runtime: Policy, cameras: tuple[str, ...], publish: Callable[[np.ndarray, float], None], *,
                 max_rate_hz: float = robot_spec.POLICY_HZ, max_observation_age: float = robot_spec.MAX_OBSERVATION_AGE,
                 clock: Callable[[], float] = time.time, on_error: Callable[[str], object] | None = None):
        if not callable(getattr(runtime, "step", None)):
            raise PolicyConfigError(f"runtime {type(runtime).__name__} has no step(observation) method")
        if not cameras:
            raise PolicyConfigError("the policy needs at least one camera")
        if not max_rate_hz > 0:
            raise PolicyConfigError(f"max_rate_hz must be > 0, got {max_rate_hz}")
        self.runtime = runtime
        self.cameras = tuple(cameras)
        self.publish = publish
        self.min_period = 1.0 / float(max_rate_hz)
        self.max_observation_age = float(max_observation_age)
        self.clock = clock
        self.on_error = on_error
        self._lock = threading.Lock()
        self._images: dict[str, tuple[np.ndarray, float]] = {}
        self._state: np.ndarray | None = None
        self._instruction: str | None = None
        self._new = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_obs_stamp: float | None = None
        self._busy = False
        self.inferences = 0
        self.chunks = 0
        self.nonfinite_chunks = 0
        self.errors = 0
        self.last_error = ""
        self.skipped: dict[str, int] = {}
        self.latencies: deque[float] = deque(maxlen=2000)

    # ---- inputs (called from subscription callbacks; never block on inference)
    def set_image(self, camera: str, image: np.ndarray, stamp: float) -> None:
        if camera not in self.cameras:
            return
        with self._lock:
            self._images[camera] = (image, float(stamp))
        self._new.set()

    def set_state(self, state: np.ndarray) -> None:
        s = np.asarray(state, dtype=float).reshape(-1)
        if s.shape != (robot_spec.STATE_DIM,):
            return
        with self._lock:
            self._state = s

    def set_instruction(self, text: str | None) -> None:
        with self._lock:
            self._instruction = text or None
            self._last_obs_stamp = None  # a new task: the next observation is new even if the frame is not
        self._new.set()

    def clear_observations(self) -> None:
        with self._lock:
            self._images.clear()
            self._state = None
            self._last_obs_stamp = None

    @property
    def instruction(self) -> str | None:
        return self._instruction

    @property
    def busy(self) -> bool:
        return self._busy

    # ---- one step (the thread's body; callable directly in tests)
    def _skip(self, why: str) -> str:
        self.skipped[why] = self.skipped.get(why, 0) + 1
        return why

    def step_once(self) -> str:
        """Run one inference on the latest observation if there is a new one; returns what happened."""
        with self._lock:
            instruction = self._instruction
            state = None if self._state is None else self._state.copy()
            images = dict(self._images)
            last = self._last_obs_stamp
        if not instruction:
            return self._skip("no_instruction")
        missing = [c for c in self.cameras if c not in images]
        if missing:
            return self._skip("no_image")
        if state is None:
            return self._skip("no_state")
        obs_stamp = min(images[c][1] for c in self.cameras)
        if last is not None and obs_stamp <= last:
            return "no_new_observation"
        if self.clock() - obs_stamp > self.max_observation_age:
            return self._skip("stale_observation")
        obs = {"images": {c: images[c][0] for c in self.cameras}, "state": state, "instruction": instruction}
        self._busy = True
        t0 = time.perf_counter()
        try:
            actions = self.runtime.step(obs)
        except Exception as e:  # a failing model must not kill the node: no chunk, counted, reported
            self.errors += 1
            self.last_error = f"{type(e).__name__}: {e}"
            if self.on_error is not None:
                self.on_error(self.last_error)
            return self._skip("runtime_error")
        finally:
            self._busy = False
            self.latencies.append(time.perf_counter() - t0)
            self.inferences += 1
        with self._lock:
            self._last_obs_stamp = obs_stamp
            still_same_task = self._instruction == instruction
        if not still_same_task:
            return self._skip("instruction_changed")
        try:
            a = np.asarray(actions, dtype=float)
        except (TypeError, ValueError):
            return self._skip("bad_shape")
        if a.ndim != 2 or a.shape[1] != robot_spec.ACTION_DIM or a.shape[0] < 1:
            return self._skip("bad_shape")
        if not np.all(np.isfinite(a)):
            self.nonfinite_chunks += 1
        self.publish(a, obs_stamp)
        self.chunks += 1
        return "published"

    # ---- thread
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="policy-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._new.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _loop(self) -> None:
        lower_thread_priority(INFERENCE_NICE)
        next_ok = 0.0
        while not self._stop.is_set():
            self._new.wait(timeout=0.1)
            if self._stop.is_set():
                break
            wait = next_ok - time.monotonic()
            if wait > 0:
                self._stop.wait(wait)
                continue
            self._new.clear()
            t = time.monotonic()
            if self.step_once() in ("published", "runtime_error", "bad_shape", "instruction_changed"):
                next_ok = t + self.min_period

    def stats(self) -> dict:
        lat = list(self.latencies)

        def ms(q: float) -> float | None:
            v = percentile(lat, q)
            return None if v is None else round(1000 * v, 2)

        return {
            "instruction": self._instruction or "",
            "inferences": self.inferences,
            "chunks": self.chunks,
            "nonfinite_chunks": self.nonfinite_chunks,
            "errors": self.errors,
            "last_error": self.last_error,
            "skipped": dict(self.skipped),
            "latency_p50_ms": ms(50),
            "latency_p99_ms": ms(99),
        }
