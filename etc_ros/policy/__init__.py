"""The policy on the robot side (numpy + onnxruntime / TensorRT, never torch; nodes/policy_node.py wraps the worker).

- interface.py: the `Policy` protocol, `PolicySpec` and `Observation` every runtime satisfies.
- bundle.py: the exported bundle's layout, manifest and checks.
- runtime.py: `PolicyRuntime.load(bundle)`: ONNX Runtime (or TensorRT) graphs + the processor.
- tensorrt.py, tensorrt_config.py: the TensorRT engines and their build settings.
- worker.py: `PolicyWorker`, inference on its own thread, and `load_runtime` (bundle path or fake:<name>).
- scripted.py: model-free stand-ins for a dry bringup and the benchmarks (fake:hold, fake:circle, fake:busy).
"""
