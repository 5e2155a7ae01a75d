"""Camera calibration of the fixed (over-the-shoulder) camera: the names of the calibration modules in one place
(numpy + OpenCV only, no ROS), as `etc-vla calibrate` (etc_ros/commands/calibrate.py) and the tests import them.

- board.py: the ChArUco board (`BoardConfig`, `board_image` for printing, `board_corners`), its detection
  (`detect_board`), projection through the OpenCV camera model, single-view PnP, `CalibrationReport`.
- intrinsics.py: `calibrate_intrinsics` from board views, `intrinsics_from_realsense` from a stream profile.
- handeye.py: eye-to-hand extrinsics (`calibrate_extrinsics`: hand-eye AX = XB or PnP with a known mount, then
  Levenberg-Marquardt on the reprojection error, behind an RMS quality gate) and `check_calibration`.
- calibration_files.py: calibration files (`save_intrinsics`, `save_camera_model`, `load_calibration_file`, the one
  reader, with `load_camera_model` / `load_intrinsics`) and captures (`save_views`, `load_views`).
- synthetic_views.py: rendered board views with known ground truth (`render_board_view`, `synthetic_capture`).
Rigid transforms come from etc_ros/core/transforms3d.py.
"""
from __future__ import annotations

from etc_ros.camera.board import (
    BoardConfig,
    CalibrationReport,
    Detection,
    board_corners,
    board_image,
    detect_board,
    make_board,
    project_points,
    solve_board_pose,
)
from etc_ros.camera.calibration_files import (
    load_calibration_file,
    load_camera_model,
    load_intrinsics,
    load_views,
    save_camera_model,
    save_intrinsics,
    save_views,
)
from etc_ros.camera.handeye import (
    View,
    calibrate_extrinsics,
    check_calibration,
    pose_error,
    refine_lm,
    rotation_deg,
    solve_ax_xb,
)
from etc_ros.camera.intrinsics import calibrate_intrinsics, intrinsics_from_realsense
from etc_ros.camera.synthetic_views import (
    board_facing_pose,
    default_board_mount,
    render_board_view,
    synthetic_capture,
)

__all__ = [
    "BoardConfig", "CalibrationReport", "Detection", "board_corners", "board_image", "detect_board", "make_board",
    "project_points", "solve_board_pose",
    "calibrate_intrinsics", "intrinsics_from_realsense",
    "View", "calibrate_extrinsics", "check_calibration", "pose_error", "refine_lm", "rotation_deg", "solve_ax_xb",
    "load_calibration_file", "load_camera_model", "load_intrinsics", "load_views", "save_camera_model",
    "save_intrinsics", "save_views",
    "board_facing_pose", "default_board_mount", "render_board_view", "synthetic_capture",
]
