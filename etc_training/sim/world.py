"""Build the MuJoCo tabletop world around the WidowX 250 6DOF compiled from urdf/wx250s.urdf.

The URDF is the single source of truth for the arm (kinematics, limits, efforts, masses, geometry); this module only
adds what a URDF cannot hold, programmatically through `mujoco.MjSpec`:
- position actuators on the six arm joints (force limits = URDF efforts) tracking a servo-like interpolated set
  point (see env.ServoProfile), servo armature (reflected rotor inertia), gravity compensation of the links;
- the parallel gripper: a force-limited position actuator on `left_finger` (force = URDF finger effort; the
  URDF mimic becomes an equality constraint for `right_finger`), high-friction finger pads, grasping through
  real contacts (a weld-on-grasp fallback exists only when `physics.weld_on_grasp` is set);
- the table (its top is z = 0 in base_link, the robot base sits on it), lights, cameras and the objects.
Contact classes: robot links collide with the table and objects but not with each other.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import numpy as np

from etc_ros.core.camera import CameraIntrinsics
from etc_ros.core.paths import urdf_path
from etc_ros.core.spec import EE_FRAME, FINGER_OPEN, GRIPPER_JOINT, JOINT_NAMES, READY_POSE

from .config import SimConfig
from .objects import ROBOT_CONAFFINITY, ROBOT_CONTYPE, TABLE_CONAFFINITY, TABLE_CONTYPE, ObjectSpec, add_object

TABLE_SIZE = (1.0, 1.0, 0.04)  # m; x from -0.25 to 0.75, y from -0.5 to 0.5, top at z = 0
TABLE_X0 = -0.25
PRIMARY = "primary"
WRIST = "wrist"
# Servo armature (reflected rotor inertia, kg m^2): XM430-W350 on the first five joints, XL430-W250 on the wrist
# rotate; for the prismatic fingers (kg) it stands for the horn/linkage inertia seen at the finger.
ARMATURE = {"waist": 0.02, "shoulder": 0.04, "elbow": 0.03, "forearm_roll": 0.01, "wrist_angle": 0.01,
            "wrist_rotate": 0.004}
FINGER_ARMATURE = 0.05
FINGER_KV = 25.0
ARM_KP = {"waist": 120.0, "shoulder": 250.0, "elbow": 200.0, "forearm_roll": 40.0, "wrist_angle": 60.0,
          "wrist_rotate": 15.0}
ARM_KV = {"waist": 8.0, "shoulder": 16.0, "elbow": 10.0, "forearm_roll": 2.0, "wrist_angle": 2.5,
          "wrist_rotate": 0.6}
FINGER_KP = 3000.0  # N/m; the force limit (URDF effort) saturates it once the fingers touch an object
# Wrist camera (optional): pose in gripper_link (x = approach axis), OpenCV intrinsics at 640x480.
WRIST_EYE = (-0.02, 0.0, 0.055)
WRIST_TARGET = (0.11, 0.0, 0.0)
WRIST_INTRINSICS = dict(width=640, height=480, fx=330.0, fy=330.0, cx=319.5, cy=239.5)


@dataclass
class PlacedObject:
    spec: ObjectSpec
    xy: tuple[float, float]
    yaw: float
    role: str  # "object" | "target" | "distractor"

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass
class Appearance:
    table_rgb1: tuple[float, float, float] = (0.55, 0.42, 0.30)
    table_rgb2: tuple[float, float, float] = (0.50, 0.38, 0.27)
    table_texture: str = "checker"  # checker | gradient | flat
    table_repeat: float = 6.0
    light_dir: tuple[float, float, float] = (0.2, 0.1, -1.0)
    light_diffuse: float = 0.6
    ambient: float = 0.3
    floor_rgb: tuple[float, float, float] = (0.35, 0.35, 0.37)


@dataclass
class Scene:
    """Everything random about one episode's world (sampled from the seed by tasks.sample_episode)."""

    objects: list[PlacedObject]
    appearance: Appearance = field(default_factory=Appearance)
    primary_T: np.ndarray = field(default_factory=lambda: np.eye(4))  # T_base_cam of the primary camera
    primary_intrinsics: CameraIntrinsics = field(default_factory=CameraIntrinsics)  # at render resolution

    def object(self, name: str) -> PlacedObject:
        for o in self.objects:
            if o.name == name:
                return o
        raise KeyError(name)


@dataclass
class World:
    """A compiled model plus the ids the environment needs."""

    model: object  # mujoco.MjModel
    scene: Scene
    arm_qadr: np.ndarray
    arm_dadr: np.ndarray
    arm_act: np.ndarray
    finger_qadr: int
    right_finger_qadr: int
    finger_act: int
    ee_site: int
    gripper_body: int
    ctrl_range: np.ndarray  # (7, 2)
    joint_range: np.ndarray  # (6, 2)
    object_body: dict[str, int]
    object_qadr: dict[str, int]  # -1 for static pads
    object_geoms: dict[str, np.ndarray]
    finger_geoms: tuple[np.ndarray, np.ndarray]
    robot_geoms: np.ndarray
    table_geom: int
    cameras: dict[str, int]
    camera_intrinsics: dict[str, CameraIntrinsics]
    weld_eq: dict[str, int]


@functools.lru_cache(maxsize=1)
def _urdf_text() -> str:
    path = urdf_path()
    text = path.read_text()
    # Keep every URDF frame as a body (ee_gripper_link is the EE) and its visual geoms.
    ext = '<mujoco><compiler discardvisual="false" fusestatic="false" balanceinertia="true"/></mujoco>'
    i = text.index("<robot")
    j = text.index(">", i) + 1
    return text[:j] + "\n  " + ext + text[j:]


def robot_spec():
    """MjSpec of the bare arm, straight from urdf/wx250s.urdf."""
    import mujoco

    return mujoco.MjSpec.from_string(_urdf_text())


def opencv_to_mujoco_quat(R_cv: np.ndarray) -> np.ndarray:
    """Quaternion (w,x,y,z) of a MuJoCo camera frame (x right, y up, looks along -z) from an OpenCV camera rotation."""
    import mujoco

    R = np.asarray(R_cv, dtype=float) @ np.diag([1.0, -1.0, -1.0])
    q = np.zeros(4)
    mujoco.mju_mat2Quat(q, np.ascontiguousarray(R).reshape(-1))
    return q


def _add_camera(parent, name: str, T_parent_cam: np.ndarray, K: CameraIntrinsics):
    """Camera whose rendering follows the OpenCV pinhole model K (non-square pixels and off-centre principal
    point included). MuJoCo takes the principal point as an offset from the image centre, sign-flipped on both axes
    with respect to OpenCV pixel coordinates (checked by tests/test_sim_camera.py)."""
    cam = parent.add_camera(name=name, pos=[float(v) for v in T_parent_cam[:3, 3]],
                            quat=[float(v) for v in opencv_to_mujoco_quat(T_parent_cam[:3, :3])])
    cam.resolution = [K.width, K.height]
    cam.focal_pixel = [K.fx, K.fy]
    cam.principal_pixel = [-(K.cx + 0.5 - K.width / 2.0), -(K.cy + 0.5 - K.height / 2.0)]
    cam.sensor_size = [1.0, 1.0]  # any nonzero value switches MuJoCo to the intrinsic (pixel) camera model
    return cam


def wrist_camera_T() -> np.ndarray:
    """Pose of the wrist camera in gripper_link (OpenCV camera frame)."""
    from etc_ros.core.camera import look_at

    return look_at(np.array(WRIST_EYE), np.array(WRIST_TARGET), up=np.array([-1.0, 0.0, 0.0]))


def build_world(scene: Scene, cfg: SimConfig | None = None) -> World:
    import mujoco

    cfg = cfg or SimConfig()
    ph = cfg.physics
    spec = robot_spec()
    spec.modelname = "wx250s_tabletop"
    o = spec.option
    o.timestep = ph.timestep
    o.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    o.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    o.impratio = 10.0
    o.iterations = 50
    o.ls_iterations = 20
    spec.visual.global_.offwidth = max(640, cfg.render.width)
    spec.visual.global_.offheight = max(480, cfg.render.height)
    spec.visual.quality.shadowsize = 1024
    spec.stat.extent = 1.0
    spec.stat.center = [0.25, 0.0, 0.1]

    app = scene.appearance
    hl = spec.visual.headlight
    hl.ambient = [app.ambient] * 3
    hl.diffuse = [0.1] * 3
    hl.specular = [0.05] * 3

    # ---- robot: contact classes, hidden collision geoms, armature, gravity compensation, gripper
    for g in spec.geoms:
        if g.contype == 0 and g.conaffinity == 0:
            continue  # URDF visual geom
        g.contype, g.conaffinity = ROBOT_CONTYPE, ROBOT_CONAFFINITY
        g.group = 3  # collision proxies: not rendered (the visual copies are)
    for b in spec.bodies:
        if b.name and b.name != "world":
            b.gravcomp = 1.0
    for name in JOINT_NAMES:
        spec.joint(name).armature = ARMATURE[name]
    left = spec.joint(GRIPPER_JOINT)
    left.armature = FINGER_ARMATURE
    right = spec.joint("right_finger")
    right.armature = FINGER_ARMATURE
    for j in (left, right):
        j.damping = [5.0, 0.0, 0.0]
    # URDF joint "gripper" is the servo horn: not modelled as a mechanism, held at 0 by a joint equality
    e = spec.add_equality(name="lock_prop", type=mujoco.mjtEq.mjEQ_JOINT, name1="gripper",
                          objtype=mujoco.mjtObj.mjOBJ_JOINT)
    e.data[:5] = [0.0, 0.0, 0.0, 0.0, 0.0]
    for link in ("left_finger_link", "right_finger_link"):
        for g in spec.body(link).geoms:
            if g.contype:
                g.friction = [ph.finger_friction, 0.02, 0.0002]
                g.condim = 4
                g.solref = [0.005, 1.0]
                g.solimp = [0.95, 0.99, 0.001, 0.5, 2.0]
    spec.body(EE_FRAME).add_site(name="ee", pos=[0, 0, 0], size=[0.004, 0, 0], rgba=[1, 0, 1, 0], group=4)

    for name in JOINT_NAMES:
        j = spec.joint(name)
        kp = ARM_KP[name]
        a = spec.add_actuator(name=name, target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        a.set_to_position(kp=kp, kv=ARM_KV[name])  # velocity term integrated implicitly
        a.ctrlrange = list(j.range)
        a.ctrllimited = 1
        a.forcerange = list(j.actfrcrange)
        a.forcelimited = 1
    a = spec.add_actuator(name="gripper", target=GRIPPER_JOINT, trntype=mujoco.mjtTrn.mjTRN_JOINT)
    a.set_to_position(kp=FINGER_KP, kv=FINGER_KV)
    a.ctrlrange = list(left.range)
    a.ctrllimited = 1
    f = float(ph.gripper_force) if ph.gripper_force > 0 else float(left.actfrcrange[1])
    a.forcerange = [-f, f]
    a.forcelimited = 1

    # ---- table, floor, lights
    wb = spec.worldbody
    tex = spec.add_texture(name="table_tex", type=mujoco.mjtTexture.mjTEXTURE_2D, width=256, height=256,
                           rgb1=list(app.table_rgb1), rgb2=list(app.table_rgb2))
    tex.builtin = {"checker": mujoco.mjtBuiltin.mjBUILTIN_CHECKER, "gradient": mujoco.mjtBuiltin.mjBUILTIN_GRADIENT,
                   "flat": mujoco.mjtBuiltin.mjBUILTIN_FLAT}[app.table_texture]
    mat = spec.add_material(name="table_mat", texrepeat=[app.table_repeat, app.table_repeat], specular=0.1,
                            shininess=0.1, reflectance=0.0)
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = "table_tex"
    sx, sy, sz = TABLE_SIZE
    wb.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[sx / 2, sy / 2, sz / 2],
                pos=[TABLE_X0 + sx / 2, 0.0, -sz / 2], material="table_mat", friction=[0.8, 0.005, 0.0001],
                contype=TABLE_CONTYPE, conaffinity=TABLE_CONAFFINITY, condim=4)
    wb.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3, 3, 0.1], pos=[0, 0, -0.75],
                rgba=list(app.floor_rgb) + [1.0], contype=0, conaffinity=0)
    d = np.asarray(app.light_dir, dtype=float)
    d = d / np.linalg.norm(d)
    wb.add_light(name="sun", type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL, pos=list(-d * 2.0), dir=list(d),
                 diffuse=[app.light_diffuse] * 3, specular=[0.1] * 3, castshadow=bool(cfg.render.shadows))
    wb.add_light(name="fill", type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL, pos=[0.3, 0.8, 1.5],
                 dir=[0.0, -0.5, -1.0], diffuse=[0.12] * 3, specular=[0.0] * 3, castshadow=False)

    # ---- objects
    for i, po in enumerate(scene.objects):
        z = po.spec.half_height + (0.0005 if not po.spec.is_pad else 0.0)
        q = [math.cos(po.yaw / 2), 0.0, 0.0, math.sin(po.yaw / 2)]
        add_object(wb, po.spec, _body_name(po.name), (po.xy[0], po.xy[1], z), q, friction=ph.friction)

    # ---- cameras
    _add_camera(wb, PRIMARY, scene.primary_T, scene.primary_intrinsics)
    cams = [PRIMARY]
    intr = {PRIMARY: scene.primary_intrinsics}
    if cfg.camera.wrist or WRIST in cfg.render.cameras:
        Kw = CameraIntrinsics(**WRIST_INTRINSICS).resized(cfg.render.width, cfg.render.height)
        _add_camera(spec.body("gripper_link"), WRIST, wrist_camera_T(), Kw)
        cams.append(WRIST)
        intr[WRIST] = Kw

    # ---- optional weld-on-grasp fallback (inactive until the environment switches it on)
    weld_names = {}
    if ph.weld_on_grasp:
        for po in scene.objects:
            if po.spec.graspable:
                eq = spec.add_equality(name="weld/" + _body_name(po.name), type=mujoco.mjtEq.mjEQ_WELD,
                                       name1=_body_name(po.name), name2=EE_FRAME, objtype=mujoco.mjtObj.mjOBJ_BODY)
                eq.active = False
                weld_names[po.name] = eq.name

    model = spec.compile()
    return _index(model, scene, cams, intr, weld_names)


def _body_name(obj_name: str) -> str:
    return "obj/" + obj_name.replace(" ", "_")


def _index(model, scene: Scene, cams: list[str], intr: dict, weld_names: dict) -> World:
    import mujoco

    def jid(n):
        return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n)

    def aid(n):
        return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_ACTUATOR, n)

    def bid(n):
        return mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n)

    arm_j = [jid(n) for n in JOINT_NAMES]
    lf, rf = jid(GRIPPER_JOINT), jid("right_finger")
    obj_body, obj_q, obj_g = {}, {}, {}
    for po in scene.objects:
        b = bid(_body_name(po.name))
        obj_body[po.name] = b
        ja = model.body_jntadr[b]
        obj_q[po.name] = int(model.jnt_qposadr[ja]) if model.body_jntnum[b] else -1
        obj_g[po.name] = np.flatnonzero(model.geom_bodyid == b)

    def coll(body):
        b = bid(body)
        return np.flatnonzero((model.geom_bodyid == b) & (model.geom_contype > 0))

    robot_bodies = [bid(n) for n in ("base_link", "shoulder_link", "upper_arm_link", "upper_forearm_link",
                                     "lower_forearm_link", "wrist_link", "gripper_link", "gripper_prop_link",
                                     "gripper_bar_link", "left_finger_link", "right_finger_link")]
    robot_geoms = np.flatnonzero(np.isin(model.geom_bodyid, robot_bodies) & (model.geom_contype > 0))
    arm_act = np.array([aid(n) for n in JOINT_NAMES])
    fa = aid("gripper")
    ctrl = np.vstack([model.actuator_ctrlrange[arm_act], model.actuator_ctrlrange[fa]])
    weld = {k: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_EQUALITY, v) for k, v in weld_names.items()}
    return World(
        model=model, scene=scene,
        arm_qadr=np.array([model.jnt_qposadr[j] for j in arm_j]),
        arm_dadr=np.array([model.jnt_dofadr[j] for j in arm_j]),
        arm_act=arm_act, finger_qadr=int(model.jnt_qposadr[lf]), right_finger_qadr=int(model.jnt_qposadr[rf]),
        finger_act=int(fa), ee_site=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "ee"),
        gripper_body=bid("gripper_link"), ctrl_range=ctrl,
        joint_range=np.array([model.jnt_range[j] for j in arm_j]),
        object_body=obj_body, object_qadr=obj_q, object_geoms=obj_g,
        finger_geoms=(coll("left_finger_link"), coll("right_finger_link")), robot_geoms=robot_geoms,
        table_geom=mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, "table"),
        cameras={c: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, c) for c in cams},
        camera_intrinsics=dict(intr), weld_eq=weld,
    )


def reset_robot(world: World, data, q_arm: np.ndarray | None = None, finger: float = FINGER_OPEN) -> None:
    """Put the arm at q_arm (default READY_POSE) with the fingers at `finger`, targets equal to the state."""
    q = READY_POSE if q_arm is None else np.asarray(q_arm, dtype=float)
    data.qpos[world.arm_qadr] = q
    data.qpos[world.finger_qadr] = finger
    data.qpos[world.right_finger_qadr] = -finger
    data.ctrl[world.arm_act] = q
    data.ctrl[world.finger_act] = finger


__all__ = ["Appearance", "PlacedObject", "Scene", "World", "build_world", "robot_spec", "reset_robot",
           "PRIMARY", "WRIST"]
