"""Scripted teleop input (tests, demos): `load_script(path_or_list)` -> `ScriptPlayer` ->
`apply_event(mapper, event, t)` drives a TeleopMapper as the devices would."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from etc_ros.teleop.mapping import COMMANDS, GRIPPER_COMMANDS, SPEED_COMMANDS, TeleopError, TeleopMapper


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
