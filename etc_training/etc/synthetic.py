"""Small, fully consistent synthetic episodes for ETC tests and the ETC benchmark (no simulator needed).

The arm follows IK keyframes (interpolated in joint space), the grasped object rides with the gripper, object
points/boxes are the camera projections of the object centre / its 8 box corners, images are flat-colour
drawings of the objects. Ground-truth metadata (gripper_events, subtasks) is recorded with the frame of the
command that started each gripper motion.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from etc_ros.core.camera import CameraIntrinsics, CameraModel, look_at
from etc_ros.core.errors import DatasetError, UserError

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 70, 220), "yellow": (230, 210, 40),
          "purple": (150, 60, 190), "orange": (240, 140, 30)}
DOWN_RPY = np.array([0.0, np.pi / 2, 0.0])  # gripper pointing down


def default_camera(width: int = 160, height: int = 120, name: str = "primary") -> CameraModel:
    f = 0.95 * width
    intr = CameraIntrinsics(width=width, height=height, fx=f, fy=f, cx=(width - 1) / 2.0, cy=(height - 1) / 2.0)
    return CameraModel(intr, look_at(np.array([0.30, -0.55, 0.45]), np.array([0.30, 0.0, 0.03])), name)


@dataclass
class SynthEpisode:
    """Same attributes as etc_ros.data.EpisodeData (the ETC engine reads only these)."""

    images: dict
    state: np.ndarray
    ee_pose: np.ndarray
    action: np.ndarray
    timestamp: np.ndarray
    objects: list | None = None
    instruction: str = ""
    split: str = "train"
    success: bool | None = True
    cameras: dict | None = None
    metadata: dict = field(default_factory=dict)
    timestamp_ns: Any = None
    depth: Any = None
    episode_index: int | None = None


def _obj(name: str, category: str, color: str, xyz, size) -> dict:
    return dict(name=name, category=category, color=color, xyz=np.asarray(xyz, float), size=np.asarray(size, float))


def _project_object(cam: CameraModel, xyz: np.ndarray, size: np.ndarray) -> dict:
    uv, z = cam.project(xyz[None])
    corners = np.array([[sx, sy, sz] for sx in (-.5, .5) for sy in (-.5, .5) for sz in (-.5, .5)]) * size + xyz
    cuv, _ = cam.project(corners)
    W, H = cam.intrinsics.width, cam.intrinsics.height
    box = [float(cuv[:, 0].min()), float(cuv[:, 1].min()), float(cuv[:, 0].max()), float(cuv[:, 1].max())]
    vis = bool(cam.in_image(uv)[0]) and bool(z[0] > 0)
    box = [max(-0.5, box[0]), max(-0.5, box[1]), min(W - 0.5, box[2]), min(H - 0.5, box[3])]
    return dict(point=[float(uv[0, 0]), float(uv[0, 1])], box=box, visible=vis)


def make_episode(seed: int = 0, family: str = "pick_place", width: int = 160, height: int = 120,
                 split: str = "train", calibrated: bool = True, with_objects: bool = True,
                 with_metadata: bool = True, source: str = "sim", n_distractors: int = 1,
                 speed: int = 1) -> SynthEpisode:
    """One synthetic episode of `family` (pick_place | pick_up | stack | push). `speed` multiplies frame counts."""
    from etc_training.etc.episode import kinematics

    if family not in ("pick_place", "pick_up", "stack", "push"):
        raise UserError(f"unknown synthetic family {family!r}")
    rng = np.random.default_rng(seed)
    kin = kinematics()
    colors = list(COLORS)
    rng.shuffle(colors)
    cube = 0.03
    obj_xy = np.array([rng.uniform(0.24, 0.34), rng.uniform(-0.12, -0.02)])
    tgt_xy = np.array([rng.uniform(0.24, 0.34), rng.uniform(0.05, 0.13)])
    main = _obj(f"{colors[0]} cube", "cube", colors[0], [*obj_xy, cube / 2], [cube] * 3)
    if family == "stack":
        target = _obj(f"{colors[1]} block", "block", colors[1], [*tgt_xy, 0.02], [0.04, 0.04, 0.04])
    else:
        target = _obj(f"{colors[1]} plate", "plate", colors[1], [*tgt_xy, 0.005], [0.08, 0.08, 0.01])
    objs = [main, target]
    for k in range(n_distractors):
        xy = np.array([rng.uniform(0.38, 0.42), rng.uniform(-0.1, 0.1) + 0.05 * k])
        objs.append(_obj(f"{colors[2 + k]} ball", "ball", colors[2 + k], [*xy, 0.02], [0.04] * 3))
    o = main["xyz"]
    top_t = target["xyz"][2] + target["size"][2] / 2
    hover = 0.10
    g_closed = 0.25
    # keyframes: (xyz, gripper, frames to reach it, phase label for ground-truth subtasks)
    kf: list[tuple[np.ndarray, float, int, str]]
    if family == "push":
        start = o + np.array([0.0, -0.06, 0.0])
        end = np.array([*tgt_xy, o[2]]) + np.array([0.0, -0.03, 0.0])
        kf = [(start + [0, 0, hover], 0.0, 8, "approach"), (start, 0.0, 5, "approach"), (end, 0.0, 10, "push"),
              (end + [0, 0, hover], 0.0, 6, "retreat"), (end + [0, 0, hover], 0.0, 3, "retreat")]
        g0 = 0.0
    else:
        dest = np.array([*tgt_xy, top_t + cube / 2 + 0.003])
        kf = [(o + [0, 0, hover], 1.0, 8, "approach"), (o, 1.0, 5, "approach"), (o, g_closed, 3, "grasp"),
              (o + [0, 0, hover], g_closed, 5, "lift")]
        if family == "pick_up":
            kf += [(o + [0, 0, hover + 0.02], g_closed, 6, "lift")]
        else:
            kf += [(dest + [0, 0, hover], g_closed, 8, "move"), (dest, g_closed, 4, "lower"), (dest, 1.0, 3, "release"),
                   (dest + [0, 0, hover], 1.0, 6, "retreat")]
        g0 = 1.0
    q_prev = np.array([0.0, -0.6, 0.55, 0.0, 1.55, 0.0])
    qs = [q_prev]
    labels = ["approach"]
    for xyz, g, n, lab in kf:
        res = kin.ik_position_orientation(np.asarray(xyz, float), DOWN_RPY, q_seed=q_prev)
        if not res.success:
            raise DatasetError(f"synthetic episode {seed}: IK failed for {xyz}: {res.message}")
        n = n * speed
        for k in range(1, n + 1):
            a = k / n
            qs.append((1 - a) * q_prev + a * res.q)
            labels.append(lab)
        q_prev = res.q
    # gripper: piecewise linear between keyframes
    gvals = [g0]
    gcur = g0
    for xyz, g, n, lab in kf:
        n = n * speed
        gvals += [gcur + (g - gcur) * k / n for k in range(1, n + 1)]
        gcur = g
    q = np.array(qs)
    T = len(q)
    g = np.clip(np.array(gvals), 0.0, 1.0)
    ee_T = kin.fk(q)
    ee = ee_T[:, :3, 3]
    from etc_ros.core.transforms3d import matrix_to_euler

    rpy = np.array([matrix_to_euler(R) for R in ee_T[:, :3, :3]])
    state = np.concatenate([q, g[:, None]], axis=1).astype(np.float32)
    ee_pose = np.concatenate([ee, rpy], axis=1).astype(np.float32)
    action = np.zeros((T, 7), np.float32)
    action[:-1, :3] = ee[1:] - ee[:-1]
    action[:, 6] = np.concatenate([g[1:], g[-1:]])
    # gripper events (frame of the command = last frame before the fingers move)
    events = []
    d = np.diff(g)
    for t in range(len(d)):
        if d[t] < -1e-9 and (t == 0 or d[t - 1] >= -1e-9):
            events.append({"frame": t, "type": "close"})
        if d[t] > 1e-9 and (t == 0 or d[t - 1] <= 1e-9):
            events.append({"frame": t, "type": "open"})
    # object poses per frame
    close_f = next((e["frame"] for e in events if e["type"] == "close"), None)
    open_f = next((e["frame"] for e in events if e["type"] == "open"), None)
    poses = np.repeat(main["xyz"][None], T, axis=0)
    if family == "push":
        for t in range(1, T):
            p = poses[t - 1].copy()
            contact_y = ee[t, 1] + 0.03 + cube / 2 - 0.015
            if abs(ee[t, 2] - o[2]) < 0.01 and contact_y > p[1] and abs(ee[t, 0] - p[0]) < 0.02:
                p[:2] = [ee[t, 0], contact_y]
            poses[t] = p
    elif close_f is not None:
        hold_from = close_f + 3 * speed
        hold_to = open_f if open_f is not None else T
        offset = main["xyz"] - ee[hold_from]
        for t in range(hold_from, T):
            poses[t] = ee[min(t, hold_to)] + offset
    cams = {"primary": default_camera(width, height)}
    per_frame = []
    for t in range(T):
        frame_objs = []
        for ob in objs:
            xyz = poses[t] if ob is main else ob["xyz"]
            rec = dict(name=ob["name"], category=ob["category"], color=ob["color"],
                       pose=[*map(float, xyz), 1.0, 0.0, 0.0, 0.0], size=ob["size"].tolist(),
                       cameras={c: _project_object(cm, xyz, ob["size"]) for c, cm in cams.items()})
            frame_objs.append(rec)
        per_frame.append(frame_objs)
    images = {c: _draw(per_frame, c, cm, ee) for c, cm in cams.items()}
    obj_name, tgt_name = main["name"], target["name"]
    instr = {"pick_place": f"put the {obj_name} on the {tgt_name}", "pick_up": f"pick up the {obj_name}",
             "stack": f"stack the {obj_name} on the {tgt_name}",
             "push": f"push the {obj_name} to the {tgt_name}"}[family]
    goal = {"pick_place": f"the {obj_name} is on the {tgt_name}", "pick_up": f"the {obj_name} is lifted",
            "stack": f"the {obj_name} is on top of the {tgt_name}",
            "push": f"the {obj_name} is next to the {tgt_name}"}[family]
    subtasks = []
    for t, lab in enumerate(labels):
        if not subtasks or subtasks[-1]["name"] != lab:
            subtasks.append({"name": lab, "start": t, "end": t})
        subtasks[-1]["end"] = t + 1
    md: dict = {"source": source, "seed": seed, "split": split,
                "task": {"family": family, "object": obj_name, "target": tgt_name if family != "pick_up" else None,
                         "goal_text": goal}}
    if with_metadata:
        md.update(gripper_events=events, subtasks=subtasks, distractors=[ob["name"] for ob in objs[2:]])
    return SynthEpisode(
        images=images, state=state, ee_pose=ee_pose, action=action,
        timestamp=(np.arange(T) / 5.0).astype(np.float32), objects=per_frame if with_objects else None,
        instruction=instr, split=split, success=True, cameras=cams if calibrated else None, metadata=md)


def _draw(per_frame: list, cam: str, cm: CameraModel, ee: np.ndarray) -> np.ndarray:
    W, H = cm.intrinsics.width, cm.intrinsics.height
    T = len(per_frame)
    img = np.full((T, H, W, 3), 200, np.uint8)
    img[:, H // 2:, :, :] = 150  # "table"
    ee_uv, _ = cm.project(ee)
    for t in range(T):
        for o in per_frame[t]:
            c = o["cameras"][cam]
            x1, y1, x2, y2 = (int(round(v)) for v in c["box"])
            img[t, max(0, y1):max(0, y2 + 1), max(0, x1):max(0, x2 + 1)] = COLORS.get(o["color"], (0, 0, 0))
        u, v = ee_uv[t]
        if np.isfinite(u) and np.isfinite(v):
            u, v = int(round(u)), int(round(v))
            img[t, max(0, v - 1):v + 2, max(0, u - 1):u + 2] = (20, 20, 20)
    return img


def teleop_version(ep: SynthEpisode, calibrated: bool = False) -> SynthEpisode:
    """The same episode as a teleop recording: no objects, no recorded events/subtasks, and (unless
    calibrated=True) no camera calibration."""
    md = {"source": "teleop", "task": dict(ep.metadata.get("task", {}))}
    return SynthEpisode(images=ep.images, state=ep.state, ee_pose=ep.ee_pose, action=ep.action,
                        timestamp=ep.timestamp, objects=None, instruction=ep.instruction, split=ep.split,
                        success=ep.success, cameras=ep.cameras if calibrated else None, metadata=md)


class MemoryReader:
    """In-memory stand-in for etc_ros.data.DatasetReader (num_episodes, episode_meta, load_episode)."""

    def __init__(self, episodes: list, ids: list[str] | None = None):
        self.episodes = list(episodes)
        self.ids = ids or [f"episode_{i:06d}" for i in range(len(self.episodes))]

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    def episode_meta(self, i: int) -> dict:
        ep = self.episodes[i]
        return {"episode_id": self.ids[i], "split": ep.split, "length": len(ep.state)}

    def load_episode(self, i: int):
        if not 0 <= i < len(self.episodes):
            raise DatasetError(f"episode index {i} out of range 0..{len(self.episodes) - 1}")
        return self.episodes[i]


def make_episodes(n: int, seed: int = 0, families=("pick_place", "pick_up", "stack", "push"), **kw) -> list:
    return [make_episode(seed + i, families[i % len(families)], **kw) for i in range(n)]


def to_episode_data(ep: SynthEpisode):
    from etc_ros.data import EpisodeData

    return EpisodeData(images=ep.images, state=ep.state, ee_pose=ep.ee_pose, action=ep.action,
                       timestamp=ep.timestamp, objects=ep.objects, instruction=ep.instruction, split=ep.split,
                       success=ep.success, cameras=ep.cameras, metadata=ep.metadata)


def write_dataset(root, episodes: list, fps: float = 5.0):
    """Write synthetic episodes into a real etc_ros.data dataset at `root` (created); returns the root Path."""
    from pathlib import Path

    from etc_ros.data import DatasetSpec, DatasetWriter

    if not episodes:
        raise DatasetError("write_dataset needs at least one episode")
    cams = {c: (int(a.shape[1]), int(a.shape[2])) for c, a in episodes[0].images.items()}
    spec = DatasetSpec(fps=fps, cameras=cams)
    with DatasetWriter.create(root, spec) as w:
        for ep in episodes:
            w.write_episode(to_episode_data(ep))
    return Path(root)
