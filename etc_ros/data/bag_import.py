"""Import a rosbag2 recording (sqlite3 or MCAP storage) as one episode, with the `rosbags` library (no ROS).

    idx = import_bag("teleop_0001", "datasets/teleop", image_topic="/camera/color/image_raw",
                     joint_state_topic="/wx250s/joint_states", instruction="put the carrot in the pot")

- images: sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8), optionally resized to `image_size` (H, W) by
  etc_ros.core.image.resize_image (the model input's filter);
- joint states: sensor_msgs/JointState, names mapped to spec.JOINT_NAMES (a 'robot/' prefix is ignored) and
  left_finger -> gripper opening [0, 1] via spec.gripper_from_finger;
- instruction: `instruction=` or the first std_msgs/String on `instruction_topic`;
- resampling: a uniform grid at `fps` over the time both streams cover; each grid time takes the nearest
  image and the nearest joint state (message header stamps; the bag receive time when a stamp is zero);
- actions: Bridge 7-D between consecutive EE poses of ee_gripper_link through etc_ros.core.kinematics
  (delta xyz, delta rpy 'sxyz' in base_link, gripper = the next frame's opening); the last frame holds
  (zero motion, its own opening). Actions are not clipped (metadata counts frames beyond the Bridge clip);
- metadata: source "bag", the bag path, topics, sync errors, gripper events (opening crossing 0.5).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import DatasetError
from etc_ros.core.image import resize_image

IMAGE_TYPE = "sensor_msgs/msg/Image"
JOINT_TYPE = "sensor_msgs/msg/JointState"
STRING_TYPE = "std_msgs/msg/String"


def _stamp_ns(msg: Any, fallback: int) -> int:
    h = getattr(msg, "header", None)
    if h is not None:
        ns = int(h.stamp.sec) * 1_000_000_000 + int(h.stamp.nanosec)
        if ns > 0:
            return ns
    return int(fallback)


def _image_array(msg: Any, where: str) -> np.ndarray:
    enc = str(msg.encoding).lower()
    ch = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4}.get(enc)
    if ch is None:
        raise DatasetError(f"{where}: image encoding {msg.encoding!r} is not supported (rgb8, bgr8, rgba8, bgra8)")
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if step < w * ch or data.size < h * step:
        raise DatasetError(f"{where}: image data of {data.size} bytes does not fit {h}x{w} {enc} (step {step})")
    img = data[: h * step].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if enc.startswith("bgr"):
        img = img[..., [2, 1, 0]]
    else:
        img = img[..., :3]
    return np.ascontiguousarray(img)


def _joint_vector(msg: Any, where: str) -> np.ndarray:
    names = [str(n).split("/")[-1] for n in msg.name]
    pos = np.asarray(msg.position, dtype=np.float64)
    if len(pos) != len(names):
        raise DatasetError(f"{where}: JointState has {len(names)} names but {len(pos)} positions")
    idx = {n: i for i, n in enumerate(names)}
    need = list(robot_spec.JOINT_NAMES) + [robot_spec.GRIPPER_JOINT]
    missing = [n for n in need if n not in idx]
    if missing:
        raise DatasetError(f"{where}: JointState lacks joints {missing}; it has {names}")
    q = np.array([pos[idx[n]] for n in robot_spec.JOINT_NAMES] +
                 [float(robot_spec.gripper_from_finger(pos[idx[robot_spec.GRIPPER_JOINT]]))])
    if not np.all(np.isfinite(q)):
        raise DatasetError(f"{where}: JointState has non-finite positions")
    return q


def _nearest(times: np.ndarray, grid: np.ndarray) -> np.ndarray:
    j = np.clip(np.searchsorted(times, grid), 1, len(times) - 1)
    left = times[j - 1]
    right = times[j]
    return np.where(np.abs(grid - left) <= np.abs(right - grid), j - 1, j)


def gripper_events(opening: np.ndarray, threshold: float = 0.5) -> list[dict]:
    """Frames where the gripper opening crosses `threshold` (close: from above to below; open: reverse)."""
    out = []
    is_open = opening[0] >= threshold
    for t in range(1, len(opening)):
        now_open = opening[t] >= threshold
        if now_open != is_open:
            out.append({"frame": int(t), "type": "open" if now_open else "close"})
            is_open = now_open
    return out


def import_bag(bag_path: str | Path, out_root: str | Path, *, image_topic: str, joint_state_topic: str,
               instruction_topic: str | None = None, instruction: str | None = None, fps: float = 5.0,
               camera: str = "primary", image_size: Sequence[int] | None = None, split: str = "train",
               success: bool | None = None, camera_model: Any = None, max_frames: int | None = None,
               progress: bool = True) -> int:
    """Import one rosbag2 directory (or .mcap / .db3 file) as one episode of the dataset at `out_root`
    (created when absent; an existing dataset must have the same fps and camera). Returns the episode index."""
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError:  # pragma: no cover - rosbags is a dev/offline dependency
        raise DatasetError("importing bags needs the `rosbags` package (pip install rosbags)") from None
    from etc_ros.core import kinematics
    from etc_ros.core.transforms3d import pose_to_xyzrpy
    from etc_ros.data.schema import DatasetSpec, EpisodeData
    from etc_ros.data.writer import DatasetWriter, _is_our_dataset

    bag = Path(bag_path)
    if not bag.exists():
        raise DatasetError(f"{bag}: no such bag")
    fps = float(fps)
    if not np.isfinite(fps) or fps <= 0:
        raise DatasetError(f"fps must be > 0, got {fps}")
    paths = [bag.parent] if bag.is_file() and bag.suffix in (".mcap", ".db3") and \
        (bag.parent / "metadata.yaml").exists() else [bag]
    try:
        reader = AnyReader(paths, default_typestore=get_typestore(Stores.ROS2_HUMBLE))
        reader.open()
    except Exception as e:  # noqa: BLE001 - rosbags raises its own error types
        raise DatasetError(f"{bag}: cannot open as a rosbag2 ({type(e).__name__}: {e})") from None
    try:
        topics = {c.topic: c.msgtype for c in reader.connections}
        listing = ", ".join(f"{t} [{m}]" for t, m in sorted(topics.items())) or "none"

        def need(topic: str | None, msgtype: str, what: str) -> list:
            if topic not in topics:
                raise DatasetError(f"{bag}: no {what} topic {topic!r}; the bag has: {listing}")
            if topics[topic] != msgtype:
                raise DatasetError(f"{bag}: topic {topic!r} has type {topics[topic]}, expected {msgtype}")
            return [c for c in reader.connections if c.topic == topic]

        img_conns = need(image_topic, IMAGE_TYPE, "image")
        js_conns = need(joint_state_topic, JOINT_TYPE, "joint state")
        ins_conns = need(instruction_topic, STRING_TYPE, "instruction") if instruction_topic else []
        img_t, imgs, js_t, qs, texts = [], [], [], [], []
        hw = None if image_size is None else (int(image_size[0]), int(image_size[1]))
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover
            tqdm = None
        it = reader.messages(connections=img_conns + js_conns + ins_conns)
        if progress and tqdm is not None:
            it = tqdm(it, total=sum(c.msgcount for c in img_conns + js_conns + ins_conns), desc="bag", unit="msg",
                      disable=None)
        for conn, t_recv, raw in it:
            where = f"{bag}: {conn.topic} @ {t_recv} ns"
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as e:  # noqa: BLE001
                raise DatasetError(f"{where}: cannot deserialize ({type(e).__name__}: {e})") from None
            if conn.topic == image_topic:
                img_t.append(_stamp_ns(msg, t_recv))
                img = _image_array(msg, where)
                imgs.append(img if hw is None else resize_image(img, *hw))
            elif conn.topic == joint_state_topic:
                js_t.append(_stamp_ns(msg, t_recv))
                qs.append(_joint_vector(msg, where))
            else:
                if str(msg.data).strip():
                    texts.append(str(msg.data).strip())
    finally:
        reader.close()
    if not imgs:
        raise DatasetError(f"{bag}: topic {image_topic!r} has no messages")
    if not qs:
        raise DatasetError(f"{bag}: topic {joint_state_topic!r} has no messages")
    shapes = {im.shape for im in imgs}
    if len(shapes) != 1:
        raise DatasetError(f"{bag}: images change size during the recording {sorted(shapes)}; pass image_size")
    instr = instruction if instruction else (texts[0] if texts else None)
    if not instr:
        raise DatasetError(f"{bag}: no instruction: pass instruction= or an instruction_topic with a message"
                           + (f" ({instruction_topic!r} had none)" if instruction_topic else ""))

    # ---- resample to a uniform grid by nearest timestamp
    oi, oj = np.argsort(img_t, kind="stable"), np.argsort(js_t, kind="stable")
    ti, tj = np.asarray(img_t, dtype=np.int64)[oi], np.asarray(js_t, dtype=np.int64)[oj]
    start, end = max(ti[0], tj[0]), min(ti[-1], tj[-1])
    if end < start:
        raise DatasetError(f"{bag}: the image and joint state streams do not overlap in time")
    period = 1e9 / fps
    n = int(np.floor((end - start) / period + 1e-9)) + 1
    if max_frames is not None:
        n = min(n, int(max_frames))
    grid = start + np.round(np.arange(n) * period).astype(np.int64)
    if len(ti) == 1:
        ki = np.zeros(n, dtype=np.int64)
    else:
        ki = _nearest(ti, grid)
    kj = np.zeros(n, dtype=np.int64) if len(tj) == 1 else _nearest(tj, grid)
    err_i = np.abs(ti[ki] - grid) / 1e9
    err_j = np.abs(tj[kj] - grid) / 1e9
    images = np.stack([imgs[oi[k]] for k in ki])
    state = np.stack([qs[oj[k]] for k in kj]).astype(np.float64)

    # ---- EE poses and Bridge actions
    model = kinematics.WidowXKinematics.from_urdf()
    T = model.fk(state[:, :6])
    ee = pose_to_xyzrpy(T)
    action = np.zeros((n, 7))
    between = getattr(kinematics, "action_between", None) or model.action_between
    if n > 1:
        action[:-1] = between(T[:-1], T[1:], state[1:, 6])
    action[-1, 6] = state[-1, 6]
    over = int(np.sum(np.any(np.abs(action[:, :3]) > robot_spec.MAX_DELTA_XYZ + 1e-9, axis=1) |
                      np.any(np.abs(action[:, 3:6]) > robot_spec.MAX_DELTA_RPY + 1e-9, axis=1)))

    h, w = images.shape[1:3]
    spec = DatasetSpec(fps=fps, cameras={camera: (h, w)})
    cams = None
    if camera_model is not None:
        cm = camera_model
        if (cm.intrinsics.width, cm.intrinsics.height) != (w, h):
            cm = cm.resized(w, h)
        cams = {camera: cm}
    meta = {
        "source": "bag", "bag": str(bag.resolve()),
        "topics": {"image": image_topic, "joint_states": joint_state_topic, "instruction": instruction_topic},
        "resampled_fps": fps, "start_time_ns": int(start),
        "sync_max_error_s": {"image": float(err_i.max()), "joint_states": float(err_j.max())},
        "source_counts": {"image": len(ti), "joint_states": len(tj)},
        "actions_beyond_bridge_clip": over,
        "gripper_events": gripper_events(state[:, 6]),
    }
    if len(set(texts)) > 1:
        meta["instructions_seen"] = list(dict.fromkeys(texts))
    ep = EpisodeData(
        images={camera: images}, state=state.astype(np.float32), ee_pose=ee.astype(np.float32),
        action=action.astype(np.float32), timestamp=(np.arange(n) / fps).astype(np.float32),
        timestamp_ns=grid, objects=None, instruction=instr, split=split, success=success, cameras=cams,
        metadata=meta)
    out = Path(out_root)
    if out.is_dir() and _is_our_dataset(out):
        w_ = DatasetWriter.open(out)
        diff = [d for d in w_.spec.same_as(spec)]
        if diff:
            w_.close()
            raise DatasetError(f"{out}: the existing dataset does not match this bag: " + "; ".join(diff))
    else:
        w_ = DatasetWriter.create(out, spec)
    try:
        return w_.write_episode(ep)
    finally:
        w_.close()


def bag_topics(bag_path: str | Path) -> dict[str, str]:
    """topic -> message type of a rosbag2 (for error messages and `etc-vla data info`)."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    with AnyReader([Path(bag_path)], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as r:
        return {c.topic: c.msgtype for c in r.connections}
