"""Teleoperation input -> Bridge-style EE deltas (pure: no ROS, no terminal; numpy only).

Input devices all feed one `TeleopMapper`:
- keyboard: `key_press(key, t)` (a terminal only reports presses; the key's motion lasts `keyboard.hold_s`,
  refreshed by the terminal's auto-repeat while the key is held) or `key_down` / `key_up` (scripted input);
- gamepad: `joy(axes, buttons, t)` with the arrays of a sensor_msgs/Joy message (axis values in [-1, 1]);
- SpaceMouse: `spacemouse(axes6, buttons, t)` (values in [-1, 1]; `SpaceMouseSource` in devices.py reads one
  through the optional `pyspacemouse` package);
- scripts: `load_script(path_or_list)` -> `ScriptPlayer` -> `apply_event(mapper, event, t)` (script.py; tests,
  demos).

`mapper.action(t)` is the 7-D Bridge action for the next policy step (spec.py conventions: delta xyz [m] and
delta roll/pitch/yaw [rad] in base_link, absolute gripper opening, 1 = open), clipped to the Bridge clip.
Per step: velocity fraction in [-1, 1] x `linear_speed` [m/s] (or `angular_speed` [rad/s]) x speed level / rate.
Gamepad and SpaceMouse axes go stale after `<device>.timeout_s` without a new message (a disconnected device
stops the arm). Recording / safety shortcuts come back from the input calls as command names (COMMANDS); the
gripper and speed commands are applied here as well.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import UserError

AXES: tuple[str, ...] = ("x", "y", "z", "roll", "pitch", "yaw")
MOTIONS: tuple[str, ...] = tuple(s + a for a in AXES for s in ("+", "-"))
# commands an input can trigger (the session acts on the recording / safety ones)
GRIPPER_COMMANDS = ("gripper_toggle", "gripper_open", "gripper_close")
SPEED_COMMANDS = ("speed_up", "speed_down")
RECORDER_COMMANDS = ("start", "stop", "stop_failed", "discard", "capture")
SESSION_COMMANDS = ("relabel", "estop", "reset_estop", "help", "quit")
COMMANDS: tuple[str, ...] = GRIPPER_COMMANDS + SPEED_COMMANDS + RECORDER_COMMANDS + SESSION_COMMANDS
NAMED_KEYS = ("space", "enter", "tab", "backspace", "esc", "up", "down", "left", "right")


class TeleopError(UserError):
    """Bad teleop configuration, script or device."""


# --------------------------------------------------------------------------------------------- config
def _default_keys() -> dict[str, str]:
    return {
        "w": "+x", "s": "-x", "a": "+y", "d": "-y", "r": "+z", "f": "-z",
        "u": "+roll", "o": "-roll", "i": "+pitch", "k": "-pitch", "j": "+yaw", "l": "-yaw",
        "space": "gripper_toggle", "[": "gripper_open", "]": "gripper_close",
        "+": "speed_up", "=": "speed_up", "-": "speed_down",
        "n": "start", "m": "stop", "x": "stop_failed", "z": "discard", "t": "relabel", "c": "capture",
        "p": "estop", "P": "reset_estop", "h": "help", "?": "help", "q": "quit",
    }


def _default_joy_axes() -> dict[str, list[float]]:
    # Linux xpad / joy_node layout: 0 LX (left +), 1 LY (up +), 3 RX (left +), 4 RY (up +), 6 dpad x, 7 dpad y
    return {"x": [1, 1.0], "y": [0, 1.0], "z": [4, 1.0], "yaw": [3, 1.0], "roll": [6, 1.0], "pitch": [7, 1.0]}


def _default_joy_buttons() -> dict[str, int]:
    # 0 A, 1 B, 2 X, 3 Y, 4 LB, 5 RB, 6 back, 7 start
    return {"gripper_toggle": 0, "estop": 1, "discard": 2, "stop_failed": 3, "speed_down": 4, "speed_up": 5,
            "stop": 6, "start": 7}


@dataclass
class KeyboardConfig:
    # key (one character or NAMED_KEYS) -> motion/command
    bindings: dict[str, str] = field(default_factory=_default_keys)
    hold_s: float = 0.3  # a press moves its axis this long (auto-repeat of a held key refreshes it)


@dataclass
class JoyConfig:
    axes: dict[str, list[float]] = field(default_factory=_default_joy_axes)  # EE axis -> [axis index, scale]
    buttons: dict[str, int] = field(default_factory=_default_joy_buttons)  # command -> button index
    deadzone: float = 0.1
    timeout_s: float = 0.5  # no Joy message for this long -> axes read as 0 (0 = never)


@dataclass
class SpaceMouseConfig:
    scale: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # per EE axis (sign)
    buttons: dict[str, int] = field(default_factory=lambda: {"gripper_toggle": 0, "start": 1})
    deadzone: float = 0.1
    timeout_s: float = 0.5


@dataclass
class TeleopConfig:
    rate_hz: float = robot_spec.POLICY_HZ  # actions per second (the safety executor's policy rate)
    chunk_length: int = 2  # rows per published chunk (the same action repeated; see docs/teleop.md)
    linear_speed: float = 0.05  # m/s at full deflection and speed level 1
    angular_speed: float = 0.5  # rad/s at full deflection and speed level 1
    speed_levels: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    speed_index: int = 1  # starting level
    gripper_start: float = 1.0  # used until the first measured gripper opening arrives
    keyboard: KeyboardConfig = field(default_factory=KeyboardConfig)
    joy: JoyConfig = field(default_factory=JoyConfig)
    spacemouse: SpaceMouseConfig = field(default_factory=SpaceMouseConfig)


def check_teleop_config(cfg: TeleopConfig) -> TeleopConfig:
    """Semantic checks; raises TeleopError naming the key."""
    if not (math.isfinite(cfg.rate_hz) and cfg.rate_hz > 0):
        raise TeleopError(f"teleop.rate_hz must be > 0, got {cfg.rate_hz}")
    if cfg.chunk_length < 1 or cfg.chunk_length > 10:
        raise TeleopError(f"teleop.chunk_length must be in 1..10, got {cfg.chunk_length}")
    for k in ("linear_speed", "angular_speed"):
        v = getattr(cfg, k)
        if not (math.isfinite(v) and v > 0):
            raise TeleopError(f"teleop.{k} must be > 0, got {v}")
    if not cfg.speed_levels or any(not (math.isfinite(s) and s > 0) for s in cfg.speed_levels):
        raise TeleopError(f"teleop.speed_levels must be a non-empty list of numbers > 0, got {cfg.speed_levels}")
    if not 0 <= cfg.speed_index < len(cfg.speed_levels):
        raise TeleopError(f"teleop.speed_index {cfg.speed_index} is not an index of speed_levels "
                          f"(0..{len(cfg.speed_levels) - 1})")
    if not 0.0 <= cfg.gripper_start <= 1.0:
        raise TeleopError(f"teleop.gripper_start must be in [0, 1], got {cfg.gripper_start}")
    for key, what in cfg.keyboard.bindings.items():
        if not isinstance(key, str) or not (len(key) == 1 or key in NAMED_KEYS):
            raise TeleopError(f"teleop.keyboard.bindings: key {key!r} must be one character or one of "
                              f"{list(NAMED_KEYS)}")
        if what not in MOTIONS and what not in COMMANDS:
            raise TeleopError(f"teleop.keyboard.bindings[{key!r}] = {what!r} is neither a motion {list(MOTIONS)} "
                              f"nor a command {list(COMMANDS)}")
    if cfg.keyboard.hold_s <= 0:
        raise TeleopError(f"teleop.keyboard.hold_s must be > 0, got {cfg.keyboard.hold_s}")
    for dev in ("joy", "spacemouse"):
        d = getattr(cfg, dev)
        if not 0.0 <= d.deadzone < 1.0:
            raise TeleopError(f"teleop.{dev}.deadzone must be in [0, 1), got {d.deadzone}")
        if d.timeout_s < 0:
            raise TeleopError(f"teleop.{dev}.timeout_s must be >= 0, got {d.timeout_s}")
        for cmd, idx in d.buttons.items():
            if cmd not in COMMANDS:
                raise TeleopError(f"teleop.{dev}.buttons: {cmd!r} is not a command {list(COMMANDS)}")
            if isinstance(idx, bool) or not isinstance(idx, int) or idx < 0:
                raise TeleopError(f"teleop.{dev}.buttons[{cmd!r}] must be a button index >= 0, got {idx!r}")
    for ax, m in cfg.joy.axes.items():
        if ax not in AXES:
            raise TeleopError(f"teleop.joy.axes: {ax!r} is not an EE axis {list(AXES)}")
        if len(m) != 2 or int(m[0]) != m[0] or m[0] < 0 or not math.isfinite(float(m[1])):
            raise TeleopError(f"teleop.joy.axes[{ax!r}] must be [axis index >= 0, scale], got {m!r}")
    if len(cfg.spacemouse.scale) != 6:
        raise TeleopError(f"teleop.spacemouse.scale needs 6 entries (x y z roll pitch yaw), got "
                          f"{len(cfg.spacemouse.scale)}")
    return cfg


def _deadzone(v: np.ndarray, dz: float) -> np.ndarray:
    """Zero inside the dead zone, rescaled so full deflection stays 1."""
    v = np.clip(np.nan_to_num(np.asarray(v, dtype=float)), -1.0, 1.0)
    if dz <= 0:
        return v
    mag = np.abs(v)
    return np.where(mag <= dz, 0.0, np.sign(v) * (mag - dz) / (1.0 - dz))


# --------------------------------------------------------------------------------------------- mapper
class TeleopMapper:
    """Combines the input devices into one velocity and the gripper target (not thread-safe: callers lock)."""

    def __init__(self, cfg: TeleopConfig | None = None):
        self.cfg = check_teleop_config(cfg or TeleopConfig())
        self.gripper = float(self.cfg.gripper_start)
        self.gripper_known = False  # set once the measured opening seeded the target
        self.speed_index = int(self.cfg.speed_index)
        self._key_until: dict[str, float] = {}  # motion -> time it stops (inf while a key is down)
        self._keys_down: dict[str, str] = {}  # key -> motion (key_down without key_up yet)
        self._joy = np.zeros(6)
        self._joy_t = -math.inf
        self._joy_buttons: list[int] = []
        self._sm = np.zeros(6)
        self._sm_t = -math.inf
        self._sm_buttons: list[int] = []
        self.counts = {"keys": 0, "joy": 0, "spacemouse": 0, "commands": 0, "unbound": 0}

    # ---- state
    @property
    def speed(self) -> float:
        return float(self.cfg.speed_levels[self.speed_index])

    def seed_gripper(self, opening: float) -> None:
        """Start from the measured opening (the arm must not open / close by itself when teleop starts)."""
        if not self.gripper_known and math.isfinite(float(opening)):
            self.gripper = float(np.clip(opening, 0.0, 1.0))
            self.gripper_known = True

    def _command(self, cmd: str) -> list[str]:
        self.counts["commands"] += 1
        if cmd == "gripper_toggle":
            self.gripper = 0.0 if self.gripper >= 0.5 else 1.0
        elif cmd == "gripper_open":
            self.gripper = 1.0
        elif cmd == "gripper_close":
            self.gripper = 0.0
        elif cmd == "speed_up":
            self.speed_index = min(self.speed_index + 1, len(self.cfg.speed_levels) - 1)
        elif cmd == "speed_down":
            self.speed_index = max(self.speed_index - 1, 0)
        if cmd in GRIPPER_COMMANDS:
            self.gripper_known = True
        return [cmd]

    def stop_motion(self) -> None:
        """Forget every held key and device deflection (e.g. after an e-stop or when the session pauses)."""
        self._key_until.clear()
        self._keys_down.clear()
        self._joy[:] = 0.0
        self._sm[:] = 0.0

    # ---- keyboard
    def _binding(self, key: str) -> str | None:
        b = self.cfg.keyboard.bindings.get(key)
        if b is None:
            self.counts["unbound"] += 1
        return b

    def key_press(self, key: str, t: float) -> list[str]:
        """A key press from a terminal: motions last keyboard.hold_s; commands fire once."""
        self.counts["keys"] += 1
        b = self._binding(key)
        if b is None:
            return []
        if b in MOTIONS:
            opposite = ("-" if b[0] == "+" else "+") + b[1:]
            self._key_until.pop(opposite, None)  # reversing direction stops the other one at once
            if not math.isinf(self._key_until.get(b, 0.0)):
                self._key_until[b] = float(t) + self.cfg.keyboard.hold_s
            return []
        return self._command(b)

    def key_down(self, key: str, t: float) -> list[str]:
        """Key pressed and held until key_up (scripted input / keyboards that report releases)."""
        self.counts["keys"] += 1
        b = self._binding(key)
        if b is None:
            return []
        if b in MOTIONS:
            self._keys_down[key] = b
            self._key_until[b] = math.inf
            return []
        return self._command(b)

    def key_up(self, key: str, t: float) -> list[str]:
        b = self._keys_down.pop(key, None)
        if b is not None and b not in self._keys_down.values():
            self._key_until.pop(b, None)
        return []

    # ---- gamepad
    def joy(self, axes: Sequence[float], buttons: Sequence[int], t: float) -> list[str]:
        """One sensor_msgs/Joy message. Returns the commands of buttons that went down."""
        self.counts["joy"] += 1
        ax = np.asarray(list(axes), dtype=float)
        v = np.zeros(6)
        for name, (idx, scale) in self.cfg.joy.axes.items():
            i = int(idx)
            if i < ax.size:
                v[AXES.index(name)] = float(ax[i]) * float(scale)
        self._joy = _deadzone(v, self.cfg.joy.deadzone)
        self._joy_t = float(t)
        out = self._edges(self.cfg.joy.buttons, self._joy_buttons, buttons)
        self._joy_buttons = [int(b) for b in buttons]
        return out

    def _edges(self, mapping: dict[str, int], before: Sequence[int], now: Sequence[int]) -> list[str]:
        out: list[str] = []
        for cmd, idx in mapping.items():
            was = before[idx] if idx < len(before) else 0
            is_ = now[idx] if idx < len(now) else 0
            if is_ and not was:
                out += self._command(cmd)
        return out

    # ---- SpaceMouse
    def spacemouse(self, axes6: Sequence[float], buttons: Sequence[int], t: float) -> list[str]:
        self.counts["spacemouse"] += 1
        a = np.asarray(list(axes6), dtype=float)
        if a.shape != (6,):
            raise TeleopError(f"a SpaceMouse reading needs 6 axes (x y z roll pitch yaw), got {a.shape}")
        self._sm = _deadzone(a * np.asarray(self.cfg.spacemouse.scale, dtype=float), self.cfg.spacemouse.deadzone)
        self._sm_t = float(t)
        out = self._edges(self.cfg.spacemouse.buttons, self._sm_buttons, buttons)
        self._sm_buttons = [int(b) for b in buttons]
        return out

    # ---- output
    def velocity(self, t: float) -> np.ndarray:
        """(6,) commanded velocity fractions in [-1, 1] (x y z roll pitch yaw) at time t."""
        v = np.zeros(6)
        for m, until in list(self._key_until.items()):
            if until < t:
                del self._key_until[m]
                continue
            v[AXES.index(m[1:])] += 1.0 if m[0] == "+" else -1.0
        jt = self.cfg.joy.timeout_s
        if jt == 0 or t - self._joy_t <= jt:
            v += self._joy
        st = self.cfg.spacemouse.timeout_s
        if st == 0 or t - self._sm_t <= st:
            v += self._sm
        return np.clip(v, -1.0, 1.0)

    @property
    def active(self) -> bool:
        return bool(self._key_until) or bool(np.any(self._joy)) or bool(np.any(self._sm))

    def action(self, t: float) -> np.ndarray:
        """(7,) Bridge action for the next step: [dx dy dz droll dpitch dyaw gripper], clipped."""
        v = self.velocity(t)
        k = self.speed / self.cfg.rate_hz
        a = np.concatenate([v[:3] * self.cfg.linear_speed * k, v[3:] * self.cfg.angular_speed * k, [self.gripper]])
        return np.clip(a, robot_spec.ACTION_LOW, robot_spec.ACTION_HIGH)

    def chunk(self, t: float) -> np.ndarray:
        """(chunk_length, 7): the step's action repeated (see docs/teleop.md for why more than one row)."""
        return np.tile(self.action(t), (self.cfg.chunk_length, 1))


def help_text(cfg: TeleopConfig) -> str:
    """One line per binding, motions first (for the terminal and docs)."""
    by: dict[str, list[str]] = {}
    for key, what in cfg.keyboard.bindings.items():
        by.setdefault(what, []).append(key)
    lines = []
    for what in list(MOTIONS) + list(COMMANDS):
        if what in by:
            lines.append(f"  {'/'.join(sorted(by[what])):<8} {what}")
    return "\n".join(lines)
