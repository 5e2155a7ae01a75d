"""Teleoperation input -> Bridge-style EE deltas (pure: no ROS, no terminal; numpy only).

Input devices all feed one `TeleopMapper`:
- keyboard: `key_press(key, t)` (a terminal only reports presses; the key's motion lasts `keyboard.hold_s`,
  refreshed by the terminal's auto-repeat while the key is held) or `key_down` / `key_up` (scripted input);
- gamepad: `joy(axes, buttons, t)` with the arrays of a sensor_msgs/Joy message (axis values in [-1, 1]);
- SpaceMouse: `spacemouse(axes6, buttons, t)` (values in [-1, 1]; `SpaceMouseSource` reads one through the
  optional `pyspacemouse` package);
- scripts: `load_script(path_or_list)` -> `ScriptPlayer` -> `apply_event(mapper, event, t)` (tests, demos).

`mapper.action(t)` is the 7-D Bridge action for the next policy step (spec.py conventions: delta xyz [m] and
delta roll/pitch/yaw [rad] in base_link, absolute gripper opening, 1 = open), clipped to the Bridge clip.
Per step: velocity fraction in [-1, 1] x `linear_speed` [m/s] (or `angular_speed` [rad/s]) x speed level / rate.
Gamepad and SpaceMouse axes go stale after `<device>.timeout_s` without a new message (a disconnected device
stops the arm). Recording / safety shortcuts come back from the input calls as command names (COMMANDS); the
gripper and speed commands are applied here as well.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from etc_ros.core import spec
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
    bindings: dict[str, str] = field(default_factory=_default_keys)  # key (one character or NAMED_KEYS) -> motion/command
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
    rate_hz: float = spec.POLICY_HZ  # actions per second (the safety executor's policy rate)
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
        return np.clip(a, spec.ACTION_LOW, spec.ACTION_HIGH)

    def chunk(self, t: float) -> np.ndarray:
        """(chunk_length, 7): the step's action repeated (see docs/teleop.md for why more than one row)."""
        return np.tile(self.action(t), (self.cfg.chunk_length, 1))


# --------------------------------------------------------------------------------------------- terminal keys
_ESCAPES = {"\x1b[A": "up", "\x1b[B": "down", "\x1b[C": "right", "\x1b[D": "left",
            "\x1bOA": "up", "\x1bOB": "down", "\x1bOC": "right", "\x1bOD": "left"}
_SINGLE = {" ": "space", "\r": "enter", "\n": "enter", "\t": "tab", "\x7f": "backspace", "\x08": "backspace"}


def parse_keys(text: str) -> list[str]:
    """Characters read from a raw-mode terminal -> key names (arrow escape sequences, 'space', 'enter'...).
    Ctrl-C (\\x03) becomes 'quit' so raw mode never swallows it."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "\x1b":
            seq = text[i:i + 3]
            if seq in _ESCAPES:
                out.append(_ESCAPES[seq])
                i += 3
                continue
            out.append("esc")
            i += 1
            continue
        ch = text[i]
        if ch in ("\x03", "\x04"):
            out.append("ctrl-c")
        else:
            out.append(_SINGLE.get(ch, ch))
        i += 1
    return out


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


# --------------------------------------------------------------------------------------------- scripts
@dataclass
class ScriptEvent:
    """One scripted input at time t (s from the script start). kind: press | down | up | joy | spacemouse |
    command. For key kinds `key`; joy / spacemouse: `axes`, `buttons`; command: `command` (+ `text` for
    relabel)."""

    t: float
    kind: str
    key: str = ""
    axes: tuple[float, ...] = ()
    buttons: tuple[int, ...] = ()
    command: str = ""
    text: str = ""


def _event_from_dict(d: Any, i: int) -> list[ScriptEvent]:
    where = f"script event {i}"
    if not isinstance(d, dict):
        raise TeleopError(f"{where}: expected a mapping, got {d!r}")
    try:
        t = float(d["t"])
    except (KeyError, TypeError, ValueError):
        raise TeleopError(f"{where}: needs a time 't' in seconds, got {d!r}") from None
    if not math.isfinite(t) or t < 0:
        raise TeleopError(f"{where}: 't' must be a finite time >= 0, got {d.get('t')!r}")
    kinds = [k for k in ("key", "down", "up", "joy", "spacemouse", "command") if k in d]
    if len(kinds) != 1:
        raise TeleopError(f"{where}: needs exactly one of key / down / up / joy / spacemouse / command, got {d!r}")
    kind = kinds[0]
    if kind in ("key", "down", "up"):
        key = d[kind]
        if not isinstance(key, str) or not key:
            raise TeleopError(f"{where}: key must be a non-empty string, got {key!r}")
        if kind == "key" and "hold" in d:
            try:
                hold = float(d["hold"])
            except (TypeError, ValueError):
                raise TeleopError(f"{where}: 'hold' must be seconds, got {d['hold']!r}") from None
            if not (math.isfinite(hold) and hold > 0):
                raise TeleopError(f"{where}: 'hold' must be > 0 seconds, got {hold}")
            return [ScriptEvent(t, "down", key=key), ScriptEvent(t + hold, "up", key=key)]
        return [ScriptEvent(t, "press" if kind == "key" else kind, key=key)]
    if kind in ("joy", "spacemouse"):
        body = d[kind]
        if not isinstance(body, dict):
            raise TeleopError(f"{where}: {kind} must be a mapping with 'axes' and 'buttons', got {body!r}")
        try:
            axes = tuple(float(x) for x in body.get("axes", ()))
            buttons = tuple(int(b) for b in body.get("buttons", ()))
        except (TypeError, ValueError):
            raise TeleopError(f"{where}: {kind} axes must be numbers and buttons integers, got {body!r}") from None
        if kind == "spacemouse" and len(axes) != 6:
            raise TeleopError(f"{where}: spacemouse needs 6 axes, got {len(axes)}")
        return [ScriptEvent(t, kind, axes=axes, buttons=buttons)]
    cmd = d["command"]
    if cmd not in COMMANDS:
        raise TeleopError(f"{where}: unknown command {cmd!r}; known: {list(COMMANDS)}")
    text = d.get("text", "")
    if cmd == "relabel" and (not isinstance(text, str) or not text.strip()):
        raise TeleopError(f"{where}: relabel needs a non-empty 'text'")
    return [ScriptEvent(t, "command", command=cmd, text=str(text or ""))]


def load_script(source: str | Path | Iterable[dict]) -> list[ScriptEvent]:
    """Scripted input from a JSON list, a JSON-lines file, a YAML list (file path) or a list of dicts:
        {"t": 0.5, "command": "relabel", "text": "push the block"}   {"t": 1.0, "command": "start"}
        {"t": 1.2, "key": "w", "hold": 1.0}     (down at 1.2, up at 2.2)      {"t": 2.5, "key": "space"}
        {"t": 3.0, "joy": {"axes": [0, 0.8, 0, 0, 0, 0], "buttons": [0, 0, 0]}}
    Events are sorted by time (stable)."""
    if isinstance(source, (str, Path)):
        p = Path(source)
        if not p.is_file():
            raise TeleopError(f"teleop script {p} not found")
        text = p.read_text()
        items: Any
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            try:
                items = [json.loads(line) for line in text.splitlines() if line.strip() and
                         not line.lstrip().startswith("#")]
            except json.JSONDecodeError:
                import yaml

                try:
                    items = yaml.safe_load(text)
                except yaml.YAMLError as e:
                    raise TeleopError(f"{p}: not JSON, JSON lines or YAML: {e}") from None
        if isinstance(items, dict) and "events" in items:
            items = items["events"]
        if not isinstance(items, list):
            raise TeleopError(f"{p}: a teleop script is a list of events")
    else:
        items = list(source)
    events: list[ScriptEvent] = []
    for i, d in enumerate(items):
        events += [d] if isinstance(d, ScriptEvent) else _event_from_dict(d, i)
    return sorted(events, key=lambda e: e.t)


class ScriptPlayer:
    """Hands out scripted events as their time comes (times relative to `start(t0)`)."""

    def __init__(self, events: Sequence[ScriptEvent]):
        self.events = list(events)
        self._i = 0
        self.t0: float | None = None

    def start(self, t0: float) -> None:
        self.t0 = float(t0)

    def due(self, t: float) -> list[ScriptEvent]:
        if self.t0 is None:
            self.t0 = float(t)
        out = []
        while self._i < len(self.events) and self.events[self._i].t <= t - self.t0 + 1e-9:
            out.append(self.events[self._i])
            self._i += 1
        return out

    @property
    def done(self) -> bool:
        return self._i >= len(self.events)

    @property
    def duration(self) -> float:
        return self.events[-1].t if self.events else 0.0


def apply_event(mapper: TeleopMapper, ev: ScriptEvent, t: float) -> list[tuple[str, str]]:
    """Feed one scripted event to the mapper; returns (command, text) pairs for the session."""
    if ev.kind == "press":
        cmds = mapper.key_press(ev.key, t)
    elif ev.kind == "down":
        cmds = mapper.key_down(ev.key, t)
    elif ev.kind == "up":
        cmds = mapper.key_up(ev.key, t)
    elif ev.kind == "joy":
        cmds = mapper.joy(ev.axes, ev.buttons, t)
    elif ev.kind == "spacemouse":
        cmds = mapper.spacemouse(ev.axes, ev.buttons, t)
    elif ev.kind == "command":
        cmds = mapper._command(ev.command) if ev.command in GRIPPER_COMMANDS + SPEED_COMMANDS else [ev.command]
        return [(c, ev.text) for c in cmds]
    else:  # pragma: no cover - load_script only makes the kinds above
        raise TeleopError(f"unknown script event kind {ev.kind!r}")
    return [(c, "") for c in cmds]


# --------------------------------------------------------------------------------------------- SpaceMouse
class SpaceMouseSource:
    """A 3Dconnexion SpaceMouse through the optional `pyspacemouse` package (HID; needs read access to the
    hidraw device). `read()` -> (axes6 in [-1, 1] as x y z roll pitch yaw, buttons)."""

    def __init__(self, module: Any = None):
        if module is None:
            try:
                import pyspacemouse as module  # noqa: WPS433 - optional dependency
            except ImportError:
                raise TeleopError("SpaceMouse input needs the optional package pyspacemouse "
                                  "(pip install pyspacemouse; it uses hidapi and needs a udev rule giving you "
                                  "access to /dev/hidraw*): not installed") from None
        self._m = module
        try:
            ok = module.open()
        except Exception as e:  # noqa: BLE001 - the library raises various errors for missing devices
            raise TeleopError(f"cannot open a SpaceMouse: {e}") from None
        if not ok:
            raise TeleopError("no SpaceMouse found (is it plugged in, and may this user read /dev/hidraw*?)")

    def read(self) -> tuple[np.ndarray, list[int]]:
        s = self._m.read()
        axes = np.array([getattr(s, k, 0.0) for k in ("x", "y", "z", "roll", "pitch", "yaw")], dtype=float)
        return axes, [int(b) for b in (getattr(s, "buttons", None) or [])]

    def close(self) -> None:
        close = getattr(self._m, "close", None)
        if callable(close):
            try:
                close()
            except Exception:  # noqa: BLE001
                pass


# --------------------------------------------------------------------------------------------- file config
@dataclass
class RobotSection:
    """How `etc-vla teleop run` reaches the arm."""

    bringup: str = "sim"  # sim (MuJoCo world) | fake (no hardware, no MuJoCo) | interbotix | none (attach)
    camera_type: str = "realsense"  # real robot (bringup: interbotix)
    domain_id: int = -1  # -1 = ROS_DOMAIN_ID from the environment
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-node parameter overrides of the graph
    threads: int = 4


def load_teleop_file(path: str | Path | None = None, overrides: Sequence[str] = ()):
    """(TeleopConfig, RecorderConfig, RobotSection) from config/teleop.yaml (default: the package's) plus
    key=value overrides (e.g. teleop.linear_speed=0.03 recorder.root=/data/ep)."""
    import yaml

    from etc_ros.core.config import ConfigError, _merge, apply_overrides, from_dict, to_dict
    from etc_ros.recorder import RecorderConfig, check_recorder_config

    data = {"teleop": to_dict(TeleopConfig()), "recorder": to_dict(RecorderConfig()),
            "robot": to_dict(RobotSection())}
    if path is None:
        from etc_ros.core.paths import config_path

        default = config_path("teleop.yaml")
        path = default if default.is_file() else None
    if path is not None:
        from etc_ros.core.config import read_yaml_mapping

        p = Path(path)
        loaded = read_yaml_mapping(p, TeleopError, what="teleop config",
                                   top_level="a mapping with teleop / recorder / robot")
        unknown = sorted(set(loaded) - {"teleop", "recorder", "robot"})
        if unknown:
            raise ConfigError(f"{p}: unknown section(s) {unknown}; known: ['recorder', 'robot', 'teleop']")
        # mappings that are data, not schema: replace them instead of merging key by key
        for sect, key in (("teleop", "keyboard"), ("teleop", "joy"), ("teleop", "spacemouse")):
            sub = (loaded.get(sect) or {}).get(key) or {}
            for k in ("bindings", "axes", "buttons"):
                if k in sub:
                    data[sect][key][k] = {}
        data = _merge(data, loaded)
    data = apply_overrides(data, overrides)
    tele = check_teleop_config(from_dict(TeleopConfig, data["teleop"] or {}, "teleop."))
    rec = check_recorder_config(from_dict(RecorderConfig, data["recorder"] or {}, "recorder."))
    robot = from_dict(RobotSection, data["robot"] or {}, "robot.")
    if robot.bringup not in ("sim", "fake", "interbotix", "none"):
        raise TeleopError(f"robot.bringup must be sim, fake, interbotix or none, got {robot.bringup!r}")
    return tele, rec, robot
