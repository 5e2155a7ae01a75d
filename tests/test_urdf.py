"""URDF parser: the package's wx250s model against the published facts, and clear errors on malformed files."""
from __future__ import annotations

import math

import numpy as np
import pytest

from etc_ros.core.errors import KinematicsError, UrdfError, UserError
from etc_ros.core.kinematics import WidowXKinematics
from etc_ros.core.paths import urdf_path
from etc_ros.core.spec import JOINT_NAMES
from etc_ros.core.urdf import Joint, Origin, load_urdf, parse_urdf

URDF_TEXT = urdf_path().read_text()


@pytest.fixture(scope="module")
def model():
    return load_urdf()


# numbers from /work/shared/facts/widowx.md
FACT_JOINTS = {
    "waist": ("base_link", "shoulder_link", (0, 0, 0.072), (0, 0, 1), -3.1415827, 3.1415827, 10),
    "shoulder": ("shoulder_link", "upper_arm_link", (0, 0, 0.03865), (0, 1, 0), -1.8849556, 1.9896753, 20),
    "elbow": ("upper_arm_link", "upper_forearm_link", (0.04975, 0, 0.25), (0, 1, 0), -2.1467550, 1.6057029, 15),
    "forearm_roll": ("upper_forearm_link", "lower_forearm_link", (0.175, 0, 0), (1, 0, 0), -3.1415827, 3.1415827, 2),
    "wrist_angle": ("lower_forearm_link", "wrist_link", (0.075, 0, 0), (0, 1, 0), -1.7453293, 2.1467550, 5),
    "wrist_rotate": ("wrist_link", "gripper_link", (0.065, 0, 0), (1, 0, 0), -3.1415827, 3.1415827, 1),
}
FACT_MASSES = {
    "base_link": 0.538736, "shoulder_link": 0.480879, "upper_arm_link": 0.430811, "upper_forearm_link": 0.234589,
    "lower_forearm_link": 0.220991, "wrist_link": 0.084957, "gripper_link": 0.072885, "gripper_prop_link": 0.00434,
    "gripper_bar_link": 0.034199, "left_finger_link": 0.016246, "right_finger_link": 0.016246,
}


def test_arm_joints_match_facts(model):
    for name, (parent, child, xyz, axis, lo, hi, effort) in FACT_JOINTS.items():
        j = model.joints[name]
        assert j.type == "revolute"
        assert (j.parent, j.child) == (parent, child)
        np.testing.assert_allclose(j.origin.xyz, xyz, atol=1e-12)
        np.testing.assert_allclose(j.origin.rpy, (0, 0, 0), atol=1e-12)
        np.testing.assert_allclose(j.axis, axis, atol=1e-12)
        assert j.limit.lower == pytest.approx(lo) and j.limit.upper == pytest.approx(hi)
        assert j.limit.effort == pytest.approx(effort)
        assert j.limit.velocity == pytest.approx(math.pi, abs=1e-6)
        assert j.dynamics.damping == pytest.approx(0.1) and j.dynamics.friction == pytest.approx(0.1)


def test_gripper_and_fixed_joints_match_facts(model):
    assert model.joints["ee_arm"].type == "fixed"
    assert model.joints["ee_arm"].origin.xyz == pytest.approx((0.043, 0, 0))
    assert model.joints["gripper"].type == "continuous"
    assert model.joints["gripper"].origin.xyz == pytest.approx((0.0055, 0, 0))
    assert model.joints["ee_gripper"].origin.xyz == pytest.approx((0.027575, 0, 0))
    left, right = model.joints["left_finger"], model.joints["right_finger"]
    assert left.type == right.type == "prismatic"
    assert (left.limit.lower, left.limit.upper) == pytest.approx((0.015, 0.037))
    assert (right.limit.lower, right.limit.upper) == pytest.approx((-0.037, -0.015))
    assert left.limit.velocity == pytest.approx(1.0) and left.limit.effort == pytest.approx(5.0)
    assert left.mimic is None
    assert right.mimic is not None and right.mimic.joint == "left_finger" and right.mimic.multiplier == -1.0


def test_masses_geometry_and_materials(model):
    for name, m in FACT_MASSES.items():
        assert model.links[name].mass == pytest.approx(m)
    assert model.total_mass == pytest.approx(sum(FACT_MASSES.values()))
    base = model.links["base_link"]
    assert base.visuals[0].geometry.kind == "cylinder"
    assert base.visuals[0].geometry.radius == pytest.approx(0.05)
    assert base.visuals[0].origin.xyz == pytest.approx((0, 0, 0.036))
    assert base.visuals[0].rgba == pytest.approx((0.15, 0.15, 0.15, 1))  # resolved from the top-level material
    assert base.collisions[0].geometry.length == pytest.approx(0.072)
    wrist = model.links["wrist_link"]
    assert wrist.collisions[0].geometry.kind == "box"
    assert wrist.collisions[0].geometry.size == pytest.approx((0.065, 0.036, 0.036))
    inertia = model.links["upper_arm_link"].inertial.inertia_matrix
    assert inertia.shape == (3, 3) and np.allclose(inertia, inertia.T) and np.all(np.linalg.eigvalsh(inertia) > 0)
    assert model.links["ee_gripper_link"].inertial is None and model.links["ee_gripper_link"].mass == 0.0


def test_chain_order_and_tree_queries(model):
    chain = model.chain("base_link", "ee_gripper_link")
    names = [j.name for j in chain]
    assert [n for n in names if model.joints[n].type != "fixed"] == list(JOINT_NAMES)
    assert names == list(JOINT_NAMES) + ["ee_arm", "gripper_bar", "ee_bar", "ee_gripper"]
    for a, b in zip(chain, chain[1:]):
        assert a.child == b.parent
    assert model.chain("wrist_link", "wrist_link") == []
    assert [j.name for j in model.chain("wrist_link", "gripper_link")] == ["wrist_rotate"]
    assert model.root == "base_link"
    assert model.parent_joint("base_link") is None
    assert {j.name for j in model.child_joints("ee_arm_link")} == {"gripper", "gripper_bar"}
    with pytest.raises(UrdfError, match="not below"):
        model.chain("wrist_link", "shoulder_link")
    with pytest.raises(UrdfError, match="no link named 'hand'"):
        model.chain("base_link", "hand")


def test_joint_transforms():
    rev = Joint("j", "revolute", "a", "b", Origin((1.0, 0, 0), (0, 0, 0)), (0.0, 0.0, 1.0))
    T = rev.transform(math.pi / 2)
    np.testing.assert_allclose(T[:3, 3], [1, 0, 0], atol=1e-12)
    np.testing.assert_allclose(T[:3, :3] @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    pri = Joint("p", "prismatic", "a", "b", Origin((0, 0, 0), (0, 0, math.pi / 2)), (1.0, 0.0, 0.0))
    np.testing.assert_allclose(pri.transform(0.2)[:3, 3], [0, 0.2, 0], atol=1e-12)  # axis in the rotated frame
    # origin rpy follows the URDF convention R = Rz(y) Ry(p) Rx(r)
    o = Origin((0, 0, 0), (0.1, 0.2, 0.3))
    Rx = np.array([[1, 0, 0], [0, math.cos(0.1), -math.sin(0.1)], [0, math.sin(0.1), math.cos(0.1)]])
    Ry = np.array([[math.cos(0.2), 0, math.sin(0.2)], [0, 1, 0], [-math.sin(0.2), 0, math.cos(0.2)]])
    Rz = np.array([[math.cos(0.3), -math.sin(0.3), 0], [math.sin(0.3), math.cos(0.3), 0], [0, 0, 1]])
    np.testing.assert_allclose(o.matrix[:3, :3], Rz @ Ry @ Rx, atol=1e-12)


def test_load_from_path_and_string_agree(tmp_path):
    p = tmp_path / "robot.urdf"
    p.write_text(URDF_TEXT)
    a, b = load_urdf(p), parse_urdf(URDF_TEXT)
    assert a.joints == b.joints and a.links == b.links
    assert a.source == str(p)


# (description, edit of the real file, expected words in the message)
MALFORMED = [
    ("not xml", lambda s: s.replace("</robot>", ""), "not well-formed XML"),
    ("wrong root", lambda s: s.replace("<robot name", "<robo name").replace("</robot>", "</robo>"), "expected <robot>"),
    ("bad number", lambda s: s.replace('<origin xyz="0.04975 0 0.25"', '<origin xyz="0.04975 zero 0.25"'),
     "joint 'elbow' <origin>: attribute xyz='0.04975 zero 0.25' is not a list of numbers"),
    ("short vector", lambda s: s.replace('<origin xyz="0.175 0 0"', '<origin xyz="0.175 0"'),
     "joint 'forearm_roll' <origin>: attribute xyz='0.175 0' needs 3 numbers"),
    ("unknown parent", lambda s: s.replace('<parent link="wrist_link"/>', '<parent link="wrst_link"/>'),
     "joint 'wrist_rotate' <parent> refers to unknown link 'wrst_link'"),
    ("missing child", lambda s: s.replace('<child link="wrist_link"/>', ''), "joint 'wrist_angle': missing <child"),
    ("revolute without limit", lambda s: s.replace(
        '<limit lower="-1.7453293" upper="2.1467550" effort="5" velocity="3.14159265"/>', ''),
     "joint 'wrist_angle': a revolute joint needs a <limit>"),
    ("limits swapped", lambda s: s.replace('lower="-2.1467550" upper="1.6057029"',
                                           'lower="1.6057029" upper="-2.1467550"'),
     "joint 'elbow' <limit>: lower"),
    ("bad type", lambda s: s.replace('<joint name="elbow" type="revolute">', '<joint name="elbow" type="hinge">'),
     "joint 'elbow': type 'hinge'"),
    ("duplicate link", lambda s: s.replace('<link name="ee_gripper_link">', '<link name="wrist_link">'),
     "duplicate link name 'wrist_link'"),
    ("zero axis", lambda s: s.replace('<axis xyz="0 0 1"/>', '<axis xyz="0 0 0"/>'),
     "joint 'waist' <axis>: axis must be non-zero"),
    ("negative mass", lambda s: s.replace('<mass value="0.084957"/>', '<mass value="-1"/>'),
     "link 'wrist_link' <inertial><mass>: mass must be >= 0"),
    ("bad box", lambda s: s.replace('<box size="0.065 0.036 0.036"/>', '<box size="0.065 -0.036 0.036"/>', 1),
     "link 'wrist_link' <visual> #0 <geometry><box>: box size must be positive"),
    ("unknown shape", lambda s: s.replace('<box size="0.065 0.036 0.036"/>', '<cone size="1"/>', 1),
     "unknown geometry <cone>"),
    ("undefined material", lambda s: s.replace('<material name="interbotix_grey"/>', '<material name="pink"/>', 1),
     "material 'pink' is not defined"),
    ("mimic unknown joint", lambda s: s.replace('<mimic joint="left_finger"', '<mimic joint="thumb"'),
     "joint 'right_finger' <mimic> refers to unknown joint 'thumb'"),
    ("two parents", lambda s: s.replace('<child link="ee_gripper_link"/>', '<child link="fingers_link"/>'),
     "link 'fingers_link' has two parent joints"),
    ("disconnected link", lambda s: s.replace("</robot>", '<link name="floating_thing"/></robot>'),
     "expected exactly one root link, found 2"),
]


@pytest.mark.parametrize("desc,edit,words", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_urdf_raises_clear_error(desc, edit, words):
    bad = edit(URDF_TEXT)
    assert bad != URDF_TEXT, f"edit '{desc}' did not change the file"
    with pytest.raises(UrdfError) as info:
        parse_urdf(bad, source="bad.urdf")
    assert isinstance(info.value, UserError)
    assert words in str(info.value)
    assert str(info.value).startswith("bad.urdf")


def test_kinematic_loop_is_rejected():
    text = URDF_TEXT.replace('<child link="shoulder_link"/>', '<child link="base_link"/>')
    with pytest.raises(UrdfError, match="root"):
        parse_urdf(text)


def test_missing_file(tmp_path):
    with pytest.raises(UrdfError, match="not found"):
        load_urdf(tmp_path / "nope.urdf")


def test_kinematics_rejects_a_chain_without_the_arm_joints():
    # make wrist_angle a fixed joint: the chain no longer has the six spec joints
    text = URDF_TEXT.replace('<joint name="wrist_angle" type="revolute">', '<joint name="wrist_angle" type="fixed">')
    with pytest.raises(KinematicsError, match="expected"):
        WidowXKinematics(parse_urdf(text))
