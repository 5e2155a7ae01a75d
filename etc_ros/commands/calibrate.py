"""`etc-robot calibrate ...` (also `etc-vla calibrate`): camera intrinsics / extrinsics of the fixed
camera (etc_ros.camera.calibration, docs/teleop.md).

    etc-robot calibrate board --out board.png [board flags]                   printable ChArUco board
    etc-robot calibrate intrinsics --camera primary (--views DIR | --realsense) [--out-dir config/calibration]
    etc-robot calibrate extrinsics --camera primary --views DIR [--method handeye|pnp] [--board-offset x y z r p y]
    etc-robot calibrate check --camera primary --views DIR                     reprojection error of the saved model
    etc-robot calibrate selftest [--views 12] [--joint-noise 0.001]            synthetic views, known ground truth

Views (DIR): view_NNN.png + view_NNN.json {"q": [6 joint positions, rad]} per arm pose, e.g. from the teleop
`c` key (the recorder node's ~/capture service). Board flags: --squares-x 5 --squares-y 4 --square 0.025
--marker 0.018 --dictionary DICT_4X4_50 (or --board FILE.yaml); the board is stored in the calibration file.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def _board_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("board")
    g.add_argument("--board", default=None, help="board YAML (squares_x, squares_y, square_length, marker_length, "
                                                 "dictionary, legacy)")
    g.add_argument("--squares-x", type=int, default=None)
    g.add_argument("--squares-y", type=int, default=None)
    g.add_argument("--square", type=float, default=None, help="square side [m] as printed")
    g.add_argument("--marker", type=float, default=None, help="marker side [m] as printed")
    g.add_argument("--dictionary", default=None)


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="calibrate_command", metavar="SUBCOMMAND")

    b = sub.add_parser("board", help="write a printable ChArUco board image")
    b.add_argument("--out", required=True, help="PNG file")
    b.add_argument("--px-per-square", type=int, default=200)
    _board_args(b)
    b.set_defaults(func=_board)

    i = sub.add_parser("intrinsics", help="camera intrinsics from ChArUco views or the RealSense stream profile")
    i.add_argument("--camera", default="primary")
    src = i.add_mutually_exclusive_group(required=True)
    src.add_argument("--views", help="directory of board images")
    src.add_argument("--realsense", action="store_true", help="read the RealSense color stream's intrinsics")
    i.add_argument("--width", type=int, default=640)
    i.add_argument("--height", type=int, default=480)
    i.add_argument("--fps", type=int, default=30)
    i.add_argument("--serial", default="")
    i.add_argument("--max-rms", type=float, default=1.0, help="reject above this reprojection RMS [px]")
    i.add_argument("--out-dir", default=None, help="calibration directory (default: config/calibration)")
    _board_args(i)
    i.set_defaults(func=_intrinsics)

    e = sub.add_parser("extrinsics", help="camera pose in base_link by hand-eye (board held by the gripper)")
    e.add_argument("--camera", default="primary")
    e.add_argument("--views", required=True, help="directory of view_NNN.png + view_NNN.json (joint states)")
    e.add_argument("--intrinsics", default=None, help="file with the intrinsics (default: OUT_DIR/<camera>.yaml)")
    e.add_argument("--method", choices=["handeye", "pnp"], default="handeye")
    e.add_argument("--board-offset", type=float, nargs=6, default=None, metavar=("X", "Y", "Z", "ROLL", "PITCH", "YAW"),
                   help="board pose in ee_gripper_link (m, rad 'sxyz'); needed by --method pnp")
    e.add_argument("--max-rms", type=float, default=2.0, help="reject above this reprojection RMS [px]")
    e.add_argument("--out-dir", default=None)
    _board_args(e)
    e.set_defaults(func=_extrinsics)

    c = sub.add_parser("check", help="reprojection error of a saved calibration on (new) views")
    c.add_argument("--camera", default="primary")
    c.add_argument("--views", required=True)
    c.add_argument("--calibration", default=None, help="calibration file (default: OUT_DIR/<camera>.yaml)")
    c.add_argument("--max-rms", type=float, default=2.0)
    c.add_argument("--out-dir", default=None)
    c.add_argument("--overlays", default=None, help="write the views with detected (green) and predicted (red) "
                                                  "corners and the projected gripper (blue) into this directory")
    c.set_defaults(func=_check)

    s = sub.add_parser("selftest", help="the whole pipeline on synthetic views with a known camera")
    s.add_argument("--views", type=int, default=12)
    s.add_argument("--joint-noise", type=float, default=0.001, help="std of the joint readings [rad]")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_selftest)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _board_cfg(args, stored: dict | None = None):
    import yaml

    from etc_ros.camera.calibration import BoardConfig
    from etc_ros.core.config import from_dict
    from etc_ros.core.errors import CalibrationError

    d = dict(stored or {})
    if getattr(args, "board", None):
        p = Path(args.board)
        if not p.is_file():
            raise CalibrationError(f"board file {p} not found")
        d.update(yaml.safe_load(p.read_text()) or {})
    for flag, key in (("squares_x", "squares_x"), ("squares_y", "squares_y"), ("square", "square_length"),
                      ("marker", "marker_length"), ("dictionary", "dictionary")):
        v = getattr(args, flag, None)
        if v is not None:
            d[key] = v
    return from_dict(BoardConfig, d).check()


def _out_dir(args) -> Path:
    from etc_ros.teleop.recorder import calibration_dir

    return Path(args.out_dir) if args.out_dir else calibration_dir("")


def _board(args) -> int:
    import cv2

    from etc_ros.camera.calibration import board_image

    cfg = _board_cfg(args)
    img = board_image(cfg, args.px_per_square, args.px_per_square // 4)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(args.out, img)
    print(f"board {cfg.squares_x}x{cfg.squares_y} ({cfg.dictionary}) -> {args.out}; print it so that a square "
          f"measures {cfg.square_length * 1000:.1f} mm and a marker {cfg.marker_length * 1000:.1f} mm")
    return 0


def _intrinsics(args) -> int:
    from etc_ros.camera.calibration import (
        calibrate_intrinsics,
        detect_board,
        intrinsics_from_realsense,
        load_views,
        save_intrinsics,
    )

    out = _out_dir(args) / f"{args.camera}.yaml"
    if args.realsense:
        intr = intrinsics_from_realsense(args.width, args.height, args.fps, args.serial)
        save_intrinsics(intr, out, args.camera, {"kind": "intrinsics", "source": "realsense stream profile"})
        print(f"RealSense intrinsics {intr.width}x{intr.height} fx={intr.fx:.2f} fy={intr.fy:.2f} "
              f"cx={intr.cx:.2f} cy={intr.cy:.2f} -> {out}")
        return 0
    cfg = _board_cfg(args)
    views = load_views(args.views, need_joints=False)
    sizes = {img.shape[:2] for _, img, _ in views}
    if len(sizes) != 1:
        from etc_ros.core.errors import CalibrationError

        raise CalibrationError(f"{args.views}: images of different sizes {sorted(sizes)}")
    h, w = sizes.pop()
    dets = [detect_board(img, cfg) for _, img, _ in views]
    intr, rep = calibrate_intrinsics(dets, (w, h), cfg, max_rms_px=args.max_rms)
    save_intrinsics(intr, out, args.camera, rep.to_dict())
    print(f"intrinsics {w}x{h}: fx={intr.fx:.2f} fy={intr.fy:.2f} cx={intr.cx:.2f} cy={intr.cy:.2f} "
          f"dist={[round(x, 4) for x in intr.distortion]}; reprojection RMS {rep.rms_px:.3f} px over {rep.views} "
          f"views -> {out}")
    return 0


def _views_for_extrinsics(args, cfg):
    from etc_ros.camera.calibration import View, detect_board, load_views
    from etc_ros.core.kinematics import WidowXKinematics

    kin = WidowXKinematics.from_urdf()
    views = []
    raw = load_views(args.views, need_joints=True)
    for name, img, q in raw:
        views.append(View(detect_board(img, cfg), kin.fk(q), name))
    return views, raw, kin


def _extrinsics(args) -> int:
    from etc_ros.camera.calibration import calibrate_extrinsics, load_calibration_file, save_camera_model
    from etc_ros.core.camera import CameraIntrinsics, CameraModel
    from etc_ros.core.transforms3d import xyzrpy_to_pose

    out = _out_dir(args) / f"{args.camera}.yaml"
    src = Path(args.intrinsics) if args.intrinsics else out
    d = load_calibration_file(src)
    intr = CameraIntrinsics.from_dict(d["intrinsics"])
    cfg = _board_cfg(args, (d.get("calibration_intrinsics") or {}).get("board"))
    views, raw, _ = _views_for_extrinsics(args, cfg)
    h, w = raw[0][1].shape[:2]
    if (w, h) != (intr.width, intr.height):
        from etc_ros.core.errors import CalibrationError

        raise CalibrationError(f"views are {w}x{h} but the intrinsics in {src} are for {intr.width}x{intr.height}")
    Y = xyzrpy_to_pose(args.board_offset) if args.board_offset else None
    X, Y, rep = calibrate_extrinsics(views, intr, cfg, method=args.method, T_ee_board=Y, max_rms_px=args.max_rms)
    model = CameraModel(intr, X, args.camera)
    extra = {k: v for k, v in d.items() if k.startswith("calibration_intrinsics")}
    save_camera_model(model, out, rep.to_dict(), extra)
    p = X[:3, 3]
    print(f"extrinsics ({args.method}): camera at ({p[0]:.4f}, {p[1]:.4f}, {p[2]:.4f}) m in base_link; "
          f"reprojection RMS {rep.rms_px:.3f} px over {rep.views} views ({rep.corners} corners); "
          f"median view consistency {rep.details['view_consistency_deg_p50']} deg / "
          f"{rep.details['view_consistency_mm_p50']} mm -> {out}")
    return 0


def _check(args) -> int:
    import numpy as np

    from etc_ros.camera.calibration import check_calibration, load_calibration_file
    from etc_ros.core.camera import CameraModel
    from etc_ros.core.errors import CalibrationError

    path = Path(args.calibration) if args.calibration else _out_dir(args) / f"{args.camera}.yaml"
    d = load_calibration_file(path)
    model = CameraModel.from_dict(d)
    rep_saved = d.get("calibration") or {}
    if "T_ee_board" not in rep_saved:
        raise CalibrationError(f"{path}: no board mount (calibration.T_ee_board): run `etc-vla calibrate extrinsics`")
    cfg = _board_cfg(args, rep_saved.get("board"))
    views, raw, kin = _views_for_extrinsics(args, cfg)
    Y = np.asarray(rep_saved["T_ee_board"], dtype=float)
    try:
        rep = check_calibration(model, views, cfg, Y, max_rms_px=args.max_rms)
        ok = True
    except CalibrationError as e:
        print(f"FAILED: {e}")
        rep, ok = None, False
    if args.overlays:
        _write_overlays(Path(args.overlays), model, views, raw, cfg, Y)
    if ok:
        print(f"OK: camera {args.camera!r} reprojection RMS {rep.rms_px:.3f} px over {rep.views} views "
              f"(threshold {args.max_rms} px); per view {json.dumps([round(v, 2) for v in rep.per_view_rms_px])}")
    return 0 if ok else 1


def _write_overlays(out: Path, model, views, raw, cfg, Y) -> None:
    import cv2
    import numpy as np

    from etc_ros.camera.calibration import board_corners

    out.mkdir(parents=True, exist_ok=True)
    P = board_corners(cfg)
    for v, (name, img, _) in zip(views, raw):
        im = np.ascontiguousarray(img[:, :, ::-1])
        uv_ee, _ = model.project(v.T_base_ee[:3, 3][None])
        T = v.T_base_ee @ Y
        uv_pred, _ = model.project(P @ T[:3, :3].T + T[:3, 3])
        for u, w in uv_pred:
            if np.isfinite(u):
                cv2.circle(im, (int(round(u)), int(round(w))), 3, (0, 0, 255), 1)
        if v.detection is not None:
            for u, w in v.detection.corners:
                cv2.drawMarker(im, (int(round(u)), int(round(w))), (0, 200, 0), cv2.MARKER_CROSS, 6, 1)
        if np.all(np.isfinite(uv_ee)):
            cv2.circle(im, (int(round(uv_ee[0, 0])), int(round(uv_ee[0, 1]))), 5, (255, 0, 0), 2)
        cv2.imwrite(str(out / f"{name}_check.png"), im)


def _selftest(args) -> int:
    import numpy as np

    from etc_ros.camera.calibration import (
        BoardConfig,
        View,
        calibrate_extrinsics,
        calibrate_intrinsics,
        default_board_mount,
        detect_board,
        pose_error,
        synthetic_capture,
    )
    from etc_ros.core.camera import CameraIntrinsics, CameraModel, look_at
    from etc_ros.core.kinematics import WidowXKinematics

    cfg = BoardConfig(squares_x=5, squares_y=4, square_length=0.025, marker_length=0.018)
    intr = CameraIntrinsics(640, 480, 610.0, 605.0, 322.0, 236.0, (-0.08, 0.05, 0.0005, -0.0003, 0.0))
    X = look_at([0.62, 0.28, 0.42], [0.25, 0.0, 0.12])
    Y = default_board_mount(cfg)
    kin = WidowXKinematics.from_urdf()
    imgs, _, qn = synthetic_capture(kin, intr, X, Y, cfg, args.views, seed=args.seed, joint_noise=args.joint_noise)
    dets = [detect_board(im, cfg) for im in imgs]
    intr_e, rep_i = calibrate_intrinsics(dets, (640, 480), cfg)
    Xe, Ye, rep_e = calibrate_extrinsics([View(d, kin.fk(q)) for d, q in zip(dets, qn)], intr_e, cfg)
    rot, trans = pose_error(Xe, X)
    pts = np.random.default_rng(0).uniform([0.15, -0.15, 0.0], [0.45, 0.2, 0.2], (500, 3))
    uv_t, _ = CameraModel(intr, X).project(pts)
    uv_e, _ = CameraModel(intr_e, Xe).project(pts)
    ws = float(np.median(np.linalg.norm(uv_t - uv_e, axis=1)))
    print(json.dumps({"views": args.views, "joint_noise_rad": args.joint_noise,
                      "intrinsics_rms_px": round(rep_i.rms_px, 3),
                      "fx_error_pct": round(100 * abs(intr_e.fx - intr.fx) / intr.fx, 3),
                      "extrinsics_rms_px": round(rep_e.rms_px, 3), "camera_rotation_error_deg": round(rot, 3),
                      "camera_translation_error_mm": round(trans, 2), "workspace_reprojection_px_p50": round(ws, 2)},
                     indent=2))
    return 0
