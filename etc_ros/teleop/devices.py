"""Input devices of teleop that need more than a ROS message (pure: no ROS): the raw-mode terminal's key
sequences -> key names (`parse_keys`) and the SpaceMouse (`SpaceMouseSource`, optional `pyspacemouse`)."""
from __future__ import annotations

from typing import Any

import numpy as np

from etc_ros.teleop.mapping import TeleopError

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
