"""Cameras of the robot side (numpy + OpenCV / pyrealsense2, no ROS; nodes/camera_node.py wraps them).

- sources.py: `CameraSource` and its RealSense, OpenCV, sim and fake implementations, `make_source`,
  `ReconnectingCamera`, and the capture-time stamping of frames.
- calibration.py: ChArUco board, intrinsics and hand-eye extrinsics of the fixed camera, calibration files.
"""
