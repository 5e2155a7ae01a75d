"""Success detection on constructed world states, instructions and goal texts."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import math

import numpy as np
import pytest

from etc_training.sim import SimEnv
from etc_training.sim.language import TEMPLATES, goal_text, render_instruction
from etc_training.sim.objects import WALL, make_object
from etc_training.sim.tasks import check_success, inside_container, sample_episode


def _env(family: str, seed: int = 0) -> SimEnv:
    env = SimEnv(render=False)
    env.reset(seed=seed, family=family)
    assert env.task.family == family
    return env


def _quat_yaw(yaw: float):
    return (math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pick_place_success_on_constructed_states(seed):
    env = _env("pick_place", seed)
    t = env.task
    o, c = env.spec(t.object), env.spec(t.target)
    cpos, _ = env.pose(t.target)
    floor_top = cpos[2] - c.half_height + WALL
    assert not env.is_success()  # initial scene: object on the table
    inside = np.array([cpos[0], cpos[1], floor_top + o.half_height + 0.001])
    env.set_object_pose(t.object, inside)
    env.advance(0.3)  # let it settle in the container
    assert env.is_success()
    # next to the container, on the table
    beside = np.array([cpos[0] + 0.5 * c.size[0] + 0.5 * o.size[0] + 0.01, cpos[1], o.half_height + 0.001])
    env.set_object_pose(t.object, beside)
    assert not env.is_success()
    # hovering above the container (not placed)
    env.set_object_pose(t.object, np.array([cpos[0], cpos[1], cpos[2] + c.half_height + 0.08]))
    assert not env.is_success()


def test_stack_success_on_constructed_states():
    env = _env("stack", 0)
    t = env.task
    top, bottom = env.spec(t.object), env.spec(t.target)
    bpos, bquat = env.pose(t.target)
    on = np.array([bpos[0], bpos[1], bpos[2] + bottom.half_height + top.half_height + 0.0005])
    env.set_object_pose(t.object, on, bquat)
    env.advance(0.2)
    assert env.is_success()
    env.set_object_pose(t.object, on + np.array([bottom.size[0], 0.0, 0.0]))  # beside, in the air
    assert not env.is_success()
    env.set_object_pose(t.object, on + np.array([0.0, 0.0, 0.05]))  # above, not resting on it
    assert not env.is_success()


def test_push_success_on_constructed_states():
    env = _env("push", 0)
    t = env.task
    o, pad = env.spec(t.object), env.spec(t.target)
    ppos, _ = env.pose(t.target)
    env.set_object_pose(t.object, np.array([ppos[0], ppos[1], o.half_height + 0.0005]))
    env.advance(0.2)
    assert env.is_success()
    env.set_object_pose(t.object, np.array([ppos[0] + pad.size[0], ppos[1], o.half_height + 0.0005]))
    assert not env.is_success()  # next to the mat
    env.set_object_pose(t.object, np.array([ppos[0], ppos[1], 0.1]))
    assert not env.is_success()  # above the mat, not on it


def test_pick_up_needs_lift_and_grasp():
    env = _env("pick_up", 0)
    t = env.task
    pos, _ = env.pose(t.object)
    assert not env.is_success()
    env.set_object_pose(t.object, pos + np.array([0.0, 0.0, 0.1]))
    assert not env.is_success()  # in the air but not held by the fingers


def test_inside_container_geometry():
    rng = np.random.default_rng(0)
    bowl = make_object("bowl", "blue", rng)
    box = make_object("box", "red", rng)
    block = make_object("block", "green", rng)
    q0 = (1.0, 0.0, 0.0, 0.0)
    c = np.array([0.3, 0.0, bowl.half_height])
    z_in = WALL + block.half_height
    assert inside_container(block, [0.3, 0.0, z_in], bowl, c, q0)
    assert not inside_container(block, [0.3 + 0.5 * bowl.size[0], 0.0, z_in], bowl, c, q0)
    assert not inside_container(block, [0.3, 0.0, z_in + 0.1], bowl, c, q0)
    # rotated box: a point inside the square only when using the box's yaw
    cb = np.array([0.3, 0.0, box.half_height])
    half = box.inner_half_extent
    p = [0.3 + 0.95 * half, 0.95 * half, WALL + block.half_height]
    assert inside_container(block, p, box, cb, q0)
    assert not inside_container(block, p, box, cb, _quat_yaw(math.pi / 4))


def test_instructions_and_goals():
    assert (render_instruction("pick_place", "pp0", "red block", "blue bowl", "bowl")
            == "put the red block in the blue bowl")
    assert (render_instruction("pick_place", "pp0", "red block", "blue plate", "plate")
            == "put the red block on the blue plate")
    assert goal_text("pick_place", "red block", "blue bowl", "bowl") == "the red block is in the blue bowl"
    for fam, temps in TEMPLATES.items():
        assert len(set(temps.values())) == len(temps) >= 5, fam
    ep = sample_episode(5, "train")
    assert ep.task.object in ep.task.instruction
    if ep.task.target:
        assert ep.task.target in ep.task.instruction


def test_check_success_rejects_unknown_family():
    from etc_training.sim.tasks import TaskError, TaskSpec

    env = _env("pick_up", 0)
    bad = TaskSpec("juggle", env.task.object, "x", "", "", "")
    with pytest.raises(TaskError):
        check_success(bad, env)
