"""ETC coordinate convention, projection against hand-computed cases, answer parser round trips."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etc_ros.core.camera import CameraIntrinsics, CameraModel, look_at
from etc_ros.core.errors import UserError
from etc_training.etc import coords
from etc_training.etc.coords import EtcParseError, parse_answer

LOC = st.integers(0, 1023)


# ------------------------------------------------------------------------------------------ convention
def test_loc_edges_and_centre():
    # image spans [-0.5, W - 0.5]: the outer pixel edges map to 0 and 1023
    assert coords.to_loc(-0.5, 640) == 0
    assert coords.to_loc(639.5, 640) == 1023
    # the centre of the image ((W - 1) / 2 in centre convention) maps to 511.5 -> rounds half up to 512
    assert coords.to_loc(319.5, 640) == 512
    # hand computed: u = 100 -> (100.5 / 640) * 1023 = 160.64 -> 161
    assert coords.to_loc(100, 640) == 161
    # outside the image is clipped
    assert coords.to_loc(-10, 640) == 0 and coords.to_loc(1e4, 640) == 1023


def test_loc_round_trip_error_bound():
    for W in (160, 224, 640):
        us = np.linspace(-0.5, W - 0.5, 997)
        back = np.array([coords.from_loc(coords.to_loc(u, W), W) for u in us])
        assert np.abs(back - us).max() <= W / 2046 + 1e-9


def test_loc_rejects_bad_input():
    with pytest.raises(UserError):
        coords.to_loc(float("nan"), 640)
    with pytest.raises(UserError):
        coords.to_loc(10, 0)


def test_projection_hand_computed_identity_camera():
    # camera frame == base frame (OpenCV axes): p = (0.1, -0.05, 1.0) -> u = 500*0.1 + 319.5, v = 500*-0.05 + 239.5
    cam = CameraModel(CameraIntrinsics(640, 480, 500.0, 500.0, 319.5, 239.5), np.eye(4))
    uv, z = cam.project(np.array([[0.1, -0.05, 1.0]]))
    assert np.allclose(uv[0], [369.5, 214.5]) and np.isclose(z[0], 1.0)
    # (369.5 + 0.5) / 640 * 1023 = 591.42 -> 591 ; (214.5 + 0.5) / 480 * 1023 = 458.22 -> 458
    assert coords.point_to_loc(uv[0], 640, 480) == [591, 458]


def test_projection_hand_computed_ee_at_zero_pose():
    """EE at the zero pose (0.458325, 0, 0.36065) seen by a camera 1 m straight above it lands on the principal
    point; a point 10 cm along base +x lands fx * 0.1 px to the side (look_at: image x = base -y here)."""
    from etc_training.etc.episode import fk_positions

    ee = fk_positions(np.zeros((1, 6)))[0]
    assert np.allclose(ee, [0.458325, 0.0, 0.36065], atol=1e-6)
    T = look_at(ee + [0, 0, 1.0], ee, up=(1.0, 0.0, 0.0))
    cam = CameraModel(CameraIntrinsics(224, 224, 200.0, 200.0, 111.5, 111.5), T)
    uv, z = cam.project(np.stack([ee, ee + [0.1, 0.0, 0.0]]))
    assert np.allclose(uv[0], [111.5, 111.5]) and np.isclose(z[0], 1.0)
    assert np.isclose(abs(uv[1, 0] - 111.5) + abs(uv[1, 1] - 111.5), 20.0)
    assert coords.point_to_loc(uv[0], 224, 224) == [512, 512]


def test_box_to_loc_orders_corners():
    assert coords.box_to_loc([100, 80, 20, 10], 640, 480) == coords.box_to_loc([20, 10, 100, 80], 640, 480)


# ------------------------------------------------------------------------------------------ parser
@settings(max_examples=60, deadline=None, derandomize=True)
@given(LOC, LOC)
def test_point_round_trip(x, y):
    assert parse_answer("point", coords.fmt_point([x, y])) == [x, y]
    assert parse_answer("affordance_grasp", coords.fmt_point([x, y])) == [x, y]


@settings(max_examples=60, deadline=None, derandomize=True)
@given(LOC, LOC, LOC, LOC)
def test_box_round_trip(a, b, c, d):
    box = [min(a, c), min(b, d), max(a, c), max(b, d)]
    assert parse_answer("box", coords.fmt_box(box)) == box


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.tuples(LOC, LOC, st.integers(0, 1)), min_size=1, max_size=8))
def test_trajectory_round_trip(traj):
    text = coords.fmt_trajectory(traj)
    assert parse_answer("trajectory", text) == [list(w) for w in traj]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(["red cube", "blue bowl", "green ball", "yellow block", "purple plate"]),
                min_size=1, max_size=5, unique=True))
def test_objects_and_plan_round_trip(names):
    assert parse_answer("objects", coords.fmt_list(names)) == names
    steps = [f"reach the {n}" for n in names]
    assert parse_answer("plan", coords.fmt_plan(steps)) == steps


def test_relation_round_trip_all_combinations():
    h = [[], ["left_of"], ["right_of"]]
    d = [[], ["in_front_of"], ["behind"]]
    v = [[], ["above"], ["below"]]
    for a in h:
        for b in d:
            for c in v:
                rels = c + a + b
                if not rels:
                    continue
                got = parse_answer("relation", coords.fmt_relation(rels))
                assert got == sorted(rels, key=coords.RELATIONS.index)
    assert parse_answer("gripper_relation", coords.fmt_relation(["holding"])) == ["holding"]


def test_parser_is_robust_to_formatting():
    assert parse_answer("point", " (512,300) ") == [512, 300]
    assert parse_answer("point", "The point is [512, 300].") == [512, 300]
    assert parse_answer("box", "[1,2,3,4]") == [1, 2, 3, 4]
    assert parse_answer("trajectory", "[[1,2,1],[3, 4, 0]]") == [[1, 2, 1], [3, 4, 0]]
    assert parse_answer("done", "Yes.") is True and parse_answer("done", "no, not yet") is False
    assert parse_answer("plan", "1) reach the cube\n2) grasp the cube") == ["reach the cube", "grasp the cube"]


@pytest.mark.parametrize("subtype,text", [
    ("point", "[512]"), ("point", "[512, 300, 7]"), ("point", "[1024, 3]"), ("point", "[-1, 3]"),
    ("point", "[12.5, 3]"), ("point", "nowhere"), ("box", "[10, 10, 5, 20]"), ("box", "[1, 2, 3]"),
    ("trajectory", "[[1, 2], [3, 4]]"), ("trajectory", "[[1, 2, 2]]"), ("trajectory", "[[1, 2, 1]] 5"),
    ("trajectory", ""), ("relation", "left of and right of"), ("relation", "somewhere"), ("done", "maybe"),
    ("plan", " ; "), ("objects", " , "), ("goal", "  "),
])
def test_malformed_answers(subtype, text):
    assert parse_answer(subtype, text) is None
    with pytest.raises(EtcParseError, match=subtype):
        parse_answer(subtype, text, strict=True)


def test_parse_unknown_subtype_and_non_string():
    with pytest.raises(EtcParseError, match="unknown ETC subtype"):
        parse_answer("nonsense", "[1, 2]")
    assert parse_answer("point", None) is None
