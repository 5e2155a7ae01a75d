"""TensorRT engine building for the export side. The implementation lives on the robot side
(etc_ros/policy/tensorrt.py: tensorrt + cuda-python, no torch) because the robot builds and runs engines for its
own GPU; this module re-exports it for `etc-vla export`."""
from etc_ros.policy.tensorrt import (  # noqa: F401
    TensorRTError,
    TrtGraph,
    TrtGraphs,
    build_bundle_engines,
    build_engine,
    engine_path_for,
)
