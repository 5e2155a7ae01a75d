"""Object library of the tabletop world: primitive shapes and containers built from primitives.

Every object is described in pure Python (`ObjectSpec` + `object_geoms()`), so the same description builds the
MuJoCo bodies (`add_object`) and drives the ground-truth annotations (2-D boxes from projected surface points).

Object frame: origin at the centre of the object's axis-aligned bounding box, z up; `size` holds the full
extents (x, y, z) of that box in metres. For containers (bowl / plate / box) the "place point" is the centre
of the inner floor's top surface (`ObjectSpec.place_offset`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Palette: colour name -> linear RGB. Which colours a split may use is decided in splits.py.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.10, 0.10),
    "green": (0.12, 0.62, 0.20),
    "blue": (0.10, 0.25, 0.86),
    "yellow": (0.95, 0.85, 0.10),
    "orange": (0.96, 0.48, 0.05),
    "purple": (0.50, 0.16, 0.70),
    "white": (0.93, 0.93, 0.93),
    "black": (0.07, 0.07, 0.08),
    # held out for the "ood_color" split
    "pink": (1.00, 0.50, 0.72),
    "cyan": (0.08, 0.85, 0.90),
    "brown": (0.48, 0.28, 0.11),
    "lime": (0.62, 0.96, 0.18),
}

GRASPABLE_KINDS = ("block", "cylinder", "ball")  # task objects (top-down graspable by the 30-74 mm gripper)
CONTAINER_KINDS = ("bowl", "plate", "box")  # place targets
PAD_KINDS = ("mat",)  # flat, non-colliding target region for "push"
NOVEL_KINDS = ("pill", "egg", "cross", "dumbbell", "ring")  # only used as distractors, see splits.py
ALL_KINDS = GRASPABLE_KINDS + CONTAINER_KINDS + PAD_KINDS + NOVEL_KINDS

# Contact classes (bit masks; two geoms collide when contype1 & conaffinity2 or contype2 & conaffinity1):
# table = 1, robot = 2, solid objects and container floors = 4, container walls = 8.
# robot <-> table/objects/walls, objects <-> table/objects/walls collide; robot links do not collide with each
# other and container walls skip the table (their floor carries them), which saves many contacts.
TABLE_CONTYPE, TABLE_CONAFFINITY = 1, 2 | 4
ROBOT_CONTYPE, ROBOT_CONAFFINITY = 2, 1 | 4
ENV_CONTYPE, ENV_CONAFFINITY = 4, 1 | 2 | 4
WALL_CONTYPE, WALL_CONAFFINITY = 8, 2 | 4

WALL = 0.006  # container wall / floor thickness (m)


@dataclass(frozen=True)
class GeomDesc:
    """One primitive in the object frame. `size` follows MuJoCo's convention for `type`
    (box: half extents; sphere: (r,); cylinder/capsule: (r, half length); ellipsoid: semi-axes)."""

    type: str  # "box" | "sphere" | "cylinder" | "capsule" | "ellipsoid"
    size: tuple[float, ...]
    pos: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quat: tuple[float, float, float, float] = (1.0, 0.0, 0.0, 0.0)  # w x y z


@dataclass(frozen=True)
class ObjectSpec:
    kind: str  # one of ALL_KINDS (the "category" in annotations)
    color: str  # key of COLORS
    size: tuple[float, float, float]  # full bounding-box extents (m)
    rgba: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    density: float = 700.0  # kg/m^3

    @property
    def name(self) -> str:
        return f"{self.color} {self.kind}"

    @property
    def category(self) -> str:
        return self.kind

    @property
    def is_container(self) -> bool:
        return self.kind in CONTAINER_KINDS

    @property
    def is_pad(self) -> bool:
        return self.kind in PAD_KINDS

    @property
    def graspable(self) -> bool:
        return self.kind in GRASPABLE_KINDS

    @property
    def half_height(self) -> float:
        return 0.5 * self.size[2]

    @property
    def footprint_radius(self) -> float:
        """Radius of the circle enclosing the object's footprint (for collision-free placement)."""
        return 0.5 * math.hypot(self.size[0], self.size[1])

    @property
    def place_offset(self) -> np.ndarray:
        """Object-frame offset of the annotation point: the centre for solids, the top of the inner floor
        for containers / pads."""
        if self.is_container:
            return np.array([0.0, 0.0, -self.half_height + WALL])
        if self.is_pad:
            return np.array([0.0, 0.0, self.half_height])
        return np.zeros(3)

    @property
    def inner_half_extent(self) -> float:
        """Half width of the region counted as "inside" (containers) / "on" (pads), measured at the floor."""
        if self.kind == "bowl":
            return 0.5 * self.size[0] * BOWL_FLOOR_FRAC - WALL
        if self.kind in ("plate", "box"):
            return 0.5 * min(self.size[0], self.size[1]) - WALL
        if self.is_pad:
            return 0.5 * min(self.size[0], self.size[1])
        return 0.0

    def to_dict(self) -> dict:
        return dict(name=self.name, category=self.kind, color=self.color, size=[float(s) for s in self.size])


BOWL_FLOOR_FRAC = 0.72  # bowl floor radius / rim radius (walls lean outwards)
RING_SEGMENTS = 16


def _quat_axis_angle(axis: tuple[float, float, float], angle: float) -> tuple[float, float, float, float]:
    ax = np.asarray(axis, dtype=float)
    ax = ax / np.linalg.norm(ax)
    s = math.sin(angle / 2)
    return (math.cos(angle / 2), ax[0] * s, ax[1] * s, ax[2] * s)


def _quat_mul(a, b) -> tuple[float, float, float, float]:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return (w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2)


def _ring_walls(r_bottom: float, r_top: float, z0: float, z1: float, thick: float, n: int) -> list[GeomDesc]:
    """n boxes forming a (possibly flared) wall between radii r_bottom at z0 and r_top at z1 (wall outer face)."""
    out = []
    h = z1 - z0
    tilt = math.atan2(r_top - r_bottom, h)
    length = math.hypot(h, r_top - r_bottom)
    width = 2.0 * r_top * math.tan(math.pi / n) + 0.002
    r_mid = 0.5 * (r_bottom + r_top) - 0.5 * thick * math.cos(tilt)
    for i in range(n):
        phi = 2 * math.pi * i / n
        q = _quat_mul(_quat_axis_angle((0, 0, 1), phi), _quat_axis_angle((0, 1, 0), tilt))
        out.append(GeomDesc("box", (0.5 * thick, 0.5 * width, 0.5 * length),
                            (r_mid * math.cos(phi), r_mid * math.sin(phi), 0.5 * (z0 + z1)), q))
    return out


def object_geoms(obj: ObjectSpec) -> list[GeomDesc]:
    """Primitive geoms of an object in its frame (origin at the bounding-box centre)."""
    sx, sy, sz = obj.size
    hz = 0.5 * sz
    k = obj.kind
    if k == "block":
        return [GeomDesc("box", (0.5 * sx, 0.5 * sy, hz))]
    if k == "cylinder":
        return [GeomDesc("cylinder", (0.5 * sx, hz))]
    if k == "ball":
        return [GeomDesc("sphere", (0.5 * sx,))]
    if k == "bowl":
        R = 0.5 * sx
        floor = GeomDesc("cylinder", (R * BOWL_FLOOR_FRAC, 0.5 * WALL), (0.0, 0.0, -hz + 0.5 * WALL))
        return [floor] + _ring_walls(R * BOWL_FLOOR_FRAC, R, -hz, hz, WALL, RING_SEGMENTS)
    if k == "plate":
        R = 0.5 * sx
        floor = GeomDesc("cylinder", (R - 0.004, 0.5 * WALL), (0.0, 0.0, -hz + 0.5 * WALL))
        return [floor] + _ring_walls(R - 0.006, R, -hz, hz, WALL, RING_SEGMENTS)
    if k == "box":
        hx, hy = 0.5 * sx, 0.5 * sy
        t = 0.5 * WALL
        return [
            GeomDesc("box", (hx, hy, t), (0.0, 0.0, -hz + t)),
            GeomDesc("box", (t, hy, hz), (hx - t, 0.0, 0.0)),
            GeomDesc("box", (t, hy, hz), (-hx + t, 0.0, 0.0)),
            GeomDesc("box", (hx - 2 * t, t, hz), (0.0, hy - t, 0.0)),
            GeomDesc("box", (hx - 2 * t, t, hz), (0.0, -hy + t, 0.0)),
        ]
    if k == "mat":
        return [GeomDesc("box", (0.5 * sx, 0.5 * sy, hz))]
    if k == "pill":  # capsule lying along x
        r = hz
        return [GeomDesc("capsule", (r, 0.5 * sx - r), quat=_quat_axis_angle((0, 1, 0), math.pi / 2))]
    if k == "egg":
        return [GeomDesc("ellipsoid", (0.5 * sx, 0.5 * sy, hz))]
    if k == "cross":
        w = 0.3 * sy
        return [GeomDesc("box", (0.5 * sx, 0.5 * w, hz)), GeomDesc("box", (0.5 * w, 0.5 * sy, hz))]
    if k == "dumbbell":
        r = hz
        return [
            GeomDesc("sphere", (r,), (0.5 * sx - r, 0.0, 0.0)),
            GeomDesc("sphere", (r,), (-0.5 * sx + r, 0.0, 0.0)),
            GeomDesc("capsule", (0.4 * r, 0.5 * sx - r), quat=_quat_axis_angle((0, 1, 0), math.pi / 2)),
        ]
    if k == "ring":  # torus approximated by capsules
        r_minor = hz
        R = 0.5 * sx - r_minor
        n = 10
        half = R * math.sin(math.pi / n)
        out = []
        for i in range(n):
            phi = 2 * math.pi * (i + 0.5) / n
            q = _quat_mul(_quat_axis_angle((0, 0, 1), phi), _quat_axis_angle((1, 0, 0), math.pi / 2))
            rc = R * math.cos(math.pi / n)
            out.append(GeomDesc("capsule", (r_minor, half), (rc * math.cos(phi), rc * math.sin(phi), 0.0), q))
        return out
    raise ValueError(f"unknown object kind {k!r}")


# Size ranges (full extents, m) per kind and how the extents are tied:
# "cube": x = y = z; "round": x = y (diameter), z separate; "box": x, y, z separate; "long": x, y = z.
SIZE_RULES: dict[str, tuple[str, tuple[float, float], tuple[float, float] | None, tuple[float, float] | None]] = {
    "block": ("cube", (0.036, 0.046), None, None),
    "cylinder": ("round", (0.036, 0.044), None, (0.040, 0.055)),
    "ball": ("cube", (0.038, 0.046), None, None),
    "bowl": ("round", (0.140, 0.160), None, (0.040, 0.046)),
    "plate": ("round", (0.140, 0.160), None, (0.016, 0.020)),
    "box": ("box", (0.125, 0.145), (0.125, 0.145), (0.040, 0.046)),
    "mat": ("round", (0.090, 0.110), None, (0.002, 0.002)),
    "pill": ("long", (0.060, 0.075), (0.026, 0.030), None),
    "egg": ("long", (0.050, 0.058), (0.036, 0.040), None),
    "cross": ("round", (0.060, 0.075), None, (0.018, 0.024)),
    "dumbbell": ("long", (0.070, 0.085), (0.026, 0.030), None),
    "ring": ("round", (0.060, 0.075), None, (0.010, 0.012)),
}


def sample_size(kind: str, rng: np.random.Generator) -> tuple[float, float, float]:
    rule, xr, yr, zr = SIZE_RULES[kind]
    x = float(rng.uniform(*xr))
    if rule == "cube":
        y = z = x
    elif rule == "round":
        y, z = x, float(rng.uniform(*zr))
    elif rule == "box":
        y, z = float(rng.uniform(*yr)), float(rng.uniform(*zr))
    else:  # long
        y = z = float(rng.uniform(*yr))
    return (round(x, 4), round(y, 4), round(z, 4))


def make_object(kind: str, color: str, rng: np.random.Generator, color_jitter: float = 0.04) -> ObjectSpec:
    if kind not in ALL_KINDS:
        raise ValueError(f"unknown object kind {kind!r}")
    if color not in COLORS:
        raise ValueError(f"unknown colour {color!r}")
    base = np.asarray(COLORS[color])
    rgb = np.clip(base + rng.uniform(-color_jitter, color_jitter, 3), 0.0, 1.0)
    density = 1500.0 if kind in CONTAINER_KINDS else 700.0
    return ObjectSpec(kind=kind, color=color, size=sample_size(kind, rng),
                      rgba=(float(rgb[0]), float(rgb[1]), float(rgb[2]), 1.0), density=density)


# ----------------------------------------------------------------------------------------------- MuJoCo building
_GEOM_TYPES = None


def _geom_type(name: str):
    import mujoco

    global _GEOM_TYPES
    if _GEOM_TYPES is None:
        _GEOM_TYPES = {
            "box": mujoco.mjtGeom.mjGEOM_BOX, "sphere": mujoco.mjtGeom.mjGEOM_SPHERE,
            "cylinder": mujoco.mjtGeom.mjGEOM_CYLINDER, "capsule": mujoco.mjtGeom.mjGEOM_CAPSULE,
            "ellipsoid": mujoco.mjtGeom.mjGEOM_ELLIPSOID,
        }
    return _GEOM_TYPES[name]


def add_object(parent_body, obj: ObjectSpec, body_name: str, pos, quat, friction: float = 1.0):
    """Add `obj` under `parent_body` (an mjsBody) as a free body (a static one for pads). Returns the mjsBody."""
    body = parent_body.add_body(name=body_name, pos=[float(v) for v in pos], quat=[float(v) for v in quat])
    if not obj.is_pad:
        body.add_freejoint(name=body_name + "/free")
    for i, g in enumerate(object_geoms(obj)):
        size = list(g.size) + [0.0] * (3 - len(g.size))
        geom = body.add_geom(name=f"{body_name}/g{i}", type=_geom_type(g.type), size=size,
                             pos=list(g.pos), quat=list(g.quat), rgba=list(obj.rgba), density=obj.density)
        if obj.is_pad:  # visual target region: nothing collides with it
            geom.contype, geom.conaffinity, geom.group = 0, 0, 1
            continue
        if obj.is_container and i > 0:  # walls (geom 0 is the floor)
            geom.contype, geom.conaffinity = WALL_CONTYPE, WALL_CONAFFINITY
        else:
            geom.contype, geom.conaffinity = ENV_CONTYPE, ENV_CONAFFINITY
        if obj.kind in ("ball", "egg", "dumbbell", "pill"):
            geom.condim = 6  # rolling friction keeps round things from rolling away forever
            geom.friction = [friction, 0.005, 0.002]
        else:
            geom.condim = 4
            geom.friction = [friction, 0.005, 0.0001]
    return body


# ------------------------------------------------------------------------------------------- surface samples
def _unit_sphere(n: int) -> np.ndarray:
    i = np.arange(n) + 0.5
    phi = np.arccos(1 - 2 * i / n)
    th = math.pi * (1 + 5 ** 0.5) * i
    return np.stack([np.cos(th) * np.sin(phi), np.sin(th) * np.sin(phi), np.cos(phi)], axis=1)


def _quat_to_mat(q) -> np.ndarray:
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _geom_points(g: GeomDesc) -> np.ndarray:
    s = g.size
    if g.type == "box":
        c = np.array([[i, j, k] for i in (-1, 0, 1) for j in (-1, 0, 1) for k in (-1, 0, 1) if (i, j, k) != (0, 0, 0)],
                     dtype=float)
        p = c * np.asarray(s)
    elif g.type == "sphere":
        p = _unit_sphere(64) * s[0]
    elif g.type == "ellipsoid":
        p = _unit_sphere(64) * np.asarray(s)
    elif g.type == "cylinder":
        a = np.linspace(0, 2 * math.pi, 24, endpoint=False)
        ring = np.stack([np.cos(a) * s[0], np.sin(a) * s[0]], axis=1)
        p = np.concatenate([np.c_[ring, np.full(24, z)] for z in (-s[1], 0.0, s[1])] + [[[0, 0, s[1]], [0, 0, -s[1]]]])
    elif g.type == "capsule":
        sph = _unit_sphere(32) * s[0]
        top = sph.copy()
        top[:, 2] += np.where(sph[:, 2] >= 0, s[1], -s[1])
        p = top
    else:  # pragma: no cover
        raise ValueError(g.type)
    return p @ _quat_to_mat(g.quat).T + np.asarray(g.pos)


def surface_points(obj: ObjectSpec) -> np.ndarray:
    """(N,3) points on the object's surface in its frame; their projections bound its 2-D box."""
    return np.concatenate([_geom_points(g) for g in object_geoms(obj)], axis=0)
