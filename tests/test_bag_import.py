"""rosbag2 (sqlite3 and MCAP) import: bags written here with `rosbags`, imported, validated, checked against FK."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer  # pinned in requirements.txt: a missing one fails loudly
from rosbags.typesys import Stores, get_typestore

from etc_ros.core import kinematics
from etc_ros.core.spec import JOINT_NAMES, gripper_from_finger
from etc_ros.core.transforms3d import pose_to_xyzrpy
from etc_ros.data import DatasetError, DatasetReader, validate_dataset
from etc_ros.data.bag_import import import_bag

TS = get_typestore(Stores.ROS2_HUMBLE)
Image = TS.types["sensor_msgs/msg/Image"]
JointState = TS.types["sensor_msgs/msg/JointState"]
String = TS.types["std_msgs/msg/String"]
Header = TS.types["std_msgs/msg/Header"]
Time = TS.types["builtin_interfaces/msg/Time"]
T0 = 1_700_000_000_000_000_000
IMG_H, IMG_W = 12, 16
# message joint order deliberately differs from spec.JOINT_NAMES, with an Interbotix-style prefix
MSG_JOINTS = ["wx250s/gripper", "wx250s/left_finger", "wx250s/right_finger", "wx250s/wrist_rotate", "wx250s/waist",
              "wx250s/shoulder", "wx250s/elbow", "wx250s/forearm_roll", "wx250s/wrist_angle"]


def _header(t: int) -> object:
    return Header(stamp=Time(sec=t // 10**9, nanosec=t % 10**9), frame_id="")


def arm_q(t_s: float) -> np.ndarray:
    return np.array([0.3 * np.sin(t_s), -0.4 + 0.1 * t_s, 0.5, 0.05 * t_s, 1.2 - 0.1 * t_s, 0.2 * np.cos(t_s)])


def finger(t_s: float) -> float:
    return 0.037 if t_s < 1.0 else 0.015  # open, then closed at t = 1 s


def image_at(k: int) -> np.ndarray:
    rgb = np.zeros((IMG_H, IMG_W, 3), np.uint8)
    rgb[..., 0] = k * 7 % 256  # red encodes the image index
    rgb[..., 1] = 200
    rgb[..., 2] = 30
    return rgb


def write_bag(path: Path, storage: StoragePlugin, *, duration_s: float = 2.0, instruction: str | None = "pick the cube",
              encoding: str = "bgr8") -> None:
    with Writer(path, version=9, storage_plugin=storage) as w:
        ci = w.add_connection("/camera/color/image_raw", Image.__msgtype__, typestore=TS)
        cj = w.add_connection("/wx250s/joint_states", JointState.__msgtype__, typestore=TS)
        if instruction is not None:
            cs = w.add_connection("/instruction", String.__msgtype__, typestore=TS)
            w.write(cs, T0, TS.serialize_cdr(String(data=instruction), String.__msgtype__))
        n_img = int(duration_s * 15) + 1  # 15 Hz camera, stamps jittered by 3 ms
        for k in range(n_img):
            t = T0 + k * 66_666_667 + (3_000_000 if k % 2 else 0)
            rgb = image_at(k)
            data = rgb[..., ::-1] if encoding == "bgr8" else rgb
            msg = Image(header=_header(t), height=IMG_H, width=IMG_W, encoding=encoding, is_bigendian=0,
                        step=IMG_W * 3, data=np.ascontiguousarray(data).reshape(-1))
            w.write(ci, t + 5_000_000, TS.serialize_cdr(msg, Image.__msgtype__))  # received 5 ms later
        for k in range(int(duration_s * 100) + 1):  # 100 Hz joint states
            t = T0 + k * 10_000_000
            q = arm_q(k / 100)
            f = finger(k / 100)
            pos = {"gripper": 0.5, "left_finger": f, "right_finger": -f, "wrist_rotate": q[5], "waist": q[0],
                   "shoulder": q[1], "elbow": q[2], "forearm_roll": q[3], "wrist_angle": q[4]}
            msg = JointState(header=_header(t), name=MSG_JOINTS,
                             position=np.array([pos[n.split("/")[-1]] for n in MSG_JOINTS]),
                             velocity=np.zeros(0), effort=np.zeros(0))
            w.write(cj, t, TS.serialize_cdr(msg, JointState.__msgtype__))


@pytest.mark.parametrize("storage", [StoragePlugin.SQLITE3, StoragePlugin.MCAP], ids=["sqlite3", "mcap"])
def test_import_bag_round_trip(tmp_path, storage):
    bag = tmp_path / f"bag_{storage.name.lower()}"
    write_bag(bag, storage)
    out = tmp_path / "ds"
    idx = import_bag(bag, out, image_topic="/camera/color/image_raw", joint_state_topic="/wx250s/joint_states",
                     instruction_topic="/instruction", fps=5.0, progress=False)
    assert idx == 0
    assert validate_dataset(out) == []
    r = DatasetReader(out)
    ep = r.load_episode(0)
    n = len(ep)
    assert n == 11  # 0.0 .. 2.0 s at 5 Hz
    assert ep.instruction == "pick the cube"
    np.testing.assert_allclose(ep.timestamp, np.arange(n) / 5.0, atol=1e-6)
    np.testing.assert_array_equal(ep.timestamp_ns, T0 + np.arange(n) * 200_000_000)
    # nearest image for grid time k*0.2 s is camera frame 3k (15 Hz): red channel = 7 * 3k; BGR -> RGB
    img = ep.images["primary"]
    assert img.shape == (n, IMG_H, IMG_W, 3)
    np.testing.assert_array_equal(img[:, 0, 0, 0], (np.arange(n) * 3 * 7) % 256)
    assert np.all(img[..., 1] == 200) and np.all(img[..., 2] == 30)
    # joints mapped by name into spec.JOINT_NAMES order; gripper from the left finger
    q = np.stack([arm_q(k * 0.2) for k in range(n)])
    np.testing.assert_allclose(ep.state[:, :6], q, atol=1e-6)
    g = np.array([float(gripper_from_finger(finger(k * 0.2))) for k in range(n)])
    np.testing.assert_allclose(ep.state[:, 6], g, atol=1e-6)
    # EE poses = FK; actions = Bridge deltas between consecutive EE poses, gripper = next opening
    model = kinematics.WidowXKinematics.from_urdf()
    Tq = model.fk(q)
    np.testing.assert_allclose(ep.ee_pose, pose_to_xyzrpy(Tq), atol=1e-5)
    want = kinematics.action_between(Tq[:-1], Tq[1:], g[1:])
    np.testing.assert_allclose(ep.action[:-1], want, atol=1e-5)
    np.testing.assert_allclose(kinematics.apply_action(Tq[:-1], ep.action[:-1].astype(float))[:, :3, 3], Tq[1:, :3, 3],
                               atol=1e-5)
    np.testing.assert_allclose(ep.action[-1], [0, 0, 0, 0, 0, 0, g[-1]], atol=1e-7)
    m = ep.metadata
    assert m["source"] == "bag" and m["gripper_events"] == [{"frame": 5, "type": "close"}]
    assert m["sync_max_error_s"]["image"] <= 0.0035 and m["sync_max_error_s"]["joint_states"] < 1e-9
    assert ep.objects == [[] for _ in range(n)] and ep.cameras is None


def test_import_bag_appends_and_resizes(tmp_path):
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.MCAP, encoding="rgb8", instruction=None)
    out = tmp_path / "ds"
    for k in range(2):
        assert import_bag(bag, out, image_topic="/camera/color/image_raw", joint_state_topic="/wx250s/joint_states",
                          instruction=f"task {k}", fps=2.5, image_size=(8, 10), progress=False) == k
    r = DatasetReader(out)
    assert r.num_episodes == 2 and r.spec.cameras == {"primary": (8, 10)} and r.fps == 2.5
    assert r.tasks == {0: "task 0", 1: "task 1"} and len(r.load_episode(1)) == 6
    assert validate_dataset(out) == []
    with pytest.raises(DatasetError, match="does not match this bag"):
        import_bag(bag, out, image_topic="/camera/color/image_raw", joint_state_topic="/wx250s/joint_states",
                   instruction="x", fps=5.0, image_size=(8, 10), progress=False)


def test_import_bag_errors_are_clear(tmp_path):
    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.SQLITE3, duration_s=0.5, instruction=None)
    kw = dict(image_topic="/camera/color/image_raw", joint_state_topic="/wx250s/joint_states", progress=False)
    with pytest.raises(DatasetError) as e:
        import_bag(bag, tmp_path / "o1", **{**kw, "image_topic": "/cam/rgb"}, instruction="x")
    msg = str(e.value)
    assert "no image topic '/cam/rgb'" in msg
    assert "/camera/color/image_raw [sensor_msgs/msg/Image]" in msg and "/wx250s/joint_states" in msg
    with pytest.raises(DatasetError, match="has type sensor_msgs/msg/JointState, expected sensor_msgs/msg/Image"):
        import_bag(bag, tmp_path / "o2", **{**kw, "image_topic": "/wx250s/joint_states"}, instruction="x")
    with pytest.raises(DatasetError, match="no instruction"):
        import_bag(bag, tmp_path / "o3", **kw)
    with pytest.raises(DatasetError, match="no instruction topic '/say'"):
        import_bag(bag, tmp_path / "o4", **kw, instruction_topic="/say")
    with pytest.raises(DatasetError, match="no such bag"):
        import_bag(tmp_path / "missing", tmp_path / "o5", **kw, instruction="x")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o3").exists()


def test_import_bag_missing_joint_names(tmp_path):
    bag = tmp_path / "bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        ci = w.add_connection("/img", Image.__msgtype__, typestore=TS)
        cj = w.add_connection("/js", JointState.__msgtype__, typestore=TS)
        w.write(ci, T0, TS.serialize_cdr(Image(header=_header(T0), height=2, width=2, encoding="rgb8",
                                               is_bigendian=0, step=6, data=np.zeros(12, np.uint8)),
                                         Image.__msgtype__))
        w.write(cj, T0, TS.serialize_cdr(JointState(header=_header(T0), name=list(JOINT_NAMES),
                                                    position=np.zeros(6), velocity=np.zeros(0), effort=np.zeros(0)),
                                         JointState.__msgtype__))
    with pytest.raises(DatasetError, match=r"lacks joints \['left_finger'\]"):
        import_bag(bag, tmp_path / "o", image_topic="/img", joint_state_topic="/js", instruction="x", progress=False)


def test_cli_import_bag(tmp_path, capsys):
    from etc_training.cli import main

    bag = tmp_path / "bag"
    write_bag(bag, StoragePlugin.MCAP, duration_s=1.0)
    out = tmp_path / "ds"
    rc = main(["data", "import-bag", str(bag), str(out), "--image-topic", "/camera/color/image_raw",
               "--joint-topic", "/wx250s/joint_states", "--instruction-topic", "/instruction", "--fps", "5"])
    assert rc == 0 and "as episode 0" in capsys.readouterr().out
    assert main(["data", "validate", str(out)]) == 0
    assert "OK: 1 episodes, 6 frames" in capsys.readouterr().out
    rc = main(["data", "import-bag", str(bag), str(tmp_path / "o2"), "--image-topic", "/nope", "--joint-topic",
               "/wx250s/joint_states", "--instruction", "x"])
    assert rc == 2 and "the bag has:" in capsys.readouterr().err
    info = json.loads((out / "meta/info.json").read_text())
    assert info["total_frames"] == 6
