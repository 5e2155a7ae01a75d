"""A small URDF reader (xml.etree, numpy only) for the robot model in urdf/wx250s.urdf.

It keeps what kinematics, the MuJoCo world builder and the ETC engine need: links (mass, inertia, primitive
visual/collision geometry with origins) and joints (type, parent, child, origin, axis, limits, mimic, dynamics).
Malformed files raise `UrdfError` with a message naming the offending element.

    model = load_urdf()                         # urdf/wx250s.urdf of this package
    joints = model.chain("base_link", "ee_gripper_link")
    T = joints[0].transform(0.3)                # parent -> child at joint value 0.3
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from etc_ros.core.errors import UrdfError
from etc_ros.core.transforms3d import euler_to_matrix, make_transform

__all__ = [
    "Origin", "Geometry", "Visual", "Collision", "Inertial", "Link", "Limit", "Mimic", "Dynamics", "Joint",
    "UrdfModel", "load_urdf", "parse_urdf", "JOINT_TYPES",
]

JOINT_TYPES = ("revolute", "continuous", "prismatic", "fixed", "floating", "planar")
GEOMETRY_KINDS = ("box", "cylinder", "sphere", "mesh")


@dataclass(frozen=True)
class Origin:
    xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rpy: tuple[float, float, float] = (0.0, 0.0, 0.0)  # 'sxyz': R = Rz(y) Ry(p) Rx(r), as the URDF spec

    @property
    def matrix(self) -> np.ndarray:
        return make_transform(euler_to_matrix(*self.rpy), np.asarray(self.xyz, dtype=float))


@dataclass(frozen=True)
class Geometry:
    kind: str  # box | cylinder | sphere | mesh
    size: tuple[float, float, float] | None = None  # box full extents
    radius: float | None = None  # cylinder, sphere
    length: float | None = None  # cylinder (along its local z)
    filename: str | None = None  # mesh
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # mesh


@dataclass(frozen=True)
class Visual:
    geometry: Geometry
    origin: Origin = Origin()
    name: str | None = None
    material: str | None = None
    rgba: tuple[float, float, float, float] | None = None  # resolved from the material


@dataclass(frozen=True)
class Collision:
    geometry: Geometry
    origin: Origin = Origin()
    name: str | None = None


@dataclass(frozen=True)
class Inertial:
    mass: float
    origin: Origin = Origin()
    inertia: tuple[float, float, float, float, float, float] = (0.0,) * 6  # ixx ixy ixz iyy iyz izz

    @property
    def inertia_matrix(self) -> np.ndarray:
        ixx, ixy, ixz, iyy, iyz, izz = self.inertia
        return np.array([[ixx, ixy, ixz], [ixy, iyy, iyz], [ixz, iyz, izz]])


@dataclass(frozen=True)
class Link:
    name: str
    inertial: Inertial | None = None
    visuals: tuple[Visual, ...] = ()
    collisions: tuple[Collision, ...] = ()

    @property
    def mass(self) -> float:
        return 0.0 if self.inertial is None else self.inertial.mass


@dataclass(frozen=True)
class Limit:
    lower: float = 0.0
    upper: float = 0.0
    effort: float = 0.0
    velocity: float = 0.0


@dataclass(frozen=True)
class Mimic:
    joint: str
    multiplier: float = 1.0
    offset: float = 0.0


@dataclass(frozen=True)
class Dynamics:
    damping: float = 0.0
    friction: float = 0.0


@dataclass(frozen=True)
class Joint:
    name: str
    type: str
    parent: str
    child: str
    origin: Origin = Origin()
    axis: tuple[float, float, float] = (1.0, 0.0, 0.0)  # unit vector in the joint frame
    limit: Limit | None = None
    mimic: Mimic | None = None
    dynamics: Dynamics | None = None

    @property
    def movable(self) -> bool:
        return self.type in ("revolute", "continuous", "prismatic")

    def motion(self, q: float) -> np.ndarray:
        """4x4 motion of the joint at value q (in the joint frame, after the origin)."""
        a = np.asarray(self.axis, dtype=float)
        if self.type in ("revolute", "continuous"):
            K = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
            R = np.eye(3) + math.sin(q) * K + (1.0 - math.cos(q)) * (K @ K)
            return make_transform(R)
        if self.type == "prismatic":
            return make_transform(None, a * q)
        if self.type == "fixed":
            return np.eye(4)
        raise UrdfError(f"joint '{self.name}': motion of a '{self.type}' joint is not supported")

    def transform(self, q: float = 0.0) -> np.ndarray:
        """Parent-link -> child-link transform at joint value q."""
        return self.origin.matrix @ self.motion(q)


@dataclass
class UrdfModel:
    name: str
    links: dict[str, Link]
    joints: dict[str, Joint]  # in file order
    materials: dict[str, tuple[float, float, float, float] | None] = field(default_factory=dict)
    source: str = "<string>"

    # ---- tree queries -------------------------------------------------------------------------------------
    @property
    def root(self) -> str:
        children = {j.child for j in self.joints.values()}
        roots = [n for n in self.links if n not in children]
        return roots[0]

    def parent_joint(self, link: str) -> Joint | None:
        self._need_link(link)
        for j in self.joints.values():
            if j.child == link:
                return j
        return None

    def child_joints(self, link: str) -> list[Joint]:
        self._need_link(link)
        return [j for j in self.joints.values() if j.parent == link]

    def chain(self, base: str, tip: str) -> list[Joint]:
        """Joints (fixed ones included) from `base` down to `tip`, ordered base -> tip.
        `tip` must be a descendant of `base` (or equal: empty chain)."""
        self._need_link(base)
        self._need_link(tip)
        out: list[Joint] = []
        link = tip
        while link != base:
            j = self.parent_joint(link)
            if j is None:
                raise UrdfError(f"{self.source}: link '{tip}' is not below link '{base}' in the kinematic tree")
            out.append(j)
            link = j.parent
        return out[::-1]

    def movable_joints(self) -> list[Joint]:
        return [j for j in self.joints.values() if j.movable]

    @property
    def total_mass(self) -> float:
        return float(sum(link.mass for link in self.links.values()))

    def _need_link(self, name: str) -> None:
        if name not in self.links:
            raise UrdfError(f"{self.source}: no link named '{name}' (links: {', '.join(self.links)})")


# ---- parsing --------------------------------------------------------------------------------------------------
def _floats(text: str | None, n: int, where: str, attr: str, default: tuple[float, ...] | None = None) -> tuple:
    if text is None:
        if default is None:
            raise UrdfError(f"{where}: missing attribute '{attr}'")
        return default
    parts = text.split()
    try:
        vals = tuple(float(p) for p in parts)
    except ValueError:
        raise UrdfError(f"{where}: attribute {attr}='{text}' is not a list of numbers") from None
    if len(vals) != n:
        raise UrdfError(f"{where}: attribute {attr}='{text}' needs {n} numbers, got {len(vals)}")
    if not all(math.isfinite(v) for v in vals):
        raise UrdfError(f"{where}: attribute {attr}='{text}' contains non-finite numbers")
    return vals


def _float(el: ET.Element, attr: str, where: str, default: float | None = None) -> float:
    return _floats(el.get(attr), 1, where, attr, None if default is None else (default,))[0]


def _origin(parent: ET.Element, where: str) -> Origin:
    el = parent.find("origin")
    if el is None:
        return Origin()
    w = f"{where} <origin>"
    return Origin(_floats(el.get("xyz"), 3, w, "xyz", (0.0, 0.0, 0.0)),
                  _floats(el.get("rpy"), 3, w, "rpy", (0.0, 0.0, 0.0)))


def _geometry(parent: ET.Element, where: str) -> Geometry:
    g = parent.find("geometry")
    if g is None or len(g) == 0:
        raise UrdfError(f"{where}: missing <geometry> shape")
    shape = g[0]
    w = f"{where} <geometry><{shape.tag}>"
    if shape.tag == "box":
        size = _floats(shape.get("size"), 3, w, "size")
        if min(size) <= 0:
            raise UrdfError(f"{w}: box size must be positive, got {size}")
        return Geometry("box", size=size)
    if shape.tag == "cylinder":
        r, length = _float(shape, "radius", w), _float(shape, "length", w)
        if r <= 0 or length <= 0:
            raise UrdfError(f"{w}: cylinder radius and length must be positive")
        return Geometry("cylinder", radius=r, length=length)
    if shape.tag == "sphere":
        r = _float(shape, "radius", w)
        if r <= 0:
            raise UrdfError(f"{w}: sphere radius must be positive")
        return Geometry("sphere", radius=r)
    if shape.tag == "mesh":
        fn = shape.get("filename")
        if not fn:
            raise UrdfError(f"{w}: missing attribute 'filename'")
        return Geometry("mesh", filename=fn, scale=_floats(shape.get("scale"), 3, w, "scale", (1.0, 1.0, 1.0)))
    raise UrdfError(f"{where}: unknown geometry <{shape.tag}> (expected one of {', '.join(GEOMETRY_KINDS)})")


def _material(el: ET.Element, where: str) -> tuple[str | None, tuple | None]:
    m = el.find("material")
    if m is None:
        return None, None
    c = m.find("color")
    rgba = None if c is None else _floats(c.get("rgba"), 4, f"{where} <material><color>", "rgba")
    return m.get("name"), rgba


def _link(el: ET.Element, materials: dict) -> Link:
    name = el.get("name")
    if not name:
        raise UrdfError("<link> without a 'name' attribute")
    where = f"link '{name}'"
    inertial = None
    ie = el.find("inertial")
    if ie is not None:
        me = ie.find("mass")
        if me is None:
            raise UrdfError(f"{where} <inertial>: missing <mass>")
        mass = _float(me, "value", f"{where} <inertial><mass>")
        if mass < 0:
            raise UrdfError(f"{where} <inertial><mass>: mass must be >= 0, got {mass}")
        ine = ie.find("inertia")
        if ine is None:
            raise UrdfError(f"{where} <inertial>: missing <inertia>")
        wi = f"{where} <inertial><inertia>"
        inertia = tuple(_float(ine, k, wi) for k in ("ixx", "ixy", "ixz", "iyy", "iyz", "izz"))
        if inertia[0] < 0 or inertia[3] < 0 or inertia[5] < 0:
            raise UrdfError(f"{wi}: diagonal inertia must be >= 0")
        inertial = Inertial(mass, _origin(ie, f"{where} <inertial>"), inertia)
    visuals = []
    for i, v in enumerate(el.findall("visual")):
        w = f"{where} <visual> #{i}"
        mname, rgba = _material(v, w)
        if rgba is None and mname is not None:
            if mname not in materials:
                raise UrdfError(f"{w}: material '{mname}' is not defined")
            rgba = materials[mname]
        visuals.append(Visual(_geometry(v, w), _origin(v, w), v.get("name"), mname, rgba))
    collisions = []
    for i, c in enumerate(el.findall("collision")):
        w = f"{where} <collision> #{i}"
        collisions.append(Collision(_geometry(c, w), _origin(c, w), c.get("name")))
    return Link(name, inertial, tuple(visuals), tuple(collisions))


def _joint(el: ET.Element) -> Joint:
    name = el.get("name")
    if not name:
        raise UrdfError("<joint> without a 'name' attribute")
    where = f"joint '{name}'"
    jtype = el.get("type")
    if jtype not in JOINT_TYPES:
        raise UrdfError(f"{where}: type '{jtype}' is not one of {', '.join(JOINT_TYPES)}")
    links = []
    for tag in ("parent", "child"):
        e = el.find(tag)
        if e is None or not e.get("link"):
            raise UrdfError(f"{where}: missing <{tag} link='...'>")
        links.append(e.get("link"))
    axis = (1.0, 0.0, 0.0)
    ae = el.find("axis")
    if ae is not None:
        axis = _floats(ae.get("xyz"), 3, f"{where} <axis>", "xyz")
    n = math.sqrt(sum(a * a for a in axis))
    if jtype in ("revolute", "continuous", "prismatic", "planar"):
        if n < 1e-9:
            raise UrdfError(f"{where} <axis>: axis must be non-zero")
        axis = tuple(a / n for a in axis)
    limit = None
    le = el.find("limit")
    if le is not None:
        w = f"{where} <limit>"
        limit = Limit(_float(le, "lower", w, 0.0), _float(le, "upper", w, 0.0),
                      _float(le, "effort", w, 0.0), _float(le, "velocity", w, 0.0))
        if jtype in ("revolute", "prismatic") and limit.lower > limit.upper:
            raise UrdfError(f"{w}: lower {limit.lower} > upper {limit.upper}")
        if limit.effort < 0 or limit.velocity < 0:
            raise UrdfError(f"{w}: effort and velocity must be >= 0")
    elif jtype in ("revolute", "prismatic"):
        raise UrdfError(f"{where}: a {jtype} joint needs a <limit> element")
    mimic = None
    me = el.find("mimic")
    if me is not None:
        if not me.get("joint"):
            raise UrdfError(f"{where} <mimic>: missing attribute 'joint'")
        mimic = Mimic(me.get("joint"), _float(me, "multiplier", f"{where} <mimic>", 1.0),
                      _float(me, "offset", f"{where} <mimic>", 0.0))
    dyn = None
    de = el.find("dynamics")
    if de is not None:
        dyn = Dynamics(_float(de, "damping", f"{where} <dynamics>", 0.0),
                       _float(de, "friction", f"{where} <dynamics>", 0.0))
    return Joint(name, jtype, links[0], links[1], _origin(el, where), axis, limit, mimic, dyn)


def parse_urdf(text: str, source: str = "<string>") -> UrdfModel:
    """Parse URDF XML text into a validated `UrdfModel` (one tree, unique names, references resolved)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise UrdfError(f"{source}: not well-formed XML ({exc})") from None
    if root.tag != "robot":
        raise UrdfError(f"{source}: root element is <{root.tag}>, expected <robot>")
    materials: dict[str, tuple | None] = {}
    for m in root.findall("material"):
        if not m.get("name"):
            raise UrdfError(f"{source}: top-level <material> without a 'name'")
        c = m.find("color")
        materials[m.get("name")] = None if c is None else _floats(
            c.get("rgba"), 4, f"material '{m.get('name')}' <color>", "rgba")
    links: dict[str, Link] = {}
    try:
        for el in root.findall("link"):
            link = _link(el, materials)
            if link.name in links:
                raise UrdfError(f"duplicate link name '{link.name}'")
            links[link.name] = link
        joints: dict[str, Joint] = {}
        for el in root.findall("joint"):
            j = _joint(el)
            if j.name in joints:
                raise UrdfError(f"duplicate joint name '{j.name}'")
            joints[j.name] = j
    except UrdfError as exc:
        raise UrdfError(f"{source}: {exc}") from None
    if not links:
        raise UrdfError(f"{source}: no <link> elements")
    parent_of: dict[str, str] = {}
    for j in joints.values():
        for role, ln in (("parent", j.parent), ("child", j.child)):
            if ln not in links:
                raise UrdfError(f"{source}: joint '{j.name}' <{role}> refers to unknown link '{ln}'")
        if j.child in parent_of:
            raise UrdfError(f"{source}: link '{j.child}' has two parent joints ('{parent_of[j.child]}' and '{j.name}')")
        parent_of[j.child] = j.name
        if j.mimic is not None:
            if j.mimic.joint not in {e.get("name") for e in root.findall("joint")}:
                raise UrdfError(f"{source}: joint '{j.name}' <mimic> refers to unknown joint '{j.mimic.joint}'")
    roots = [n for n in links if n not in parent_of]
    if len(roots) != 1:
        raise UrdfError(f"{source}: expected exactly one root link, found {len(roots)} "
                        f"({', '.join(roots) or 'a cycle'})")
    # every link must be reachable from the root (no cycles)
    children: dict[str, list[str]] = {}
    for j in joints.values():
        children.setdefault(j.parent, []).append(j.child)
    seen, stack = set(), [roots[0]]
    while stack:
        ln = stack.pop()
        if ln in seen:
            raise UrdfError(f"{source}: kinematic loop through link '{ln}'")
        seen.add(ln)
        stack.extend(children.get(ln, []))
    if len(seen) != len(links):
        missing = sorted(set(links) - seen)
        raise UrdfError(f"{source}: links not connected to root '{roots[0]}' (kinematic loop?): {', '.join(missing)}")
    return UrdfModel(root.get("name") or "robot", links, joints, materials, source)


def load_urdf(path: str | Path | None = None) -> UrdfModel:
    """Read a URDF file (default: the package's urdf/wx250s.urdf)."""
    if path is None:
        from etc_ros.core.paths import urdf_path

        path = urdf_path()
    p = Path(path)
    if not p.is_file():
        raise UrdfError(f"URDF file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UrdfError(f"cannot read URDF {p}: {exc}") from None
    return parse_urdf(text, source=str(p))
