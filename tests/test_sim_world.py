"""MuJoCo world built from urdf/wx250s.urdf: kinematics, limits, contact classes, table frame, rendering camera."""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest

from etc_ros.core.camera import BRIDGE_INTRINSICS, CameraIntrinsics
from etc_ros.core.paths import urdf_path
from etc_ros.core.spec import JOINT_NAMES, READY_POSE
from etc_training.sim import SimEnv
from etc_training.sim.objects import ENV_CONAFFINITY, ENV_CONTYPE, ROBOT_CONAFFINITY, ROBOT_CONTYPE, WALL_CONTYPE


def _collide(ct1, ca1, ct2, ca2) -> bool:
    return bool((ct1 & ca2) or (ct2 & ca1))


@pytest.fixture(scope="module")
def env():
    e = SimEnv(render=False)
    e.reset(seed=11, family="pick_place")
    yield e
    e.close()


def _urdf_joints():
    root = ET.parse(urdf_path()).getroot()
    out = {}
    for j in root.findall("joint"):
        lim = j.find("limit")
        if lim is not None:
            out[j.get("name")] = (float(lim.get("lower")), float(lim.get("upper")), float(lim.get("effort")))
    return out


def test_joint_limits_and_efforts_come_from_the_urdf(env):
    import mujoco

    m = env.model
    uj = _urdf_joints()
    for k, name in enumerate(JOINT_NAMES):
        jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, name)
        lo, hi, eff = uj[name]
        assert np.allclose(m.jnt_range[jid], [lo, hi])
        a = env.world.arm_act[k]
        assert np.allclose(m.actuator_ctrlrange[a], [lo, hi])
        assert np.allclose(m.actuator_forcerange[a], [-eff, eff])
    lo, hi, eff = uj["left_finger"]
    assert np.allclose(m.actuator_ctrlrange[env.world.finger_act], [lo, hi])
    assert np.allclose(m.actuator_forcerange[env.world.finger_act], [-eff, eff])  # force-limited gripper


def test_ee_site_matches_kinematics_fk(env):
    import mujoco

    from etc_ros.core.kinematics import WidowXKinematics

    kin = WidowXKinematics.from_urdf()
    rng = np.random.default_rng(0)
    d = mujoco.MjData(env.model)
    for q in [READY_POSE, np.zeros(6)] + [rng.uniform(-1.0, 1.0, 6) for _ in range(5)]:
        d.qpos[env.world.arm_qadr] = q
        mujoco.mj_forward(env.model, d)
        T = kin.fk(q)
        assert np.allclose(d.site_xpos[env.world.ee_site], T[:3, 3], atol=1e-6)
        assert np.allclose(d.site_xmat[env.world.ee_site].reshape(3, 3), T[:3, :3], atol=1e-6)


def test_table_top_is_z0_and_robot_base_on_it(env):
    import mujoco

    m = env.model
    g = env.world.table_geom
    assert m.geom_pos[g][2] + m.geom_size[g][2] == pytest.approx(0.0, abs=1e-12)
    b = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "base_link")
    assert np.allclose(env.data.xpos[b], 0.0)
    # objects rest on the table top
    for name in env.object_names():
        pos, _ = env.pose(name)
        assert pos[2] == pytest.approx(env.spec(name).half_height, abs=3e-3), name


def test_contact_classes():
    robot = (ROBOT_CONTYPE, ROBOT_CONAFFINITY)
    obj = (ENV_CONTYPE, ENV_CONAFFINITY)
    from etc_training.sim.objects import TABLE_CONAFFINITY, TABLE_CONTYPE, WALL_CONAFFINITY

    table = (TABLE_CONTYPE, TABLE_CONAFFINITY)
    wall = (WALL_CONTYPE, WALL_CONAFFINITY)
    assert not _collide(*robot, *robot)  # no self collision between links
    assert _collide(*robot, *obj) and _collide(*robot, *table) and _collide(*robot, *wall)
    assert _collide(*obj, *obj) and _collide(*obj, *table) and _collide(*obj, *wall)
    assert not _collide(*wall, *table)


def test_grasping_uses_contacts_not_welds(env):
    import mujoco

    m = env.model
    assert not env.cfg.physics.weld_on_grasp
    weld = [i for i in range(m.neq) if m.eq_type[i] == mujoco.mjtEq.mjEQ_WELD]
    assert weld == []


def test_primary_camera_uses_bridge_intrinsics_resized():
    env = SimEnv(render=False)
    env.reset(seed=3)
    K = env.camera_model("primary").intrinsics
    want = CameraIntrinsics(**BRIDGE_INTRINSICS).resized(224, 224)
    for k in ("width", "height", "fx", "fy", "cx", "cy"):
        assert getattr(K, k) == pytest.approx(getattr(want, k))
    assert K.fx != K.fy  # 640x480 -> 224x224 squashes the image: non-square pixels
