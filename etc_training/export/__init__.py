"""Policy bundles from trained checkpoints: ONNX export (onnx_export), parity checks (parity), CPU quantization
(quantize), TensorRT engines (tensorrt_build), the bundle writer (bundle_write) and the torch backend of
etc_ros.policy.runtime.PolicyRuntime (torch_backend). See docs/export.md."""

from etc_training.export import torch_backend as _torch_backend  # noqa: E402,F401  (registers backend="torch")
