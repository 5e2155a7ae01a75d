"""Cameras of the robot side (numpy + OpenCV / pyrealsense2, no ROS; nodes/camera_node.py wraps them).

- sources.py: `CameraSource` and its RealSense, OpenCV, sim and fake implementations, `make_source`,
  `ReconnectingCamera`, and the capture-time stamping of frames.
- calibration of the fixed camera: board.py (ChArUco board, detection, single-view PnP), intrinsics.py,
  handeye.py (eye-to-hand extrinsics and their check), calibration_files.py (calibration files, with the one
  reader `load_calibration_file`, and view captures), synthetic_views.py (rendered views with ground truth);
  calibration.py gathers their public names.
"""
