"""Task families with language, episode sampling from one seed, and success detection.

Families: pick_place ("put the red block in the blue bowl"), pick_up ("pick up the red block"), push ("push the
red block onto the blue mat"), stack ("stack the red block on the blue block"). Each has instruction templates
(some held out for the ood_phrase split) and a goal text ("the red block is in the blue bowl"), in language.py.

`sample_episode(seed, split, cfg)` draws everything random about an episode (task, objects, sizes, colours, poses,
distractors, lighting, table look, camera jitter) from `numpy.random.default_rng(seed)`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from etc_ros.core.camera import CameraIntrinsics, look_at
from etc_ros.core.errors import UserError

from . import splits
from .config import FAMILIES, SimConfig
from .language import GOALS, goal_text, render_instruction
from .objects import WALL, ObjectSpec, make_object
from .world import Appearance, PlacedObject, Scene

OBJECT_KINDS = {"pick_place": ("block", "cylinder", "ball"), "pick_up": ("block", "cylinder", "ball"),
                "push": ("block", "cylinder"), "stack": ("block",)}
TARGET_KINDS = {"pick_place": ("bowl", "plate", "box"), "pick_up": (), "push": ("mat",), "stack": ("block",)}

PUSH_MAX_HEIGHT = 0.044  # m
# Sampling regions (base_link, m): inside the Bridge EE workspace box with margins.
OBJ_X, OBJ_Y = (0.19, 0.37), (-0.09, 0.19)
TGT_X, TGT_Y = (0.21, 0.35), (-0.07, 0.17)
DIS_X, DIS_Y = (0.13, 0.43), (-0.17, 0.25)
TABLE_TONES = [(0.55, 0.42, 0.30), (0.62, 0.50, 0.36), (0.45, 0.32, 0.22), (0.60, 0.60, 0.58),
               (0.80, 0.78, 0.74), (0.30, 0.30, 0.32), (0.42, 0.47, 0.40)]


class TaskError(UserError):
    pass


@dataclass
class TaskSpec:
    family: str
    object: str
    target: str | None
    instruction: str
    template_id: str
    goal_text: str

    def to_dict(self) -> dict:
        return {"family": self.family, "object": self.object, "target": self.target, "goal_text": self.goal_text}


@dataclass
class EpisodeSpec:
    seed: int
    split: str
    task: TaskSpec
    scene: Scene
    distractors: list[str] = field(default_factory=list)


def _choice(rng: np.random.Generator, seq):
    seq = list(seq)
    return seq[int(rng.integers(len(seq)))]


def _sample_pose(rng, xr, yr, radius, placed: list[tuple[float, float, float]], margin: float,
                 tries: int = 200) -> tuple[float, float] | None:
    for _ in range(tries):
        x, y = float(rng.uniform(*xr)), float(rng.uniform(*yr))
        if all(math.hypot(x - px, y - py) >= radius + pr + margin for px, py, pr in placed):
            return x, y
    return None


def _seg_dist(p, a, b) -> float:
    p, a, b = (np.asarray(v, dtype=float) for v in (p, a, b))
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def _sample_task_objects(rng, family: str, split: str, cfg: SimConfig):
    """(object spec, target spec or None); obeys the split's colour and pair partitions."""
    for _ in range(500):
        okind = _choice(rng, OBJECT_KINDS[family])
        ocol = _choice(rng, splits.object_colors(split))
        obj = make_object(okind, ocol, rng, cfg.randomization.color_jitter)
        if family == "push" and obj.size[2] > PUSH_MAX_HEIGHT:
            # pushed objects must pass under the gripper bar, which overhangs the pushing finger
            obj = dataclasses.replace(obj, size=(obj.size[0], obj.size[1], PUSH_MAX_HEIGHT))
        tgt = None
        if TARGET_KINDS[family]:
            tkind = _choice(rng, TARGET_KINDS[family])
            tcol = _choice(rng, [c for c in splits.other_colors(split) if c != ocol])
            tgt = make_object(tkind, tcol, rng, cfg.randomization.color_jitter)
        if splits.pair_allowed(split, obj.name, tgt.name if tgt else None):
            return obj, tgt
    raise TaskError(f"could not sample a {family} task for split {split}")  # pragma: no cover


def sample_appearance(rng: np.random.Generator, cfg: SimConfig) -> Appearance:
    if not cfg.randomization.table and not cfg.randomization.lighting:
        return Appearance()
    app = Appearance()
    if cfg.randomization.table:
        base = np.asarray(_choice(rng, TABLE_TONES)) + rng.uniform(-0.05, 0.05, 3)
        second = base * rng.uniform(0.85, 0.97)
        app.table_rgb1 = tuple(float(v) for v in np.clip(base, 0, 1))
        app.table_rgb2 = tuple(float(v) for v in np.clip(second, 0, 1))
        app.table_texture = _choice(rng, ("checker", "gradient", "flat"))
        app.table_repeat = float(rng.uniform(3.0, 10.0))
    if cfg.randomization.lighting:
        az = rng.uniform(-math.pi, math.pi)
        el = rng.uniform(math.radians(55), math.radians(85))
        app.light_dir = (float(-math.cos(el) * math.cos(az)), float(-math.cos(el) * math.sin(az)), float(-math.sin(el)))
        app.light_diffuse = float(rng.uniform(0.4, 0.7))
        app.ambient = float(rng.uniform(0.2, 0.4))
    return app


def _small_rotation(rng, scale: float) -> np.ndarray:
    a = rng.uniform(-scale, scale, 3)
    cx, sx, cy, sy = math.cos(a[0]), math.sin(a[0]), math.cos(a[1]), math.sin(a[1])
    cz, sz = math.cos(a[2]), math.sin(a[2])
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def primary_camera_pose(rng: np.random.Generator | None, cfg: SimConfig) -> np.ndarray:
    """T_base_cam of the primary camera: the nominal look-at pose, jittered when rng is given."""
    eye = np.asarray(cfg.camera.eye, dtype=float)
    if rng is not None:
        eye = eye + rng.uniform(-cfg.camera.pos_jitter, cfg.camera.pos_jitter, 3)
    T = look_at(eye, np.asarray(cfg.camera.target, dtype=float))
    if rng is not None:
        T[:3, :3] = T[:3, :3] @ _small_rotation(rng, cfg.camera.rot_jitter)
    return T


def sample_episode(seed: int, split: str = "train", cfg: SimConfig | None = None,
                   family: str | None = None) -> EpisodeSpec:
    cfg = cfg or SimConfig()
    splits.check_split(split)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TaskError(f"seed must be a non-negative integer, got {seed!r}")
    # the split is part of the stream: seed k of two splits gives unrelated scenes
    rng = np.random.default_rng([int(seed), splits.SPLITS.index(split)])
    fams = [family] if family else list(cfg.families)
    for f in fams:
        if f not in FAMILIES:
            raise TaskError(f"unknown task family {f!r}; choose from {list(FAMILIES)}")
    if split == "ood_combo":
        fams = [f for f in fams if TARGET_KINDS[f]]
        if not fams:
            raise TaskError("split ood_combo needs a family with a target (pick_place, push or stack)")
    fam = _choice(rng, fams)

    for _attempt in range(50):
        obj, tgt = _sample_task_objects(rng, fam, split, cfg)
        placed: list[PlacedObject] = []
        occ: list[tuple[float, float, float]] = []
        p = _sample_pose(rng, OBJ_X, OBJ_Y, obj.footprint_radius, occ, 0.0)
        yaw = (float(rng.uniform(-math.pi / 4, math.pi / 4)) if obj.kind == "block"
               else float(rng.uniform(-math.pi, math.pi)))
        placed.append(PlacedObject(obj, p, yaw, "object"))
        occ.append((p[0], p[1], obj.footprint_radius))
        ok = True
        if tgt is not None:
            if fam == "push":
                q = None
                for _ in range(200):
                    d = float(rng.uniform(0.10, 0.16))
                    ang = float(rng.uniform(-math.pi, math.pi))
                    c = (p[0] + d * math.cos(ang), p[1] + d * math.sin(ang))
                    behind = (p[0] - (obj.footprint_radius + 0.05) * math.cos(ang),
                              p[1] - (obj.footprint_radius + 0.05) * math.sin(ang))
                    if (TGT_X[0] <= c[0] <= TGT_X[1] and TGT_Y[0] <= c[1] <= TGT_Y[1]
                            and 0.14 <= behind[0] <= 0.42 and -0.13 <= behind[1] <= 0.23):
                        q = c
                        break
            else:
                margin = 0.06 if fam == "stack" else 0.04
                q = _sample_pose(rng, TGT_X, TGT_Y, tgt.footprint_radius, occ, margin)
            if q is None:
                ok = False
            else:
                tyaw = float(rng.uniform(-math.pi / 4, math.pi / 4)) if tgt.kind in ("block", "box", "mat") else 0.0
                placed.append(PlacedObject(tgt, q, tyaw, "target"))
                occ.append((q[0], q[1], tgt.footprint_radius))
        if not ok:
            continue
        # distractors
        lo, hi = cfg.randomization.distractors
        n_d = int(rng.integers(lo, hi + 1)) if hi >= lo else 0
        kinds = splits.distractor_kinds(split)
        used = {po.name for po in placed}
        for _ in range(n_d):
            for _try in range(30):
                dk = _choice(rng, kinds)
                dcol = _choice(rng, splits.other_colors(split))
                ds = make_object(dk, dcol, rng, cfg.randomization.color_jitter)
                if ds.name in used or ds.color == obj.color and ds.kind == obj.kind:
                    continue
                if tgt is not None and ds.kind == tgt.kind and ds.color == tgt.color:
                    continue
                pos = _sample_pose(rng, DIS_X, DIS_Y, ds.footprint_radius, occ, 0.025, tries=40)
                if pos is None:
                    continue
                if fam == "push" and tgt is not None:
                    if _seg_dist(pos, p, q) < ds.footprint_radius + obj.footprint_radius + 0.06:
                        continue
                placed.append(PlacedObject(ds, pos, float(rng.uniform(-math.pi, math.pi)), "distractor"))
                occ.append((pos[0], pos[1], ds.footprint_radius))
                used.add(ds.name)
                break
        break
    else:  # pragma: no cover
        raise TaskError(f"could not lay out a {fam} scene for seed {seed}")

    tid = _choice(rng, splits.template_ids(fam, split))
    tname = tgt.name if tgt else None
    tkind = tgt.kind if tgt else None
    task = TaskSpec(family=fam, object=obj.name, target=tname,
                    instruction=render_instruction(fam, tid, obj.name, tname, tkind),
                    template_id=f"{fam}/{tid}", goal_text=goal_text(fam, obj.name, tname, tkind))
    app = sample_appearance(rng, cfg)
    K = CameraIntrinsics().resized(cfg.render.width, cfg.render.height)
    T = primary_camera_pose(rng, cfg)
    scene = Scene(objects=placed, appearance=app, primary_T=T, primary_intrinsics=K)
    return EpisodeSpec(seed=int(seed), split=split, task=task, scene=scene,
                       distractors=[po.name for po in placed if po.role == "distractor"])


# --------------------------------------------------------------------------------------------- success
def _yaw_of(quat) -> float:
    w, x, y, z = quat
    return math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))


def _local_xy(p, frame_pos, frame_quat) -> np.ndarray:
    """xy of p in the (yaw-only) frame of an object."""
    yaw = _yaw_of(frame_quat)
    d = np.asarray(p[:2], dtype=float) - np.asarray(frame_pos[:2], dtype=float)
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([c * d[0] + s * d[1], -s * d[0] + c * d[1]])


def inside_container(obj: ObjectSpec, pos, cont: ObjectSpec, cpos, cquat, tol: float = 0.0) -> bool:
    """Object centre within the container's inner region and resting low inside it (not hovering above)."""
    lxy = _local_xy(pos, cpos, cquat)
    if cont.kind == "box":
        half = cont.inner_half_extent + tol
        inside_xy = abs(lxy[0]) <= half and abs(lxy[1]) <= half
    else:
        r_max = cont.inner_half_extent
        if cont.kind == "bowl":  # walls flare outwards: mean of the floor and rim inner radii
            r_max = 0.5 * (r_max + 0.5 * cont.size[0] - WALL)
        inside_xy = float(np.hypot(*lxy)) <= r_max + tol
    floor_top = cpos[2] - cont.half_height + WALL
    dz = pos[2] - floor_top
    return bool(inside_xy and -0.005 <= dz <= obj.size[2] + 0.015)


def on_pad(pos, pad: ObjectSpec, ppos, pquat) -> bool:
    lxy = _local_xy(pos, ppos, pquat)
    half = pad.inner_half_extent
    return bool(abs(lxy[0]) <= half and abs(lxy[1]) <= half)


def stacked(top: ObjectSpec, tpos, bottom: ObjectSpec, bpos, bquat, tol: float = 0.012) -> bool:
    lxy = _local_xy(tpos, bpos, bquat)
    half = 0.5 * min(bottom.size[0], bottom.size[1])
    dz = tpos[2] - bpos[2]
    want = 0.5 * (top.size[2] + bottom.size[2])
    return bool(abs(lxy[0]) <= half and abs(lxy[1]) <= half and abs(dz - want) <= tol)


def check_success(task: TaskSpec, state) -> bool:
    """Success of `task` on a world state. `state` provides: spec(name) -> ObjectSpec, pose(name) -> (pos, quat),
    rest_z(name) -> float (centre height when resting on the table), touching_robot(name) -> bool,
    grasped(name) -> bool (both fingers in contact)."""
    if task.family not in GOALS:
        raise TaskError(f"unknown task family {task.family!r}; choose from {list(GOALS)}")
    o = task.object
    ospec = state.spec(o)
    pos, _ = state.pose(o)
    if task.family == "pick_up":
        return bool(pos[2] >= state.rest_z(o) + 0.04 and state.grasped(o))
    tspec = state.spec(task.target)
    tpos, tquat = state.pose(task.target)
    if task.family == "pick_place":
        return inside_container(ospec, pos, tspec, tpos, tquat) and not state.touching_robot(o)
    if task.family == "push":
        return on_pad(pos, tspec, tpos, tquat) and pos[2] <= state.rest_z(o) + 0.01
    if task.family == "stack":
        return (stacked(ospec, pos, tspec, tpos, tquat) and not state.touching_robot(o)
                and tpos[2] <= state.rest_z(task.target) + 0.01)
    raise TaskError(f"unknown task family {task.family!r}")  # pragma: no cover
