"""Teleop recorder (pure): RecordingSession, the episode state machine over DatasetWriter; executed actions,
calibration, refusals, crash safety (SIGKILL mid-episode), the raw MCAP log (McapLog), StampedBuffer, throughput."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from etc_ros.core import spec as robot_spec
from etc_ros.core.camera import CameraIntrinsics, CameraModel, look_at
from etc_ros.core.kinematics import WidowXKinematics, action_between
from etc_ros.data import DatasetReader, validate_dataset
from etc_ros.teleop.mcap_log import McapLog
from etc_ros.teleop.recorder import RecorderConfig, RecorderError, RecordingSession, find_camera_models, free_mb
from etc_ros.teleop.stamped_buffer import StampedBuffer

ROOT = Path(__file__).resolve().parents[1]
KIN = WidowXKinematics.from_urdf()
CAM = CameraModel(CameraIntrinsics(), look_at([0.7, 0.3, 0.45], [0.25, 0.0, 0.08]), "primary")
T0 = 1_700_000_000_000_000_000


def _cfg(tmp_path, **kw) -> RecorderConfig:
    base = dict(root=str(tmp_path / "eps"), min_free_mb=1.0, stop_free_mb=0.0, image_height=48, image_width=64)
    base.update(kw)
    return RecorderConfig(**base)


def _image(k: int, h: int = 120, w: int = 160) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(xx + 3 * k) % 256, (yy + k) % 256, np.full_like(xx, 40)], -1).astype(np.uint8)


def _feed(core: RecordingSession, n: int, t0_ns: int = T0, q0=None, dq=None, grip=None, cmd=None, step_ns=200_000_000):
    q0 = robot_spec.READY_POSE if q0 is None else q0
    dq = np.array([0.01, 0.005, -0.004, 0.0, 0.003, 0.002]) if dq is None else dq
    qs = []
    for k in range(n):
        q = q0 + k * dq
        g = 1.0 if grip is None else grip[k]
        c = None if cmd is None else cmd[k]
        assert core.add_sample({"primary": _image(k)}, q, g, t0_ns + k * step_ns, c)
        qs.append(q)
    return np.array(qs)


def test_records_executed_actions_calibration_and_metadata(tmp_path):
    core = RecordingSession(_cfg(tmp_path, task={"family": "pick_place", "object": "cube"}),
                            camera_models={"primary": CAM})
    assert core.start()[0] is False  # no instruction yet
    ok, msg = core.relabel("pick up the red cube")
    assert ok
    ok, msg = core.start()
    assert ok and core.recording, msg
    grip = np.r_[np.ones(5), np.linspace(1, 0.3, 5)]
    cmd = np.r_[np.ones(4), np.zeros(6)]
    qs = _feed(core, 10, grip=grip, cmd=cmd)
    ok, msg = core.stop(success=True)
    assert ok and "episode 0 saved" in msg and "10 frames" in msg, msg
    assert validate_dataset(core.root) == []
    r = DatasetReader(core.root)
    ep = r.load_episode(0)
    assert ep.instruction == "pick up the red cube" and ep.split == "target" and ep.success is True
    assert ep.images["primary"].shape == (10, 48, 64, 3)  # resized to the stored size
    assert np.allclose(ep.state[:, :6], qs, atol=1e-6) and np.allclose(ep.state[:, 6], grip, atol=1e-6)
    T = KIN.fk(qs)
    exp = action_between(T[:-1], T[1:], cmd[1:])  # the operator's command in force at the next frame
    assert np.allclose(ep.action[:-1], exp, atol=1e-5)
    assert np.allclose(ep.action[-1], [0, 0, 0, 0, 0, 0, cmd[-1]])  # last frame holds
    assert np.allclose(ep.timestamp, np.arange(10) * 0.2, atol=1e-6)
    m = ep.cameras["primary"]  # calibration at the stored size
    assert (m.intrinsics.width, m.intrinsics.height) == (64, 48)
    assert m.intrinsics.fx == pytest.approx(CAM.intrinsics.fx * 64 / 640)
    assert np.allclose(m.T_base_cam, CAM.T_base_cam)
    meta = r.episode_meta(0)["metadata"]
    assert meta["source"] == "teleop" and meta["task"]["family"] == "pick_place"
    # the same episode recorded with measured gripper actions
    core2 = RecordingSession(_cfg(tmp_path, root=str(tmp_path / "m"), gripper_action="measured"), {"primary": CAM})
    core2.start("pick")
    _feed(core2, 10, grip=grip, cmd=cmd)
    core2.stop()
    a2 = DatasetReader(tmp_path / "m").load_episode(0).action
    assert np.allclose(a2[:-1, 6], grip[1:], atol=1e-6)
    core.close()
    core2.close()


def test_relabel_discard_min_frames_and_indices(tmp_path):
    core = RecordingSession(_cfg(tmp_path, min_frames=3), camera_models={})
    core.relabel("first task")
    core.start()
    core.relabel("second task")  # before the first frame: this episode
    _feed(core, 4)
    ok, msg = core.relabel("third task")  # after frames: from the next episode on
    assert ok and "next episode" in msg
    core.stop()
    assert core.start()[0]
    _feed(core, 3, t0_ns=T0 + 10**10)
    ok, msg = core.discard()
    assert ok and "discarded" in msg and not core.recording
    core.start()
    _feed(core, 2, t0_ns=T0 + 2 * 10**10)
    ok, msg = core.stop()
    assert not ok and "only 2 frame(s)" in msg  # too short: dropped
    core.start()
    _feed(core, 5, t0_ns=T0 + 3 * 10**10)
    assert core.stop(success=False)[0]
    assert core.relabel("")[0] is False and core.relabel("bad\x00text")[0] is False
    assert core.stop()[0] is False and core.discard()[0] is False  # idle
    r = DatasetReader(core.root)
    assert r.num_episodes == 2 and [r.episode_meta(i)["instruction"] for i in range(2)] == ["second task", "third task"]
    assert r.episode_meta(1)["success"] is False and r.episode_meta(0)["cameras"] is None
    assert core.counters["episodes_saved"] == 2 and core.counters["episodes_discarded"] == 2
    assert validate_dataset(core.root) == []
    core.close()


def test_rejected_samples_and_automatic_stops(tmp_path):
    core = RecordingSession(_cfg(tmp_path, max_frames=6), camera_models={})
    core.start("go")
    assert not core.add_sample({"wrist": _image(0)}, robot_spec.READY_POSE, 1.0, T0)  # wrong camera
    assert not core.add_sample({"primary": _image(0)}, np.zeros(5), 1.0, T0)  # wrong joint count
    assert not core.add_sample({"primary": np.zeros((4, 4), np.uint8)}, robot_spec.READY_POSE, 1.0, T0)
    assert core.add_sample({"primary": _image(0)}, robot_spec.READY_POSE, 1.0, T0)
    assert not core.add_sample({"primary": _image(1)}, robot_spec.READY_POSE, 1.0, T0)  # not newer
    assert core.counters["samples_rejected"] == 4
    _feed(core, 5, t0_ns=T0 + 10**9)
    assert not core.recording and "max_frames 6" in core.last_message  # stopped and kept by itself
    assert DatasetReader(core.root).episode_length(0) == 6
    core.close()


def test_refusals_disk_calibration_and_spec(tmp_path):
    core = RecordingSession(_cfg(tmp_path, min_free_mb=1e12), camera_models={})
    ok, msg = core.start("go")
    assert not ok and "MB free" in msg and "min_free_mb" in msg and not core.recording
    core = RecordingSession(_cfg(tmp_path, require_calibration=True, calibration_dir=str(tmp_path / "none")))
    ok, msg = core.start("go")
    assert not ok and "no calibration" in msg and "primary" in msg
    # a calibration of another aspect ratio is not written into the episode (and refused when required)
    wide = CameraModel(CameraIntrinsics(1280, 720, 900, 900, 640, 360), CAM.T_base_cam, "primary")
    core = RecordingSession(_cfg(tmp_path, root=str(tmp_path / "wide")), camera_models={"primary": wide})
    core.start("go")
    _feed(core, 3)
    core.stop()
    meta = DatasetReader(tmp_path / "wide").episode_meta(0)
    assert meta["cameras"] is None and "aspect ratio" in meta["metadata"]["recorder"]["calibration_problems"][0]
    core.close()
    core = RecordingSession(_cfg(tmp_path, root=str(tmp_path / "wide2"), require_calibration=True),
                            camera_models={"primary": wide})
    core.start("go")
    assert not core.add_sample({"primary": _image(0)}, robot_spec.READY_POSE, 1.0, T0)
    assert not core.recording and "aspect ratio" in core.last_message
    core.close()
    # a dataset recorded with another image size is not appended to
    core = RecordingSession(_cfg(tmp_path, root=str(tmp_path / "wide"), image_height=32, image_width=32),
                            camera_models={})
    ok, msg = core.start("go")
    assert not ok and "different spec" in msg
    with pytest.raises(RecorderError, match="image_height"):
        RecordingSession(_cfg(tmp_path, image_height=0))
    with pytest.raises(RecorderError, match="split"):
        RecordingSession(_cfg(tmp_path, split="a b"))
    with pytest.raises(RecorderError, match="not recorded"):
        RecordingSession(_cfg(tmp_path), camera_models={"wrist": CAM})
    assert free_mb(tmp_path / "does" / "not" / "exist") > 0


def test_calibration_files_are_found(tmp_path):
    from etc_ros.camera.calibration import save_camera_model, save_intrinsics

    save_camera_model(CAM, tmp_path / "primary.yaml", {"rms_px": 0.3})
    save_intrinsics(CAM.intrinsics, tmp_path / "wrist.yaml", "wrist")
    found = find_camera_models(["primary", "other"], tmp_path)
    assert list(found) == ["primary"] and np.allclose(found["primary"].T_base_cam, CAM.T_base_cam)
    from etc_ros.core.errors import CalibrationError

    with pytest.raises(CalibrationError, match="extrinsics"):  # intrinsics only: not usable for episodes
        find_camera_models(["wrist"], tmp_path)
    core = RecordingSession(RecorderConfig(root=str(tmp_path / "e"), cameras=["wrist"], calibration_dir=str(tmp_path),
                                           require_calibration=True, min_free_mb=1.0))
    ok, msg = core.start("go")  # reported, not a crash
    assert not ok and "wrist.yaml" in msg and "T_base_cam" in msg


def test_native_size_and_camera_size_dataset(tmp_path):
    core = RecordingSession(_cfg(tmp_path, image_height=0, image_width=0), camera_models={"primary": CAM})
    core.start("go")
    _feed(core, 3)
    core.stop()
    ep = DatasetReader(core.root).load_episode(0)
    assert ep.images["primary"].shape[1:] == (120, 160, 3)
    assert ep.cameras["primary"].intrinsics.width == 160
    core.close()


def test_stamped_buffer_nearest():
    b = StampedBuffer(4)
    for t in (1.0, 2.0, 3.0, 2.5, 4.0):
        b.add(t, t * 10)
    assert len(b) == 4 and b.latest() == (4.0, 40.0)
    assert b.nearest(2.6) == (2.5, 25.0) and b.nearest(100) == (4.0, 40.0) and b.nearest(-5)[0] == 2.0


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time, numpy as np
    from etc_ros.core import spec as robot_spec
    from etc_ros.teleop.recorder import RecorderConfig, RecordingSession
    core = RecordingSession(RecorderConfig(root=sys.argv[1], min_free_mb=1.0, image_height=48, image_width=64),
                            camera_models={})
    t = 1_700_000_000_000_000_000
    img = np.full((48, 64, 3), 100, np.uint8)
    for ep in range(3):
        core.start(f"task {ep}")
        for k in range(12):
            t += 200_000_000
            core.add_sample({"primary": img}, robot_spec.READY_POSE + 0.01 * k, 1.0, t)
        if ep < 2:
            print(core.stop()[1], flush=True)
    print("RECORDING", flush=True)
    time.sleep(60)
""")


def test_sigkill_mid_episode_keeps_finished_episodes(tmp_path):
    root = tmp_path / "eps"
    p = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(root)], cwd=ROOT, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        t_end = time.monotonic() + 60
        while time.monotonic() < t_end:
            line = p.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("RECORDING"):
                break
        assert lines and lines[-1].startswith("RECORDING"), "".join(lines) + p.stderr.read()
        os.kill(p.pid, signal.SIGKILL)  # power loss while the third episode streams into its temp file
        p.wait(10)
    finally:
        if p.poll() is None:
            p.kill()
    warnings: list[str] = []
    assert validate_dataset(root, warnings=warnings) == []
    assert any("tmp" in w for w in warnings)  # the interrupted episode's temp file, reported, ignored
    r = DatasetReader(root)
    assert r.num_episodes == 2 and [r.episode_length(i) for i in range(2)] == [12, 12]
    # the lock died with the process: recording can go on, the next episode gets index 2
    core = RecordingSession(RecorderConfig(root=str(root), min_free_mb=1.0, image_height=48, image_width=64),
                            camera_models={})
    core.start("after the crash")
    _feed(core, 3, t0_ns=T0 + 10**12)
    ok, msg = core.stop()
    assert ok and "episode 2 saved" in msg
    assert validate_dataset(root) == []
    core.close()


def test_mcap_raw_log(tmp_path):
    from mcap.reader import make_reader

    log = McapLog(tmp_path / "raw" / "ep.mcap")
    assert not (tmp_path / "raw" / "ep.mcap").exists()  # a hidden temp file until closed
    for k in range(5):
        log.write("/joint_states", "sensor_msgs/msg/JointState", b"\x00\x01" * 8, T0 + k)
    log.write("/camera/primary/image_raw", "sensor_msgs/msg/Image", b"\x00" * 64, T0 + 9)
    path = log.close()
    with open(path, "rb") as f:
        r = make_reader(f)
        msgs = list(r.iter_messages())
        schemas = {s.name: s for s in r.get_summary().schemas.values()}
    assert len(msgs) == 6 and {c.topic for _, c, _ in msgs} == {"/joint_states", "/camera/primary/image_raw"}
    assert schemas["sensor_msgs/msg/JointState"].encoding == "ros2msg"
    assert b"float64[] position" in schemas["sensor_msgs/msg/JointState"].data
    log2 = McapLog(tmp_path / "raw" / "gone.mcap")
    log2.write("/x", "std_msgs/msg/String", b"\x00", T0)
    log2.abort()
    assert list((tmp_path / "raw").iterdir()) == [path]
    # through the core: one log per episode, deleted on discard
    core = RecordingSession(_cfg(tmp_path, mcap=True, mcap_dir=str(tmp_path / "logs")), camera_models={})
    core.start("go")
    core.mcap.write("/joint_states", "sensor_msgs/msg/JointState", b"\x00" * 8, T0)
    _feed(core, 3)
    ok, msg = core.stop()
    assert ok and "raw log" in msg
    core.start()
    _feed(core, 3, t0_ns=T0 + 10**10)
    core.discard()
    assert len(list((tmp_path / "logs").glob("*.mcap"))) == 1 and not list((tmp_path / "logs").glob(".*"))
    core.close()


def test_recording_throughput(tmp_path):
    """Frames/s the core sustains (FK + action + PNG + parquet) at the default stored size 224x224 from 640x480."""
    core = RecordingSession(_cfg(tmp_path, image_height=224, image_width=224), camera_models={"primary": CAM})
    core.start("throughput")
    rng = np.random.default_rng(0)
    base = _image(0, 480, 640)
    n = 40
    t = time.perf_counter()
    for k in range(n):
        img = np.clip(base.astype(int) + rng.integers(-8, 8, base.shape), 0, 255).astype(np.uint8)  # sensor noise
        core.add_sample({"primary": img}, robot_spec.READY_POSE + 0.002 * k, 1.0, T0 + k * 200_000_000)
    core.stop()
    fps = n / (time.perf_counter() - t)
    print(f"\nrecorder core: {fps:.1f} frames/s end to end (writer alone {core.status()['write_fps']} frames/s), "
          "224x224 PNG from 640x480")
    assert fps > 5.0  # must keep up with the 5 Hz dataset rate with margin on this 2-core machine
    core.close()
