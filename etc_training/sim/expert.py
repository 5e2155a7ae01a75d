"""Scripted expert: IK waypoints (through the env's Bridge action interface) with noise injection and retries.

The expert reads privileged state (object poses, finger contacts), plans waypoints for the EE (top-down gripper,
yaw aligned with the object) and emits Bridge 7-D actions at 5 Hz: delta xyz towards the waypoint (clipped to
+-5 cm), delta rpy towards the waypoint orientation (clipped to +-0.25 rad), absolute gripper. DART-style noise
injection: `act()` returns the noisy action (Gaussian, config expert.noise_xyz / noise_rot), which is executed, and
`last_clean` holds the clean action the expert intended from the same state, which is what gets recorded as the
label. The observations thus cover the states a slightly-off policy visits, while the labels are the corrections
an expert would make there (not the noise itself).

Phases (subtask labels in parentheses): pick = approach above and descend ("approach the X"), close ("grasp the
X"), lift ("lift the X"); a failed grasp (object not between both fingers after the lift) opens, backs off
("recover from a failed grasp") and retries up to expert.max_retries times. pick_place / stack then carry
("move to the Y"), lower ("place the X in/on the Y"), open ("release the X"), back off ("retreat").
push: close the gripper, go behind the object ("approach the X"), push along the line to the target, re-planning
the line every step ("push the X to the Y"; re-approach when contact geometry is lost), back off ("retreat").
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from etc_ros.core.spec import FINGER_CLOSED, MAX_DELTA_RPY, MAX_DELTA_XYZ
from etc_ros.core.transforms3d import euler_to_matrix, matrix_to_euler

from .config import ExpertConfig
from .language import preposition
from .objects import WALL

FINGER_TIP = 0.0124  # m, finger tips beyond ee_gripper_link along the approach axis (from the URDF finger box)
MIN_GRASP_Z = 0.018  # m, lowest EE height for grasps (finger tips ~6 mm above the table)
PUSH_Z = 0.02  # m, EE height while pushing
FINGER_PAD = 0.008  # m, finger thickness along the closing axis (URDF finger box y)
# Pushing: closed gripper with the closing axis along the push direction, so one finger's flat outer face pushes
# (pushing with both finger ends would wedge round objects into the 30 mm gap between them).
PUSHER_OFFSET = FINGER_CLOSED + FINGER_PAD  # m, EE centre to the pushing face


def top_down(yaw: float) -> np.ndarray:
    """EE rotation with the approach axis (x) pointing down and the closing axis (y) at angle yaw + 90 deg."""
    return euler_to_matrix(0.0, math.pi / 2, 0.0) if yaw == 0 else (
        euler_to_matrix(0.0, 0.0, yaw) @ euler_to_matrix(0.0, math.pi / 2, 0.0))


def ee_yaw(R: np.ndarray) -> float:
    """Yaw of a (roughly) top-down EE: direction of its closing axis y, minus 90 deg."""
    y = R[:, 1]
    return math.atan2(-y[0], y[1])


def _wrap(a: float) -> float:
    return (a + math.pi) % (2 * math.pi) - math.pi


def nearest_equivalent(target: float, current: float, period: float) -> float:
    """target + k*period closest to current."""
    return current + _wrap((target - current) * 2 * math.pi / period) * period / (2 * math.pi)


@dataclass
class Phase:
    label: str
    target: Callable[[], tuple[np.ndarray, float]] | None  # -> (xyz, yaw); None = hold the current pose
    gripper: float
    tol: float = 0.006
    max_steps: int = 12
    min_steps: int = 0
    noise: float = 1.0
    on_end: Callable[[], None] | None = None
    done_when: Callable[[], bool] | None = None  # extra completion test (replaces the distance test)
    steps: int = 0


@dataclass
class ExpertTrace:
    subtasks: list[dict] = field(default_factory=list)
    gripper_events: list[dict] = field(default_factory=list)
    retries: int = 0


class ScriptedExpert:
    def __init__(self, env, seed: int = 0, cfg: ExpertConfig | None = None):
        self.env = env
        self.cfg = cfg or env.cfg.expert
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xE4BE27]))
        self.task = env.task
        self.trace = ExpertTrace()
        self.done = False
        self.last_clean: np.ndarray | None = None  # the intended (noise-free) action of the last act()
        self._phases: list[Phase] = []
        self._last_g = 1.0
        self._label: str | None = None
        self._label_start = 0
        self._frame = 0
        self._yaw_goal: float | None = None
        self._plan_initial()

    # ------------------------------------------------------------------------------------------------- helpers
    def _obj(self, name: str | None = None):
        name = name or self.task.object
        pos, quat = self.env.pose(name)
        return self.env.spec(name), pos, quat

    def _ee(self) -> tuple[np.ndarray, np.ndarray]:
        T = self.env.ee_matrix()
        return T[:3, 3].copy(), T[:3, :3].copy()

    def _grasp_yaw(self, name: str) -> float:
        spec, _, quat = self._obj(name)
        _, R = self._ee()
        cur = ee_yaw(R)
        if spec.kind in ("block", "box"):
            w, x, y, z = quat
            yaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
            return nearest_equivalent(yaw, cur, math.pi / 2)
        return cur  # round objects: keep the current yaw

    def _labels(self):
        t = self.task
        prep = preposition(self.env.spec(t.target).kind if t.target else None)[0]
        return dict(obj=t.object, tgt=t.target, prep=prep)

    # --------------------------------------------------------------------------------------------- planning
    def _plan_initial(self) -> None:
        fam = self.task.family
        if fam == "push":
            self._plan_push()
        else:
            self._plan_pick()
            if fam in ("pick_place", "stack"):
                self._plan_place()
            else:
                self._phases.append(Phase(f"lift the {self.task.object}", None, 0.0, min_steps=2, max_steps=2,
                                          noise=0.3))

    def _plan_pick(self) -> None:
        c = self.cfg
        name = self.task.object
        state = {}

        def above():
            spec, pos, _ = self._obj()
            if "yaw" not in state:
                state["yaw"] = self._grasp_yaw(name)
            z = float(np.clip(pos[2] + spec.half_height + 0.05, 0.08, 0.16))
            return np.array([pos[0], pos[1], z]), state["yaw"]

        def grasp_pose():
            spec, pos, _ = self._obj()
            z = max(float(pos[2]), MIN_GRASP_Z)
            return np.array([pos[0], pos[1], z]), state["yaw"]

        def hold():
            p, R = self._ee()
            return p, state.get("yaw", ee_yaw(R))

        def lift():
            p, R = self._ee()
            return np.array([p[0], p[1], c.lift_height]), state["yaw"]

        def check_grasp():
            spec, pos, _ = self._obj()
            ok = self.env.grasped(name) and pos[2] > self.env.rest_z(name) + 0.02
            if ok or self.trace.retries >= c.max_retries:
                return
            self.trace.retries += 1
            yaw0 = state["yaw"]
            up = lambda: (self._ee()[0] + np.array([0.0, 0.0, 0.05]), yaw0)  # noqa: E731
            recovery = [Phase("recover from a failed grasp", lambda: (self._ee()[0], yaw0), 1.0, min_steps=2,
                              max_steps=2, noise=0.0),
                        Phase("recover from a failed grasp", _frozen(up), 1.0, tol=0.01, max_steps=4)]
            state.pop("yaw", None)
            self._phases[0:0] = recovery + self._pick_phases(above, grasp_pose, hold, lift, check_grasp, name)

        self._phases.extend(self._pick_phases(above, grasp_pose, hold, lift, check_grasp, name))

    def _pick_phases(self, above, grasp_pose, hold, lift, check_grasp, name) -> list[Phase]:
        return [
            Phase(f"approach the {name}", above, 1.0, tol=0.012, max_steps=14),
            Phase(f"approach the {name}", grasp_pose, 1.0, tol=self.cfg.pos_tol, max_steps=8, noise=0.3),
            Phase(f"grasp the {name}", hold, 0.0, min_steps=2, max_steps=2, noise=0.0),
            Phase(f"lift the {name}", lift, 0.0, tol=0.015, max_steps=6, noise=0.5, on_end=check_grasp),
        ]

    def _plan_place(self) -> None:
        c = self.cfg
        t = self.task
        lab = self._labels()
        state = {}

        def yaw_now():
            return ee_yaw(self._ee()[1])

        def carry():
            tspec, tpos, _ = self._obj(t.target)
            if "yaw" not in state:
                state["yaw"] = yaw_now()
            return np.array([tpos[0], tpos[1], c.lift_height]), state["yaw"]

        def lower():
            ospec, opos, _ = self._obj()
            tspec, tpos, _ = self._obj(t.target)
            ee, _ = self._ee()
            held_below = ee[2] - opos[2]  # object centre below the EE (grasp offset)
            if t.family == "stack":
                z_obj = tpos[2] + tspec.half_height + ospec.half_height + 0.006
            else:
                floor_top = tpos[2] - tspec.half_height + WALL
                rim = tpos[2] + tspec.half_height
                z_obj = max(floor_top + ospec.half_height + 0.012,
                            rim + FINGER_TIP + 0.004 - held_below)
            return np.array([tpos[0], tpos[1], z_obj + held_below]), state["yaw"]

        def hold():
            return self._ee()[0], state.get("yaw", yaw_now())

        def retreat():
            p = self._ee()[0]
            return np.array([p[0], p[1], min(p[2] + 0.07, 0.17)]), state.get("yaw", yaw_now())

        self._phases.extend([
            Phase(f"move to the {t.target}", carry, 0.0, tol=0.012, max_steps=14),
            Phase(f"place the {t.object} {lab['prep']} the {t.target}", _frozen(lower), 0.0, tol=c.pos_tol,
                  max_steps=6, noise=0.3),
            Phase(f"release the {t.object}", hold, 1.0, min_steps=2, max_steps=2, noise=0.0),
            Phase("retreat", _frozen(retreat), 1.0, tol=0.015, max_steps=4, noise=0.5),
        ])

    def _plan_push(self) -> None:
        t = self.task
        state = {"approaches": 0}

        def geometry():
            ospec, opos, oquat = self._obj()
            tspec, tpos, _ = self._obj(t.target)
            d = np.asarray(tpos[:2] - opos[:2], dtype=float)
            dist = float(np.linalg.norm(d))
            d = d / max(dist, 1e-9)
            if ospec.kind == "block":
                w, x, y, z = oquat
                oyaw = math.atan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
                a = math.atan2(d[1], d[0]) - oyaw
                r = 0.5 * ospec.size[0] * (abs(math.cos(a)) + abs(math.sin(a)))
            else:
                r = 0.5 * ospec.size[0]
            return opos, tpos, d, dist, r

        def push_yaw(d):
            phi = math.atan2(d[1], d[0]) - math.pi / 2  # closing axis along d
            cur = ee_yaw(self._ee()[1])
            if "yaw" not in state:
                state["yaw"] = nearest_equivalent(phi, cur, math.pi)
            return state["yaw"]

        def behind(z):
            opos, _, d, _, r = geometry()
            p = opos[:2] - d * (r + PUSHER_OFFSET + 0.025)
            return np.array([p[0], p[1], z]), push_yaw(d)

        def push():
            opos, tpos, d, dist, r = geometry()
            contact = opos[:2] - d * (r + PUSHER_OFFSET)
            step = min(0.03, dist + 0.004)
            p = contact + d * step
            return np.array([p[0], p[1], PUSH_Z]), state["yaw"]

        def pushed():
            opos, tpos, d, dist, r = geometry()
            return dist < 0.012

        def lost_contact_check():
            if pushed() or state["approaches"] >= self.cfg.max_retries:
                return
            state["approaches"] += 1
            self.trace.retries += 1
            state.pop("yaw", None)
            self._phases[0:0] = self._push_phases(behind, push, pushed, lost_contact_check, recovery=True)

        self._phases.extend(self._push_phases(behind, push, pushed, lost_contact_check))

    def _push_phases(self, behind, push, pushed, on_push_end, recovery: bool = False) -> list[Phase]:
        t = self.task
        c = self.cfg

        def up():
            p = self._ee()[0]
            return np.array([p[0], p[1], 0.09]), ee_yaw(self._ee()[1])

        def back_off():  # horizontally first, so nothing caught at the pushing finger gets lifted
            _, _, d, _ = self._geom_push()
            p = self._ee()[0]
            q = p[:2] - d * 0.03
            return np.array([q[0], q[1], p[2]]), ee_yaw(self._ee()[1])

        phases = []
        if recovery:
            phases.append(Phase("recover from a lost push", _frozen(up), 0.0, tol=0.012, max_steps=4))
        phases += [
            Phase(f"approach the {t.object}", lambda: behind(0.09), 0.0, tol=0.012, max_steps=14),
            Phase(f"approach the {t.object}", lambda: behind(PUSH_Z), 0.0, tol=c.pos_tol, max_steps=8, noise=0.3),
            Phase(f"push the {t.object} to the {t.target}", push, 0.0, max_steps=16, noise=0.3,
                  done_when=lambda: pushed() or self._push_lost(), on_end=on_push_end),
        ]
        if not recovery:
            phases += [Phase("retreat", _frozen(back_off), 0.0, tol=0.01, max_steps=3, noise=0.3),
                       Phase("retreat", _frozen(up), 0.0, tol=0.015, max_steps=3, noise=0.5)]
        return phases

    def _geom_push(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """(object position, target position, unit push direction (xy), distance to the target)."""
        _, opos, _ = self._obj()
        _, tpos, _ = self._obj(self.task.target)
        d = np.asarray(tpos[:2] - opos[:2], dtype=float)
        n = float(np.linalg.norm(d))
        return opos, tpos, d / max(n, 1e-9), n

    def _push_lost(self) -> bool:
        """The pusher is no longer behind the object on the push line (object slid sideways or rotated away)."""
        opos, _, d, _ = self._geom_push()
        rel = self._ee()[0][:2] - opos[:2]
        lateral = abs(rel[0] * d[1] - rel[1] * d[0])
        return lateral > 0.02 or float(np.dot(rel, d)) > 0.0

    # ------------------------------------------------------------------------------------------------ acting
    def act(self) -> np.ndarray:
        """Action for the current state (call once per env step). After the plan is finished, `done` is True and
        the action holds the pose."""
        while self._phases:
            ph = self._phases[0]
            if ph.steps >= ph.min_steps and self._phase_complete(ph):
                self._phases.pop(0)
                if ph.on_end is not None:
                    ph.on_end()
                continue
            break
        if not self._phases:
            self.done = True
            self._close_label(self._frame)
            a = self._action_to(self._ee()[0], ee_yaw(self._ee()[1]), self._last_g, 0.0)
            self.last_clean = a.copy()
            return a
        ph = self._phases[0]
        if ph.target is None:
            pos, R = self._ee()
            goal, yaw = pos, ee_yaw(R)
        else:
            goal, yaw = ph.target()
        a = self._action_to(goal, yaw, ph.gripper, ph.noise)
        self.last_clean = self._action_to(goal, yaw, ph.gripper, 0.0)
        ph.steps += 1
        self._record(ph.label, a[6])
        self._frame += 1
        return a

    def _phase_complete(self, ph: Phase) -> bool:
        if ph.steps >= ph.max_steps:
            return True
        if ph.done_when is not None:
            return ph.steps > 0 and bool(ph.done_when())
        if ph.target is None:
            return ph.steps >= ph.min_steps
        goal, yaw = ph.target()
        pos, R = self._ee()
        rot_err = abs(_wrap((ee_yaw(R) - yaw) * 2) / 2)  # yaw error modulo pi (symmetric gripper)
        return ph.steps > 0 and float(np.linalg.norm(goal - pos)) <= ph.tol and rot_err < 0.06

    def _action_to(self, goal: np.ndarray, yaw: float, gripper: float, noise: float) -> np.ndarray:
        pos, R = self._ee()
        dp = np.asarray(goal, dtype=float) - pos
        m = float(np.max(np.abs(dp)))
        if m > MAX_DELTA_XYZ:
            dp = dp * (MAX_DELTA_XYZ / m)  # keep the direction (straight-line motion)
        drpy = matrix_to_euler(top_down(yaw) @ R.T)
        drpy = np.clip(drpy, -MAX_DELTA_RPY, MAX_DELTA_RPY)
        if noise > 0:
            dp = dp + self.rng.normal(0.0, self.cfg.noise_xyz * noise, 3)
            drpy = drpy + self.rng.normal(0.0, self.cfg.noise_rot * noise, 3)
        a = np.concatenate([np.clip(dp, -MAX_DELTA_XYZ, MAX_DELTA_XYZ), np.clip(drpy, -MAX_DELTA_RPY, MAX_DELTA_RPY),
                            [float(gripper)]])
        return a

    def _record(self, label: str, g: float) -> None:
        t = self._frame
        if label != self._label:
            self._close_label(t)
            self._label, self._label_start = label, t
        if (g < 0.5) != (self._last_g < 0.5):
            self.trace.gripper_events.append({"frame": t, "type": "close" if g < 0.5 else "open"})
        self._last_g = g

    def _close_label(self, t: int) -> None:
        if self._label is not None and t > self._label_start:
            self.trace.subtasks.append({"name": self._label, "start": self._label_start, "end": t})
        self._label = None
        self._label_start = t

    def finish(self, n_frames: int) -> ExpertTrace:
        """Close the open subtask at the episode's last frame and return the trace."""
        if self._label is not None:
            self.trace.subtasks.append({"name": self._label, "start": self._label_start, "end": n_frames})
            self._label = None
        self.trace.subtasks = [s for s in self.trace.subtasks if s["end"] <= n_frames and s["start"] < s["end"]]
        self.trace.gripper_events = [e for e in self.trace.gripper_events if e["frame"] < n_frames]
        return self.trace


def _frozen(fn):
    """Evaluate a target function once (at the phase's first use) and keep it fixed."""
    cache = {}

    def f():
        if "v" not in cache:
            cache["v"] = fn()
        return cache["v"]

    return f
