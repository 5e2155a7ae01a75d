"""The MuJoCo WidowX tabletop environment with the robot driver's control API.

Policy level (5 Hz, Bridge convention):
    obs = env.reset(seed=0, split="train")
    obs = env.step(action7)                     # delta EE xyz/rpy + absolute gripper, via etc_ros.core.kinematics
    obs = env.step_joint_targets(q6, gripper)   # one control period (0.2 s) towards joint targets
Driver level (what a ROS driver node calls at 50-100 Hz):
    env.set_joint_targets(q6, gripper); env.advance(dt); q6, gripper_opening = env.joint_state()
Sensing / ground truth:
    env.render("primary") -> (H, W, 3) uint8; env.camera_model("primary") -> CameraModel
    env.observation() -> {"images": {cam: img}, "state": (7,), "ee_pose": (6,), "timestamp": float}
    env.is_success(); env.annotations() -> [per-object dict]  (see docs/sim.md)

Servo model: a new joint goal starts a time-based trapezoidal profile (default 0.25 s total, 0.1 s acceleration,
as the Bridge robot server configures the Dynamixels) from the current set point; stiff position actuators with
gravity compensation track the set point. The gripper set point moves at a bounded rate (physics.gripper_time
for a full stroke) and the finger actuator is force-limited (URDF effort), so grasps happen through contacts.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.camera import CameraModel

from .config import SimConfig
from .errors import SimError
from .objects import surface_points
from .render import ensure_headless_gl
from .splits import check_split
from .tasks import EpisodeSpec, check_success, sample_episode
from .world import PRIMARY, WRIST, World, build_world, reset_robot, wrist_camera_T

SETTLE_TIME = 0.3  # s of physics after reset so objects come to rest


@functools.lru_cache(maxsize=1)
def _kinematics():
    from etc_ros.core.kinematics import WidowXKinematics

    return WidowXKinematics.from_urdf()


def _trapezoid(tau: np.ndarray | float, T: float, ta: float) -> np.ndarray | float:
    """Normalised position (0..1) of a trapezoidal velocity profile of duration T with accel time ta at time tau."""
    if T <= 0:
        return np.ones_like(np.asarray(tau, dtype=float))
    ta = min(ta, T / 2)
    tau = np.clip(np.asarray(tau, dtype=float), 0.0, T)
    if ta <= 0:
        return tau / T
    v = 1.0 / (T - ta)
    a = v / ta
    return np.where(tau < ta, 0.5 * a * tau ** 2,
                    np.where(tau <= T - ta, 0.5 * a * ta ** 2 + v * (tau - ta), 1.0 - 0.5 * a * (T - tau) ** 2))


def _trapezoid_rate(tau: np.ndarray, T: float, ta: float) -> np.ndarray:
    """Time derivative of `_trapezoid` (1/s)."""
    tau = np.asarray(tau, dtype=float)
    if T <= 0:
        return np.zeros_like(tau)
    ta = min(ta, T / 2)
    v = 1.0 / (T - ta)
    if ta <= 0:
        r = np.full_like(tau, v)
    else:
        r = v * np.minimum(1.0, np.minimum(tau / ta, (T - tau) / ta))
    return np.where((tau <= 0) | (tau >= T), 0.0, r)


class ServoProfile:
    """Set point generator of a bank of position servos in time-based-profile mode."""

    def __init__(self, q0: np.ndarray, profile_time: float, accel_time: float):
        self.T, self.ta = float(profile_time), float(accel_time)
        self.start = np.array(q0, dtype=float)
        self.goal = np.array(q0, dtype=float)
        self.t0 = 0.0

    def set_goal(self, goal: np.ndarray, t: float) -> None:
        self.start = self.value(t)
        self.goal = np.array(goal, dtype=float)
        self.t0 = float(t)

    def value(self, t: float) -> np.ndarray:
        s = float(_trapezoid(t - self.t0, self.T, self.ta))
        return self.start + s * (self.goal - self.start)

    def velocity(self, t: float) -> np.ndarray:
        """Set point velocity (rad/s) at time t."""
        return float(_trapezoid_rate(np.asarray(t - self.t0), self.T, self.ta)) * (self.goal - self.start)


class SimEnv:
    """One WidowX tabletop world. Not thread safe; one renderer (GL context) per env."""

    def __init__(self, cfg: SimConfig | None = None, *, render: bool = True, depth: bool = False):
        """render=False: no GL context at all (physics only). depth=True: every observation also renders depth
        in the same pass (what annotations() needs for visibility; saves a second render per frame)."""
        self.cfg = cfg or SimConfig()
        self._render_enabled = bool(render)
        self.with_depth = bool(depth)
        for cam in self.cfg.render.cameras:
            if cam not in (PRIMARY, WRIST):
                raise SimError(f"unknown camera {cam!r} in render.cameras; available: {[PRIMARY, WRIST]}")
        self._renderer = None
        self.world: World | None = None
        self.data = None
        self.episode: EpisodeSpec | None = None
        self.steps = 0
        self.last_ik = None
        self._rest_z: dict[str, float] = {}
        self._surface: dict[str, np.ndarray] = {}
        self._frame_cache: dict[str, tuple[float, np.ndarray, np.ndarray | None]] = {}
        self._welded: str | None = None
        self._g_cmd = 1.0
        self._g_set = 1.0
        self._profile = (float(self.cfg.physics.profile_time), float(self.cfg.physics.accel_time))

    # ------------------------------------------------------------------------------------------------ episode
    def reset(self, seed: int = 0, split: str = "train", family: str | None = None,
              episode: EpisodeSpec | None = None) -> dict:
        """New episode: sample (or take) the EpisodeSpec, build the world, put the arm at READY_POSE, let objects
        settle. Returns the first observation."""
        import mujoco

        if episode is None:
            check_split(split)
            episode = sample_episode(seed, split, self.cfg, family=family)
        self.episode = episode
        self.world = build_world(episode.scene, self.cfg)
        m = self.world.model
        self.data = mujoco.MjData(m)
        reset_robot(self.world, self.data)
        mujoco.mj_forward(m, self.data)
        self._servo = ServoProfile(self.data.qpos[self.world.arm_qadr], *self._profile)
        gain = m.actuator_gainprm[self.world.arm_act, 0]
        self._ff_gain = -m.actuator_biasprm[self.world.arm_act, 2] / gain
        self._g_cmd = self._g_set = 1.0
        self._welded = None
        self._dt_debt = 0.0
        self._frame_cache.clear()
        self._surface = {po.name: surface_points(po.spec) for po in episode.scene.objects}
        self._advance_physics(SETTLE_TIME)
        self.data.time = 0.0
        self._servo.t0 = 0.0
        self._rest_z = {po.name: po.spec.half_height for po in episode.scene.objects}
        self.steps = 0
        self.last_ik = None
        return self.observation()

    @property
    def model(self):
        return self._need().model

    @property
    def task(self):
        return self._need_ep().task

    @property
    def instruction(self) -> str:
        return self._need_ep().task.instruction

    @property
    def time(self) -> float:
        return float(self._need_data().time)

    @property
    def done(self) -> bool:
        return self.steps >= self.cfg.max_steps

    def _need(self) -> World:
        if self.world is None:
            raise SimError("call env.reset() first")
        return self.world

    def _need_data(self):
        self._need()
        return self.data

    def _need_ep(self) -> EpisodeSpec:
        if self.episode is None:
            raise SimError("call env.reset() first")
        return self.episode

    # ------------------------------------------------------------------------------------------ driver level
    def set_servo_profile(self, profile_time: float, accel_time: float) -> None:
        """Time-based profile of every later goal (what a driver writes to the Dynamixel Profile_Velocity /
        Profile_Acceleration registers; kept across resets). A driver streaming goals at rate f wants a
        profile of about 2/f: with the Bridge profile (0.25 s) each 20 ms goal only starts a 0.25 s ramp and the
        arm trails its commands by about a second."""
        T, ta = float(profile_time), float(accel_time)
        if not (math.isfinite(T) and math.isfinite(ta) and T > 0 and 0 <= ta <= T / 2):
            raise SimError(f"servo profile needs profile_time > 0 and 0 <= accel_time <= profile_time / 2, "
                           f"got {profile_time!r}, {accel_time!r}")
        self._profile = (T, ta)
        if getattr(self, "_servo", None) is not None:
            self._servo.T, self._servo.ta = T, ta

    @property
    def servo_profile(self) -> tuple[float, float]:
        return self._profile

    def set_joint_targets(self, q6, gripper: float) -> None:
        """New goal for the six arm servos [rad] (clipped to the URDF limits) and the gripper (0 closed .. 1 open)."""
        w = self._need()
        q = np.asarray(q6, dtype=float)
        if q.shape != (6,) or not np.all(np.isfinite(q)):
            raise SimError(f"joint targets must be 6 finite numbers [rad], got {np.asarray(q6).tolist()!r}")
        g = float(gripper)
        if not math.isfinite(g):
            raise SimError(f"gripper command must be a finite number in [0, 1], got {gripper!r}")
        q = np.clip(q, w.joint_range[:, 0], w.joint_range[:, 1])
        self._servo.set_goal(q, self.data.time)
        self._g_cmd = float(np.clip(g, 0.0, 1.0))

    def advance(self, dt: float) -> None:
        """Run the physics for dt seconds tracking the current targets (whole physics steps; the remainder is
        carried over to the next call, so many small calls keep sim time equal to the sum of their dt)."""
        dt = float(dt)
        if not math.isfinite(dt) or dt < 0:
            raise SimError(f"advance(dt) needs a finite dt >= 0, got {dt!r}")
        self._need()
        h = float(self.world.model.opt.timestep)
        self._dt_debt += dt
        n = int(math.floor(self._dt_debt / h + 1e-9))
        self._dt_debt -= n * h
        if n:
            self._advance_physics(n * h)

    def _advance_physics(self, dt: float) -> None:
        import mujoco

        w, d, m = self.world, self.data, self.world.model
        h = m.opt.timestep
        n = int(round(dt / h))
        if n <= 0:
            return
        # Set points for the whole interval at once (targets only change between advance() calls):
        # position set point + velocity feed-forward folded into the position command (kv/kp * qdot_d).
        t = d.time + h * np.arange(1, n + 1)
        sv = self._servo
        tau = t - sv.t0
        s = np.asarray(_trapezoid(tau, sv.T, sv.ta), dtype=float)
        sd = _trapezoid_rate(tau, sv.T, sv.ta)
        delta = sv.goal - sv.start
        arm = sv.start[None, :] + s[:, None] * delta[None, :] + (sd[:, None] * delta[None, :]) * self._ff_gain[None, :]
        g_rate = h / max(self.cfg.physics.gripper_time, 1e-6)
        steps = np.arange(1, n + 1) * g_rate
        dg = self._g_cmd - self._g_set
        g = self._g_set + np.sign(dg) * np.minimum(steps, abs(dg))
        fingers = robot_spec.finger_from_gripper(g)
        arm_act, f_act = w.arm_act, w.finger_act
        ctrl = d.ctrl
        for i in range(n):
            ctrl[arm_act] = arm[i]
            ctrl[f_act] = fingers[i]
            mujoco.mj_step(m, d)
        self._g_set = float(g[-1])
        if self.cfg.physics.weld_on_grasp:
            self._update_weld()
        self._frame_cache.clear()

    def joint_state(self) -> tuple[np.ndarray, float]:
        """(q6 [rad], gripper opening in [0, 1]) measured."""
        w = self._need()
        q = self.data.qpos[w.arm_qadr].copy()
        g = float(robot_spec.gripper_from_finger(self.data.qpos[w.finger_qadr]))
        return q, g

    # ------------------------------------------------------------------------------------------ policy level
    def step_joint_targets(self, q6, gripper: float) -> dict:
        """One control period (1 / POLICY_HZ) towards the given joint targets; returns the observation."""
        self.set_joint_targets(q6, gripper)
        self._advance_physics(1.0 / robot_spec.POLICY_HZ)
        self.steps += 1
        return self.observation()

    def step(self, action) -> dict:
        """Bridge 7-D action at 5 Hz: clipped to the action limits, the target EE position clipped to the Bridge
        workspace box, IK seeded at the measured joints (on IK failure the arm holds). Returns the observation."""
        a = np.asarray(action, dtype=float)
        if a.shape != (robot_spec.ACTION_DIM,) or not np.all(np.isfinite(a)):
            raise SimError(f"action must be {robot_spec.ACTION_DIM} finite numbers "
                           f"{list(robot_spec.ACTION_NAMES)}, got {np.asarray(action).tolist()!r}")
        q, _ = self.joint_state()
        q_t, g, res = _kinematics().action_to_joint_targets(q, a, clip=True, workspace=robot_spec.WorkspaceBox())
        self.last_ik = res
        return self.step_joint_targets(q_t, g)

    # ---------------------------------------------------------------------------------------------- sensing
    def ee_matrix(self) -> np.ndarray:
        w = self._need()
        T = np.eye(4)
        T[:3, :3] = self.data.site_xmat[w.ee_site].reshape(3, 3)
        T[:3, 3] = self.data.site_xpos[w.ee_site]
        return T

    def ee_pose(self) -> np.ndarray:
        """[x, y, z, roll, pitch, yaw] ('sxyz') of ee_gripper_link in base_link."""
        from etc_ros.core.transforms3d import matrix_to_euler

        T = self.ee_matrix()
        return np.concatenate([T[:3, 3], matrix_to_euler(T[:3, :3])])

    def state(self) -> np.ndarray:
        q, g = self.joint_state()
        return np.concatenate([q, [g]])

    def _renderer_for(self):
        if not self._render_enabled:
            raise SimError("this SimEnv was created with render=False")
        if self._renderer is None:
            ensure_headless_gl()
            from .render import OffscreenRenderer

            self._renderer = OffscreenRenderer(self.cfg.render.width, self.cfg.render.height)
        return self._renderer

    def _frame(self, camera: str, depth: bool) -> tuple[np.ndarray, np.ndarray | None]:
        w = self._need()
        if camera not in w.cameras:
            raise SimError(f"unknown camera {camera!r}; this world has {list(w.cameras)}")
        t = float(self.data.time)
        hit = self._frame_cache.get(camera)
        if hit is not None and hit[0] == t and (hit[2] is not None or not depth):
            return hit[1], hit[2]
        rgb, dep = self._renderer_for().render(w.model, self.data, w.cameras[camera], depth=depth)
        self._frame_cache[camera] = (t, rgb, dep)
        return rgb, dep

    def render(self, camera: str = PRIMARY) -> np.ndarray:
        """(H, W, 3) uint8 image of `camera` at the current state."""
        return self._frame(camera, depth=False)[0].copy()

    def render_depth(self, camera: str = PRIMARY) -> np.ndarray:
        """(H, W) float32 depth [m] along the optical axis."""
        return self._frame(camera, depth=True)[1].copy()

    def render_segmentation(self, camera: str = PRIMARY) -> np.ndarray:
        """(H, W) int32 map of object indices (position in `object_names()`), -1 for the robot, table and
        background."""
        w = self._need()
        if camera not in w.cameras:
            raise SimError(f"unknown camera {camera!r}; this world has {list(w.cameras)}")
        geom_ids = self._renderer_for().render_segmentation(w.model, self.data, w.cameras[camera])
        lut = np.full(w.model.ngeom + 1, -1, dtype=np.int32)
        for k, name in enumerate(self.object_names()):
            lut[w.object_geoms[name]] = k
        return lut[np.where(geom_ids >= 0, geom_ids, w.model.ngeom)]

    def camera_model(self, name: str = PRIMARY) -> CameraModel:
        """Pinhole model (intrinsics at render resolution, T_base_cam now) of a rendered camera."""
        w = self._need()
        if name not in w.cameras:
            raise SimError(f"unknown camera {name!r}; this world has {list(w.cameras)}")
        K = w.camera_intrinsics[name]
        if name == PRIMARY:
            T = np.array(self.episode.scene.primary_T, dtype=float)
        else:
            Tg = np.eye(4)
            Tg[:3, :3] = self.data.xmat[w.gripper_body].reshape(3, 3)
            Tg[:3, 3] = self.data.xpos[w.gripper_body]
            T = Tg @ wrist_camera_T()
        return CameraModel(intrinsics=K, T_base_cam=T, name=name)

    def observation(self, depth: bool | None = None) -> dict:
        """{"images": {cam: (H,W,3) uint8}, "state": (7,), "ee_pose": (6,), "timestamp": float}. With depth
        (default: the env's `with_depth`) the depth is rendered in the same pass (used by annotations())."""
        depth = self.with_depth if depth is None else bool(depth)
        images = {}
        if self._render_enabled:
            for cam in self.cfg.render.cameras:
                images[cam] = self._frame(cam, depth=depth)[0]
        return {"images": images, "state": self.state(), "ee_pose": self.ee_pose(), "timestamp": self.time}

    # ----------------------------------------------------------------------------------------- ground truth
    def spec(self, name: str):
        try:
            return self._need_ep().scene.object(name).spec
        except KeyError:
            raise SimError(f"no object named {name!r}; objects: {self.object_names()}") from None

    def object_names(self) -> list[str]:
        return [po.name for po in self._need_ep().scene.objects]

    def pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), quaternion w,x,y,z) of an object's frame (bounding-box centre) in base_link."""
        w = self._need()
        if name not in w.object_body:
            raise SimError(f"no object named {name!r}; objects: {self.object_names()}")
        b = w.object_body[name]
        return self.data.xpos[b].copy(), self.data.xquat[b].copy()

    object_pose = pose

    def set_object_pose(self, name: str, pos, quat=(1.0, 0.0, 0.0, 0.0)) -> None:
        """Teleport a (free) object, zero its velocity and recompute the state (for tests / constructed states)."""
        import mujoco

        w = self._need()
        if name not in w.object_body:
            raise SimError(f"no object named {name!r}; objects: {self.object_names()}")
        adr = w.object_qadr[name]
        if adr < 0:
            raise SimError(f"{name!r} is static and cannot be moved")
        q = np.asarray(quat, dtype=float)
        self.data.qpos[adr:adr + 3] = np.asarray(pos, dtype=float)
        self.data.qpos[adr + 3:adr + 7] = q / np.linalg.norm(q)
        b = w.object_body[name]
        dadr = w.model.jnt_dofadr[w.model.body_jntadr[b]]
        self.data.qvel[dadr:dadr + 6] = 0.0
        mujoco.mj_forward(w.model, self.data)
        self._frame_cache.clear()

    def rest_z(self, name: str) -> float:
        return self._rest_z[name]

    def _contact_pairs(self):
        d = self.data
        n = d.ncon
        if n == 0:
            return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
        g1 = np.array([d.contact[i].geom1 for i in range(n)])
        g2 = np.array([d.contact[i].geom2 for i in range(n)])
        return g1, g2

    def _touching(self, geoms_a: np.ndarray, geoms_b: np.ndarray) -> bool:
        g1, g2 = self._contact_pairs()
        if g1.size == 0:
            return False
        a1, a2 = np.isin(g1, geoms_a), np.isin(g2, geoms_a)
        b1, b2 = np.isin(g1, geoms_b), np.isin(g2, geoms_b)
        return bool(np.any((a1 & b2) | (a2 & b1)))

    def finger_contacts(self, name: str) -> tuple[bool, bool]:
        w = self._need()
        og = w.object_geoms[name]
        return self._touching(og, w.finger_geoms[0]), self._touching(og, w.finger_geoms[1])

    def grasped(self, name: str) -> bool:
        """Both fingers touch the object (or it is welded to the gripper in weld-on-grasp mode)."""
        if self._welded == name:
            return True
        left, right = self.finger_contacts(name)
        return left and right

    def touching_robot(self, name: str) -> bool:
        w = self._need()
        return self._welded == name or self._touching(w.object_geoms[name], w.robot_geoms)

    def is_success(self) -> bool:
        return check_success(self._need_ep().task, self)

    def _update_weld(self) -> None:
        import mujoco

        w, d, m = self.world, self.data, self.world.model
        if self._welded is not None and self._g_cmd > 0.5:
            d.eq_active[w.weld_eq[self._welded]] = 0
            self._welded = None
        if self._welded is None and self._g_cmd < 0.5:
            for name, eq in w.weld_eq.items():
                left, right = self.finger_contacts(name)
                if left and right:
                    # relative pose of the object in the EE body at this instant
                    b_obj, b_ee = w.object_body[name], m.site_bodyid[w.ee_site]
                    R_ee = d.xmat[b_ee].reshape(3, 3)
                    p_rel = R_ee.T @ (d.xpos[b_obj] - d.xpos[b_ee])
                    q_rel = np.zeros(4)
                    q_ee_inv = np.zeros(4)
                    mujoco.mju_negQuat(q_ee_inv, d.xquat[b_ee])
                    mujoco.mju_mulQuat(q_rel, q_ee_inv, d.xquat[b_obj])
                    p_ee, q_ee = _inv_rel(p_rel, q_rel)  # EE pose in the object frame
                    m.eq_data[eq, 0:3] = 0.0
                    m.eq_data[eq, 3:6] = p_ee
                    m.eq_data[eq, 6:10] = q_ee
                    m.eq_data[eq, 10] = 1.0
                    d.eq_active[eq] = 1
                    self._welded = name
                    break

    def annotations(self) -> list[dict]:
        """Ground truth of the current frame: one dict per object (see docs/sim.md for the format).
        Visibility compares the projected surface points with the rendered depth of the same frame."""
        ep = self._need_ep()
        w = self.world
        cams = list(self.cfg.render.cameras) if self._render_enabled else []
        models = {c: self.camera_model(c) for c in cams}
        depths = {c: self._frame(c, depth=True)[1] for c in cams}
        out = []
        for po in ep.scene.objects:
            pos, quat = self.pose(po.name)
            R = self.data.xmat[w.object_body[po.name]].reshape(3, 3)
            d = po.spec.to_dict()
            d["pose"] = [float(v) for v in np.concatenate([pos, quat])]
            d["role"] = po.role
            cam_info = {}
            pts = self._surface[po.name] @ R.T + pos
            anchor = R @ po.spec.place_offset + pos
            for c in cams:
                cm = models[c]
                uv_all, z_all = cm.project(np.vstack([anchor[None], pts]))
                uv_a, uv, z = uv_all[0], uv_all[1:], z_all[1:]
                front = z > 1e-6
                W, H = cm.intrinsics.width, cm.intrinsics.height
                info = {"point": [float(uv_a[0]), float(uv_a[1])] if np.all(np.isfinite(uv_a)) else None,
                        "box": None, "visible": False}
                if np.any(front):
                    u, v = uv[front, 0], uv[front, 1]
                    x1, y1 = max(float(u.min()), -0.5), max(float(v.min()), -0.5)
                    x2, y2 = min(float(u.max()), W - 0.5), min(float(v.max()), H - 0.5)
                    if x1 <= x2 and y1 <= y2:
                        info["box"] = [x1, y1, x2, y2]
                    inside = cm.in_image(uv) & front
                    if np.any(inside):
                        iu = np.clip(np.round(uv[inside, 0]).astype(int), 0, W - 1)
                        iv = np.clip(np.round(uv[inside, 1]).astype(int), 0, H - 1)
                        seen = depths[c][iv, iu] >= z[inside] - 0.006
                        info["visible"] = bool(np.mean(seen) >= 0.1 if seen.size >= 10 else np.any(seen))
                cam_info[c] = info
            d["cameras"] = cam_info
            out.append(d)
        return out

    # -------------------------------------------------------------------------------------------------- misc
    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _inv_rel(p_rel: np.ndarray, q_rel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weld data wants the pose of body2 (EE) in body1 (object): invert the object-in-EE pose."""
    import mujoco

    q_inv = np.zeros(4)
    mujoco.mju_negQuat(q_inv, q_rel)
    p = np.zeros(3)
    mujoco.mju_rotVecQuat(p, -p_rel, q_inv)
    return p, q_inv
