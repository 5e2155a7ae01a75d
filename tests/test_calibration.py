"""Camera calibration on SYNTHETIC views with known ground truth: a ChArUco board rendered through a known
camera (distortion included) while the arm holds it at joint configurations whose FK places the board.

Stated accuracy (asserted below; figures printed with -s):
- exact joint readings, true intrinsics: camera pose within 0.05 deg / 0.5 mm;
- joint readings with 1 mrad noise, intrinsics estimated from the same views: within 2 deg / 12 mm, and base-frame
  workspace points reproject within 3 px (median) of where the true camera sees them (640x480);
- shuffled joint states (images paired with the wrong poses): rejected, CalibrationError carrying the RMS.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

from etc_ros.camera.calibration import (
    BoardConfig,
    View,
    board_corners,
    board_image,
    calibrate_extrinsics,
    calibrate_intrinsics,
    check_calibration,
    default_board_mount,
    detect_board,
    intrinsics_from_realsense,
    load_calibration_file,
    load_views,
    pose_error,
    project_points,
    render_board_view,
    save_views,
    synthetic_capture,
)
from etc_ros.core.camera import CameraIntrinsics, CameraModel, look_at
from etc_ros.core.errors import CalibrationError
from etc_ros.core.kinematics import WidowXKinematics
from etc_ros.core.transforms3d import xyzrpy_to_pose

BOARD = BoardConfig(squares_x=5, squares_y=4, square_length=0.025, marker_length=0.018)
INTR = CameraIntrinsics(640, 480, 610.0, 605.0, 322.0, 236.0, (-0.08, 0.05, 0.0005, -0.0003, 0.0))
T_BASE_CAM = look_at([0.62, 0.28, 0.42], [0.25, 0.0, 0.12])
KIN = WidowXKinematics.from_urdf()


@pytest.fixture(scope="module")
def capture():
    Y = default_board_mount(BOARD)
    imgs, q_true, q_noisy = synthetic_capture(KIN, INTR, T_BASE_CAM, Y, BOARD, 12, seed=0, joint_noise=0.001)
    dets = [detect_board(im, BOARD) for im in imgs]
    return dict(Y=Y, imgs=imgs, q_true=q_true, q_noisy=q_noisy, dets=dets)


def _ws_px(intr_est, X_est) -> float:
    pts = np.random.default_rng(0).uniform([0.15, -0.15, 0.0], [0.45, 0.2, 0.2], (500, 3))
    a, _ = CameraModel(INTR, T_BASE_CAM).project(pts)
    b, _ = CameraModel(intr_est, X_est).project(pts)
    return float(np.median(np.linalg.norm(a - b, axis=1)))


def test_rendered_board_is_detected_where_the_camera_model_projects_it():
    from etc_ros.camera.calibration import board_facing_pose

    T = board_facing_pose(0.45, (25.0, -15.0), (0.02, -0.01), BOARD, 10.0)
    det = detect_board(render_board_view(BOARD, INTR, T), BOARD)
    assert det is not None and len(det) == BOARD.n_corners
    P = board_corners(BOARD)[det.ids]
    uv = project_points(INTR, P @ T[:3, :3].T + T[:3, 3])
    err = np.linalg.norm(uv - det.corners, axis=1)
    assert err.mean() < 0.15 and err.max() < 0.5, err
    assert detect_board(np.full((480, 640, 3), 110, np.uint8), BOARD) is None


def test_intrinsics_from_board_views(capture):
    intr, rep = calibrate_intrinsics(capture["dets"], (640, 480), BOARD)
    print(f"\nintrinsics: fx {intr.fx:.1f} (610) fy {intr.fy:.1f} (605) cx {intr.cx:.1f} (322) cy {intr.cy:.1f} (236)"
          f", RMS {rep.rms_px:.3f} px")
    assert rep.rms_px < 0.3 and rep.views == 12
    assert abs(intr.fx - 610) / 610 < 0.02 and abs(intr.fy - 605) / 605 < 0.02
    assert abs(intr.cx - 322) < 8 and abs(intr.cy - 236) < 8
    with pytest.raises(CalibrationError, match="at least 5 views"):
        calibrate_intrinsics(capture["dets"][:3] + [None, None], (640, 480), BOARD)
    with pytest.raises(CalibrationError, match=r"RMS \d+\.\d+ px > 0\.001 px"):
        calibrate_intrinsics(capture["dets"], (640, 480), BOARD, max_rms_px=0.001)


def test_extrinsics_exact_joints_recover_the_camera_pose(capture):
    views = [View(d, KIN.fk(q)) for d, q in zip(capture["dets"], capture["q_true"])]
    X, Y, rep = calibrate_extrinsics(views, INTR, BOARD)
    rot, trans = pose_error(X, T_BASE_CAM)
    rot_b, trans_b = pose_error(Y, capture["Y"])
    print(f"\nhand-eye, exact joints: camera {rot:.4f} deg / {trans:.3f} mm, mount {rot_b:.4f} deg / {trans_b:.3f} mm, "
          f"RMS {rep.rms_px:.3f} px")
    assert rot < 0.05 and trans < 0.5 and rot_b < 0.1 and trans_b < 0.5 and rep.rms_px < 0.3


def test_extrinsics_full_pipeline_with_joint_noise(capture):
    intr, _ = calibrate_intrinsics(capture["dets"], (640, 480), BOARD)
    views = [View(d, KIN.fk(q)) for d, q in zip(capture["dets"], capture["q_noisy"])]
    X, _, rep = calibrate_extrinsics(views, intr, BOARD)
    rot, trans = pose_error(X, T_BASE_CAM)
    ws = _ws_px(intr, X)
    print(f"\nhand-eye, estimated intrinsics, 1 mrad joint noise: camera {rot:.3f} deg / {trans:.2f} mm, "
          f"RMS {rep.rms_px:.3f} px, workspace reprojection p50 {ws:.2f} px")
    assert rot < 2.0 and trans < 12.0 and ws < 3.0 and rep.rms_px < 2.0
    assert rep.details["method"] == "handeye" and len(rep.per_view_rms_px) == 12


def test_extrinsics_with_a_known_mount(capture):
    views = [View(d, KIN.fk(q)) for d, q in zip(capture["dets"], capture["q_true"])]
    X, Y, rep = calibrate_extrinsics(views, INTR, BOARD, method="pnp", T_ee_board=capture["Y"])
    rot, trans = pose_error(X, T_BASE_CAM)
    assert rot < 0.05 and trans < 0.5 and np.allclose(Y, capture["Y"])
    with pytest.raises(CalibrationError, match="needs the board pose"):
        calibrate_extrinsics(views, INTR, BOARD, method="pnp")


def test_shuffled_poses_are_rejected_with_the_figure(capture):
    views = [View(d, KIN.fk(q)) for d, q in zip(capture["dets"], capture["q_true"])]
    perm = np.random.default_rng(1).permutation(len(views))
    assert np.any(perm != np.arange(len(views)))
    bad = [View(views[i].detection, views[j].T_base_ee) for i, j in enumerate(perm)]
    with pytest.raises(CalibrationError) as ei:
        calibrate_extrinsics(bad, INTR, BOARD)
    msg = str(ei.value)
    rms = float(msg.split("RMS ")[1].split(" px")[0])
    print(f"\nshuffled joint states: rejected at RMS {rms:.1f} px")
    assert rms > 2.0 and "do not belong together" in msg
    with pytest.raises(CalibrationError, match="at least 5 usable views"):
        calibrate_extrinsics(views[:3] + [View(None, views[3].T_base_ee)], INTR, BOARD)  # type: ignore[arg-type]


def test_check_passes_then_flags_a_moved_camera(capture):
    views = [View(d, KIN.fk(q)) for d, q in zip(capture["dets"], capture["q_true"])]
    model = CameraModel(INTR, T_BASE_CAM, "primary")
    rep = check_calibration(model, views, BOARD, capture["Y"])
    assert rep.rms_px < 0.3
    bumped = CameraModel(INTR, T_BASE_CAM @ xyzrpy_to_pose([0.01, 0.0, 0.0, 0.0, 0.01, 0.0]), "primary")
    with pytest.raises(CalibrationError, match="camera moved"):
        check_calibration(bumped, views, BOARD, capture["Y"])


def test_cli_intrinsics_extrinsics_check(capture, tmp_path, capsys):
    from etc_training.cli import main

    views_dir = tmp_path / "views"
    save_views(views_dir, capture["imgs"], capture["q_noisy"])
    assert len(load_views(views_dir)) == 12
    board = ["--squares-x", "5", "--squares-y", "4", "--square", "0.025", "--marker", "0.018"]
    out = tmp_path / "calib"
    assert main(["calibrate", "intrinsics", "--views", str(views_dir), "--out-dir", str(out)] + board) == 0
    assert main(["calibrate", "extrinsics", "--views", str(views_dir), "--out-dir", str(out)]) == 0  # board stored
    d = load_calibration_file(out / "primary.yaml")
    X = np.asarray(d["T_base_cam"])
    rot, trans = pose_error(X, T_BASE_CAM)
    assert rot < 2.0 and trans < 12.0 and d["calibration"]["rms_px"] < 2.0
    assert main(["calibrate", "check", "--views", str(views_dir), "--out-dir", str(out),
                 "--overlays", str(tmp_path / "look")]) == 0
    assert len(list((tmp_path / "look").glob("*.png"))) == 12
    text = capsys.readouterr().out
    assert "OK: camera 'primary'" in text and "reprojection RMS" in text
    # the camera was bumped since: check fails (exit 1)
    import yaml

    d["T_base_cam"] = (X @ xyzrpy_to_pose([0.0, 0.02, 0.0, 0.02, 0.0, 0.0])).tolist()
    (out / "primary.yaml").write_text(yaml.safe_dump(d))
    assert main(["calibrate", "check", "--views", str(views_dir), "--out-dir", str(out)]) == 1
    assert "FAILED" in capsys.readouterr().out
    # missing joint states for extrinsics: clear error (exit 2)
    (views_dir / "view_000.json").unlink()
    assert main(["calibrate", "extrinsics", "--views", str(views_dir), "--out-dir", str(out)]) == 2
    assert "no joint state file" in capsys.readouterr().err
    # the recorder picks the saved model up
    from etc_ros.teleop.recorder import find_camera_models

    assert "primary" in find_camera_models(["primary"], out)


def test_board_image_and_bad_boards(tmp_path):
    img = board_image(BOARD, 100, 25)
    assert img.shape == (4 * 100 + 50, 5 * 100 + 50) and img.dtype == np.uint8
    assert detect_board(img, BOARD) is not None
    for kw, needle in ((dict(squares_x=1), "2x2"), (dict(marker_length=0.03), "marker_length"),
                       (dict(dictionary="DICT_9X9_1"), "dictionary")):
        with pytest.raises(CalibrationError, match=needle):
            BoardConfig(**{**BOARD.to_dict(), **kw}).check()
    with pytest.raises(CalibrationError, match="not found"):
        load_views(tmp_path / "none")


def test_realsense_intrinsics_from_the_stream_profile(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pyrealsense2", None)
    with pytest.raises(CalibrationError, match="pip install pyrealsense2"):
        intrinsics_from_realsense()
    calls = {}
    intr = types.SimpleNamespace(width=640, height=480, fx=615.2, fy=615.9, ppx=318.1, ppy=241.7,
                                 coeffs=[0.0] * 5, model="distortion.inverse_brown_conrady")
    profile = types.SimpleNamespace(get_stream=lambda s: types.SimpleNamespace(
        as_video_stream_profile=lambda: types.SimpleNamespace(get_intrinsics=lambda: intr)))

    class Pipe:
        def start(self, cfg):
            calls["start"] = cfg.streams
            return profile

        def stop(self):
            calls["stop"] = True

    class Cfg:
        def __init__(self):
            self.streams = []

        def enable_device(self, s):
            self.streams.append(("device", s))

        def enable_stream(self, *a):
            self.streams.append(a)

    rs = types.SimpleNamespace(pipeline=Pipe, config=Cfg, stream=types.SimpleNamespace(color="color"),
                               format=types.SimpleNamespace(rgb8="rgb8"))
    got = intrinsics_from_realsense(640, 480, 30, "123", module=rs)
    assert (got.fx, got.cy, got.distortion) == (615.2, 241.7, ()) and calls["stop"]
    assert ("device", "123") in calls["start"] and ("color", 640, 480, "rgb8", 30) in calls["start"]


def test_one_reader_of_calibration_files(tmp_path):
    """load_calibration_file reads every calibration file; the camera model (recorder) and the intrinsics (camera
    node's `calibration` parameter) are built on it, with the same errors for the same faults."""
    import json

    from etc_ros.camera.calibration import load_camera_model, load_intrinsics, save_camera_model, save_intrinsics

    full = save_camera_model(CameraModel(INTR, T_BASE_CAM, "primary"), tmp_path / "primary.yaml", {"rms_px": 0.3})
    m = load_camera_model(full)
    assert m.intrinsics == INTR and np.allclose(m.T_base_cam, T_BASE_CAM) and m.name == "primary"
    assert load_intrinsics(full) == INTR
    d = load_calibration_file(full)
    assert d["calibration"] == {"rms_px": 0.3} and "calibration_time" in d
    only = save_intrinsics(INTR, tmp_path / "intr.yaml", "primary")
    assert load_intrinsics(only) == INTR and "T_base_cam" not in load_calibration_file(only)
    with pytest.raises(CalibrationError, match="T_base_cam"):
        load_camera_model(only)
    (tmp_path / "model.json").write_text(json.dumps(CameraModel(INTR, T_BASE_CAM, "side").to_dict()))
    assert load_camera_model(tmp_path / "model.json").name == "side"
    (tmp_path / "bare.json").write_text(json.dumps(INTR.to_dict()))  # the intrinsics mapping alone
    assert load_intrinsics(tmp_path / "bare.json") == INTR
    with pytest.raises(CalibrationError, match="no 'intrinsics'"):
        load_calibration_file(tmp_path / "bare.json")
    for loader in (load_calibration_file, load_camera_model, load_intrinsics):
        with pytest.raises(CalibrationError, match="not found"):
            loader(tmp_path / "none.yaml")
    (tmp_path / "bad.yaml").write_text("intrinsics: [1, 2\n")
    (tmp_path / "bad.json").write_text("{\"intrinsics\": ")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    for name, needle in (("bad.yaml", "invalid YAML"), ("bad.json", "invalid JSON"), ("list.yaml", "mapping")):
        for loader in (load_calibration_file, load_camera_model, load_intrinsics):
            with pytest.raises(CalibrationError, match=needle):
                loader(tmp_path / name)
