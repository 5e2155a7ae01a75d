"""Teleop input mapping (pure): keyboard / gamepad / SpaceMouse / scripts -> Bridge EE deltas, and its config."""
from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

from etc_ros.core import spec as robot_spec
from etc_ros.core.config import ConfigError
from etc_ros.teleop.config import load_teleop_file
from etc_ros.teleop.devices import SpaceMouseSource, parse_keys
from etc_ros.teleop.mapping import (
    COMMANDS,
    MOTIONS,
    TeleopConfig,
    TeleopError,
    TeleopMapper,
    check_teleop_config,
    help_text,
)
from etc_ros.teleop.script import ScriptPlayer, apply_event, load_script


def _step(cfg: TeleopConfig) -> tuple[float, float]:
    k = cfg.speed_levels[cfg.speed_index] / cfg.rate_hz
    return cfg.linear_speed * k, cfg.angular_speed * k


def test_key_press_moves_for_hold_s_then_stops():
    m = TeleopMapper()
    lin, ang = _step(m.cfg)
    assert m.key_press("w", 10.0) == []
    a = m.action(10.1)
    assert a.shape == (7,) and a[0] == pytest.approx(lin) and np.allclose(a[1:6], 0) and a[6] == 1.0
    assert np.allclose(m.action(10.0 + m.cfg.keyboard.hold_s + 0.01)[:6], 0)  # released (no auto-repeat)
    # auto-repeat refreshes the hold
    presses = np.arange(20.0, 21.0, 0.05)
    for t in presses:
        m.key_press("w", t)
    assert m.action(presses[-1] + m.cfg.keyboard.hold_s - 0.01)[0] == pytest.approx(lin)
    assert m.action(presses[-1] + m.cfg.keyboard.hold_s + 0.01)[0] == 0.0
    # every axis and sign
    for key, idx, sign, step in (("s", 0, -1, lin), ("a", 1, 1, lin), ("d", 1, -1, lin), ("r", 2, 1, lin),
                                 ("f", 2, -1, lin), ("u", 3, 1, ang), ("o", 3, -1, ang), ("i", 4, 1, ang),
                                 ("k", 4, -1, ang), ("j", 5, 1, ang), ("l", 5, -1, ang)):
        mm = TeleopMapper()
        mm.key_press(key, 0.0)
        a = mm.action(0.01)
        assert a[idx] == pytest.approx(sign * step), key
        assert np.count_nonzero(a[:6]) == 1, key


def test_opposite_key_cancels_and_down_up_holds():
    m = TeleopMapper()
    m.key_press("w", 0.0)
    m.key_press("s", 0.05)
    assert m.action(0.1)[0] < 0  # reversed at once, not summed to zero
    m2 = TeleopMapper()
    m2.key_down("r", 0.0)
    assert m2.action(5.0)[2] > 0  # held until key_up, however long
    m2.key_up("r", 5.0)
    assert m2.action(5.01)[2] == 0.0


def test_gripper_and_speed_commands_and_seed():
    m = TeleopMapper()
    m.seed_gripper(0.3)
    assert m.gripper == pytest.approx(0.3)
    m.seed_gripper(0.9)  # only the first measured opening seeds the target
    assert m.gripper == pytest.approx(0.3)
    assert m.key_press("space", 0.0) == ["gripper_toggle"] and m.gripper == 1.0  # 0.3 counts as closed -> open
    assert m.key_press("space", 0.1) == ["gripper_toggle"] and m.gripper == 0.0
    m.key_press("[", 0.2)
    assert m.action(0.3)[6] == 1.0
    m.key_press("]", 0.3)
    assert m.action(0.4)[6] == 0.0
    lvl = m.speed
    m.key_press("+", 0.5)
    assert m.speed > lvl
    for t in range(10):
        m.key_press("+", 1.0 + t)
    assert m.speed == max(m.cfg.speed_levels)  # clamped
    for t in range(10):
        m.key_press("-", 20.0 + t)
    assert m.speed == min(m.cfg.speed_levels)
    # recording / session commands come back for the session
    for key, cmd in (("n", "start"), ("m", "stop"), ("x", "stop_failed"), ("z", "discard"), ("t", "relabel"),
                     ("c", "capture"), ("p", "estop"), ("P", "reset_estop"), ("q", "quit")):
        assert m.key_press(key, 50.0) == [cmd]
    assert m.key_press("%", 50.0) == [] and m.counts["unbound"] == 1


def test_action_is_clipped_to_the_bridge_limits():
    cfg = TeleopConfig(linear_speed=5.0, angular_speed=50.0, speed_levels=[1.0], speed_index=0)
    m = TeleopMapper(cfg)
    for k in "wrijo":
        m.key_down(k, 0.0)
    a = m.action(0.1)
    assert np.all(a <= robot_spec.ACTION_HIGH + 1e-12) and np.all(a >= robot_spec.ACTION_LOW - 1e-12)
    assert a[0] == robot_spec.MAX_DELTA_XYZ and a[4] == robot_spec.MAX_DELTA_RPY
    c = m.chunk(0.1)
    assert c.shape == (cfg.chunk_length, 7) and np.all(c == a)


def test_joy_axes_deadzone_buttons_and_timeout():
    m = TeleopMapper()
    lin, ang = _step(m.cfg)
    axes = [0.0] * 8
    axes[1] = 1.0  # left stick up -> +x
    axes[0] = 0.05  # inside the dead zone
    axes[3] = -0.55  # right stick right -> -yaw, rescaled past the dead zone
    buttons = [0] * 8
    assert m.joy(axes, buttons, 1.0) == []
    a = m.action(1.1)
    assert a[0] == pytest.approx(lin) and a[1] == 0.0
    assert a[5] == pytest.approx(-ang * (0.55 - 0.1) / 0.9)
    buttons[7] = 1  # start
    assert m.joy(axes, buttons, 1.2) == ["start"]
    assert m.joy(axes, buttons, 1.3) == []  # held: no repeat
    buttons[7], buttons[0] = 0, 1
    assert m.joy(axes, buttons, 1.4) == ["gripper_toggle"] and m.gripper == 0.0
    assert m.action(1.4 + m.cfg.joy.timeout_s + 0.05)[0] == 0.0  # controller silent -> the arm stops
    m.joy([0.0] * 2, [], 3.0)  # short message: missing axes read as 0
    assert np.all(m.action(3.0)[:6] == 0)


def test_spacemouse_mapping_and_optional_library(monkeypatch):
    m = TeleopMapper()
    lin, _ = _step(m.cfg)
    assert m.spacemouse([0.0, -1.0, 0.0, 0.0, 0.0, 0.0], [0, 1], 0.0) == ["start"]
    assert m.action(0.1)[1] == pytest.approx(-lin)
    with pytest.raises(TeleopError, match="6 axes"):
        m.spacemouse([0.0] * 5, [], 0.0)
    monkeypatch.setitem(sys.modules, "pyspacemouse", None)  # import fails
    with pytest.raises(TeleopError, match="pip install pyspacemouse"):
        SpaceMouseSource()
    state = types.SimpleNamespace(x=0.5, y=0.0, z=-0.2, roll=0.0, pitch=0.1, yaw=0.0, buttons=[1, 0])
    fake = types.SimpleNamespace(open=lambda: True, read=lambda: state, close=lambda: None)
    axes, buttons = SpaceMouseSource(fake).read()
    assert np.allclose(axes, [0.5, 0, -0.2, 0, 0.1, 0]) and buttons == [1, 0]
    with pytest.raises(TeleopError, match="no SpaceMouse found"):
        SpaceMouseSource(types.SimpleNamespace(open=lambda: False))


def test_parse_keys_terminal_sequences():
    assert parse_keys("w \x1b[A\x1b[Dq\r\x03") == ["w", "space", "up", "left", "q", "enter", "ctrl-c"]
    assert parse_keys("\x1bx") == ["esc", "x"]


def test_scripts_from_list_file_and_jsonl(tmp_path):
    events = [{"t": 2.0, "command": "stop"}, {"t": 0.5, "command": "relabel", "text": "push it"},
              {"t": 1.0, "key": "w", "hold": 0.5}, {"t": 1.2, "joy": {"axes": [0, 1], "buttons": [1]}},
              {"t": 1.3, "spacemouse": {"axes": [0, 0, 1, 0, 0, 0], "buttons": []}}, {"t": 1.4, "key": "space"}]
    ev = load_script(events)
    assert [e.t for e in ev] == sorted(e.t for e in ev)
    assert [(e.kind, e.key) for e in ev if e.key == "w"] == [("down", "w"), ("up", "w")]
    f = tmp_path / "s.json"
    f.write_text(json.dumps(events))
    jl = tmp_path / "s.jsonl"
    jl.write_text("# comment\n" + "\n".join(json.dumps(e) for e in events))
    y = tmp_path / "s.yaml"
    y.write_text("events:\n  - {t: 0.5, command: start}\n  - {t: 1, key: w}\n")
    assert len(load_script(f)) == len(load_script(jl)) == len(ev) and len(load_script(y)) == 2
    # playing it through the mapper
    m = TeleopMapper()
    p = ScriptPlayer(ev)
    p.start(100.0)
    out = []
    for t in np.arange(100.0, 103.0, 0.1):
        for e in p.due(t):
            out += apply_event(m, e, t)
        if abs(t - 101.25) < 0.05:
            assert m.action(t)[0] > 0  # w held, joy +x too (clipped to one full deflection)
    assert p.done and ("relabel", "push it") in out and ("stop", "") in out and ("gripper_toggle", "") in out


@pytest.mark.parametrize("bad,needle", [
    ([{"key": "w"}], "needs a time 't'"),
    ([{"t": -1, "key": "w"}], "finite time >= 0"),
    ([{"t": 0, "key": "w", "command": "start"}], "exactly one of"),
    ([{"t": 0, "command": "fly"}], "unknown command"),
    ([{"t": 0, "command": "relabel"}], "relabel needs a non-empty 'text'"),
    ([{"t": 0, "spacemouse": {"axes": [1, 2]}}], "spacemouse needs 6 axes"),
    ([{"t": 0, "key": "w", "hold": 0}], "'hold' must be > 0"),
    ([{"t": 0, "joy": {"axes": ["a"]}}], "numbers"),
])
def test_bad_script_events_name_the_problem(bad, needle):
    with pytest.raises(TeleopError, match="script event 0") as ei:
        load_script(bad)
    assert needle in str(ei.value)


def test_missing_script_file(tmp_path):
    with pytest.raises(TeleopError, match="not found"):
        load_script(tmp_path / "nope.json")


def test_config_file_defaults_overrides_and_errors(tmp_path):
    tele, rec, robot = load_teleop_file(None)  # the package's config/teleop.yaml
    assert tele.rate_hz == robot_spec.POLICY_HZ and rec.split == "target" and robot.bringup == "sim"
    assert set(tele.keyboard.bindings.values()) <= set(MOTIONS) | set(COMMANDS)
    tele2, rec2, _ = load_teleop_file(None, ["teleop.linear_speed=0.02", "recorder.root=/tmp/x"])
    assert tele2.linear_speed == 0.02 and rec2.root == "/tmp/x"
    f = tmp_path / "t.yaml"
    f.write_text("teleop:\n  keyboard:\n    bindings: {w: '+z'}\n")
    t3, _, _ = load_teleop_file(f)
    assert t3.keyboard.bindings == {"w": "+z"}  # a given binding table replaces the default one
    f.write_text("teleop:\n  keyboard:\n    bindings: {w: fly}\n")
    with pytest.raises(TeleopError, match="neither a motion"):
        load_teleop_file(f)
    f.write_text("telop: {}\n")
    with pytest.raises(ConfigError, match="unknown section"):
        load_teleop_file(f)
    with pytest.raises(TeleopError, match="robot.bringup"):
        load_teleop_file(None, ["robot.bringup=moon"])
    with pytest.raises(TeleopError, match="not found"):
        load_teleop_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize("kw,needle", [
    (dict(rate_hz=0.0), "rate_hz"), (dict(chunk_length=0), "chunk_length"), (dict(linear_speed=-1.0), "linear_speed"),
    (dict(speed_levels=[]), "speed_levels"), (dict(speed_index=7), "speed_index"), (dict(gripper_start=2.0), "gripper"),
])
def test_check_config_names_the_key(kw, needle):
    with pytest.raises(TeleopError, match=needle):
        check_teleop_config(TeleopConfig(**kw))


def test_help_lists_every_binding():
    txt = help_text(TeleopConfig())
    for what in ("+x", "gripper_toggle", "start", "stop_failed", "discard", "relabel", "estop", "quit"):
        assert what in txt
