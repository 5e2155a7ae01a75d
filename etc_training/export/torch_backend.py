"""backend="torch" of etc_ros.policy.runtime.PolicyRuntime: PyTorch eager on the bundle's copy of the source
checkpoint (BUNDLE/torch/). The runtime still does the preprocessing (the shared VLAProcessor) and the
unnormalization; this class runs the model part exactly as training does (`action_head.predict`).
Loaded lazily by the runtime only when asked for: the robot never imports torch."""
from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from etc_ros.core.errors import BundleError


class TorchPolicy:
    name = "torch"

    def __init__(self, info: Any, processor: Any, threads: int | None = None, device: str = "cpu"):
        import torch

        from etc_training.models.vla import VLAPolicy

        d = info.torch_dir
        if d is None or not (d / "vla.json").is_file():
            raise BundleError(f"{info.root}: this bundle has no PyTorch checkpoint (exported with --no-torch); "
                              "backend 'torch' is not available for it")
        if threads:
            torch.set_num_threads(int(threads))
        self.policy = VLAPolicy.load(d, device=device).eval()
        self.processor = processor
        self.providers = [f"torch-{device}"]
        self.head_type = info.head_type

    def predict(self, batch: Mapping[str, Any], timing: dict) -> tuple[np.ndarray, np.ndarray, Any]:
        import torch

        t0 = time.perf_counter()
        with torch.no_grad():
            prefix = self.policy.to_torch(batch)
            norm, valid = self.policy.action_head.predict(self.policy, prefix)
        timing["torch_ms"] = 1000 * (time.perf_counter() - t0)
        return np.asarray(norm, dtype=np.float32), np.asarray(valid, dtype=bool), None


def _register() -> None:
    from etc_ros.policy.runtime import register_model_backend

    register_model_backend("torch", TorchPolicy)


_register()
