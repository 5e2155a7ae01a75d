"""The node graph in one process on real DDS (fake arm + fake camera + scripted policy): it moves the arm, every
message keeps its layout, and the faults end in a hold: camera stops, NaN / huge chunks, e-stop, restarts."""
from __future__ import annotations

import time

import numpy as np
import pytest
from ros_graph_helpers import Recorder, alternating_fn, start_fake_graph, wait_until  # noqa: I100 (sets ROS_DOMAIN_ID)

from etc_ros.core import spec as robot_spec
from etc_ros.nodes import messages
from etc_ros.policy.scripted import ScriptedRuntime, circle_fn


def _moved(backend, since: float = 0.0) -> float:
    qs = [q for t, q, g in list(backend.log) if t >= since]
    return 0.0 if len(qs) < 2 else float(np.max(np.abs(np.array(qs) - qs[0])))


def test_graph_moves_the_arm_only_with_an_accepted_instruction():
    g, backend, ex, camera = start_fake_graph()
    try:
        rec = Recorder(g)
        # no instruction: no chunk, the arm holds (rejected instructions keep it that way)
        assert rec.say("") == (False, "rejected: empty instruction")
        ok, reason = rec.say("x" * 500)
        assert not ok and reason.startswith("rejected: too long")
        time.sleep(1.0)
        assert g.node("policy_node").worker.chunks == 0 and not rec.chunks
        assert _moved(backend) < 1e-6
        # accepted through the SetParameters service -> chunks -> commands -> the arm moves
        t0 = time.time()
        assert rec.say("  draw a small circle ") == (True, "accepted")
        assert wait_until(lambda: _moved(backend, t0) > 0.02, 10.0), "the arm did not move"
        assert wait_until(lambda: len(rec.chunks) >= 3 and len(rec.commands) >= 20, 5.0)
        assert rec.accepted[-1][1].data == "draw a small circle"
        assert wait_until(lambda: ex.diagnostics()["chunks_accepted"] >= 3, 5.0)
        # a bad instruction later is rejected with the reason and does not change the task
        ok, reason = rec.say("stop\x07")
        assert not ok and "control character U+0007" in reason
        assert g.node("policy_node").worker.instruction == "draw a small circle"
        # on the topic, bytes a C++ publisher can send: invalid UTF-8, an embedded NUL (rclpy's own
        # deserialization would make them U+FFFD / cut the text short); both rejected with the reason
        from std_msgs.msg import String

        instr = g.node("instruction_node")
        pub = instr.create_publisher(String, "/instruction", 10)
        n0 = instr.rejected
        for payload in (b"pick up the \xff cube", b"pick up\x00 the red cube"):
            n = len(payload) + 1
            pub.publish(b"\x00\x01\x00\x00" + n.to_bytes(4, "little") + payload + b"\x00")
        assert wait_until(lambda: instr.rejected >= n0 + 2, 5.0)
        assert "embedded NUL at byte 7" in instr.last_verdict
        # xs_sdk detection reads the ROS graph: a service that exists is found, an absent one times out
        drv = g.node("driver_node")
        assert drv._service_appears("/instruction_node/clear", 5.0)
        t0 = time.monotonic()
        assert not drv._service_appears("/wx250s/get_robot_info", 0.3) and time.monotonic() - t0 < 2.0
        # a default-QoS (reliable) monitor receives /joint_states too
        from sensor_msgs.msg import JointState

        got = []
        instr.create_subscription(JointState, "/joint_states", got.append, 10)
        assert wait_until(lambda: len(got) >= 3, 5.0), "a reliable subscriber got no joint states"
        assert g.node("policy_node").worker.instruction == "draw a small circle"

        # layouts (docs/ros.md)
        with rec.lock:
            chunks = [m for _, m in rec.chunks]
            cam_stamps = {messages.from_time(m.header.stamp) for _, m in rec.camera_stamps}
            cmds = [m for _, m in rec.commands]
            js = [(t, m) for t, m in rec.joint_states]
        c = chunks[-1]
        assert list(c.joint_names) == list(robot_spec.ACTION_NAMES) and len(c.points) == robot_spec.CHUNK_HORIZON
        assert [messages.from_duration(p.time_from_start) for p in c.points] == pytest.approx(
            [i / robot_spec.POLICY_HZ for i in range(robot_spec.CHUNK_HORIZON)])
        assert all(messages.from_time(ch.header.stamp) in cam_stamps for ch in chunks[-3:]), \
            "chunks must be stamped with the camera frame they were computed from"
        a, stamp, hz = messages.msg_to_chunk(c)
        assert a.shape == (robot_spec.CHUNK_HORIZON, 7) and hz == pytest.approx(robot_spec.POLICY_HZ)
        cm = cmds[-1]
        assert list(cm.joint_names) == list(robot_spec.JOINT_NAMES) + ["gripper"] and len(cm.points) == 1
        q, grip, st, dt, qd = messages.msg_to_command(cm)
        assert 0 < dt <= 0.02 + 1e-9 and 0.0 <= grip <= 1.0
        assert qd is not None and qd.shape == (6,)  # the driver tells a step from a gap with it
        names = list(js[-1][1].name)
        assert names == list(robot_spec.JOINT_NAMES) + ["left_finger", "right_finger"]
        # joint states at >= 50 Hz (the driver's timer runs at 100 Hz; best-effort subscribers may drop some)
        drv = g.node("driver_node")
        n0, t_a = drv.states_published, time.monotonic()
        time.sleep(2.0)
        pub_rate = (drv.states_published - n0) / (time.monotonic() - t_a)
        with rec.lock:
            rx_rate = sum(1 for t, _ in rec.joint_states if t > time.time() - 2.0) / 2.0
        print(f"\n[joint_states] published {pub_rate:.1f} Hz, received by a test subscriber {rx_rate:.1f} Hz")
        assert drv.timer.timer_period_ns <= 20_000_000  # configured >= 50 Hz (100 Hz in ros_driver.yaml)
        # measured rate: 60-80 Hz on this shared 2-core host at load 6-9, ~30 Hz seen at load 12 (the value is
        # printed; etc-vla bench ros reports it); here only: published continuously
        assert pub_rate >= 20.0, f"joint_states published at {pub_rate:.1f} Hz"
        # driver refused nothing from the safety node
        assert g.node("driver_node").core.refused == 0
    finally:
        g.stop(park=False)


def test_camera_stop_makes_the_arm_hold_and_replug_recovers():
    g, backend, ex, camera = start_fake_graph()
    try:
        rec = Recorder(g)
        assert rec.say("draw a small circle")[0]
        assert wait_until(lambda: _moved(backend) > 0.02, 10.0)
        time.sleep(0.5)
        cam_node = g.node("camera_node")
        timeout = ex.limits.camera_timeout
        # camera stops (unplugged): no more frames
        camera.unplug()
        assert wait_until(lambda: cam_node.cam.state == "reconnecting", 2.0)
        t_last = cam_node.last_stamp
        assert wait_until(lambda: any(r[0] > t_last and r[2] == "camera_timeout" for r in list(ex.ticks)), 3.0)
        ticks = [r for r in list(ex.ticks) if r[0] > t_last]
        hold = next(r for r in ticks if r[2] == "camera_timeout")
        hold_latency = hold[0] - t_last
        # braking: commanded velocity reaches zero and the commanded position stops changing
        assert wait_until(lambda: any(r[0] > hold[0] and not np.any(r[4]) for r in list(ex.ticks)), 2.0)
        rest = next(r for r in list(ex.ticks) if r[0] > hold[0] and not np.any(r[4]))
        rest_latency = rest[0] - t_last
        print(f"\n[hold] camera_timeout {timeout * 1000:.0f} ms: hold {hold_latency * 1000:.1f} ms after the last "
              f"frame, at rest {rest_latency * 1000:.1f} ms after it")
        # the hold comes from the camera watchdog: not before camera_timeout, within a few (loaded) ticks after
        # (the reason above proves it is the camera watchdog; the frame's stamp can be older than its arrival on a
        # loaded machine, so only the upper bound is asserted)
        assert hold_latency <= timeout + 0.15, hold_latency
        assert rest_latency <= hold_latency + 0.2
        # nothing moves while the camera is away: every later command repeats the rest pose, and so does the
        # last one the driver received
        # at least 10 further ticks (0.2 s at 50 Hz; given up to 3 s on a starved machine)
        assert wait_until(lambda: sum(1 for r in list(ex.ticks) if r[0] > rest[0]) >= 10, 3.0)
        later = [r[3] for r in list(ex.ticks) if r[0] > rest[0]]
        assert float(np.max(np.abs(np.array(later) - rest[3]))) < 1e-12
        assert float(np.max(np.abs(backend.log[-1][1] - rest[3]))) < 1e-12
        d = cam_node.cam.diagnostics()
        assert d["state"] == "reconnecting" and d["failures"] >= 1

        def cam_diag():
            for _, m in list(rec.diagnostics):
                for st in m.status:
                    if st.name == "etc_ros/camera/primary":
                        yield st, messages.diagnostics_to_dict(st)

        # the outage is reported on /diagnostics at level ERROR (1 Hz)
        assert wait_until(lambda: any(st.level == messages.LEVELS["error"] and dd["state"] == "reconnecting"
                                      for st, dd in cam_diag()), 3.0)
        # replug: reconnect with backoff, frames and motion resume, diagnostics report it
        camera.plug()
        assert wait_until(lambda: cam_node.cam.state == "connected", 5.0)
        assert cam_node.cam.reconnects == 1
        t1 = time.time()
        assert wait_until(lambda: _moved(backend, t1) > 0.01, 10.0), "motion did not resume after the replug"
        assert wait_until(lambda: any(dd["reconnects"] == "1" and dd["state"] == "connected"
                                      for _, dd in cam_diag()), 3.0)
    finally:
        g.stop(park=False)


def test_nan_and_huge_chunks_never_reach_the_driver():
    rt = ScriptedRuntime(fn=alternating_fn(bad_every=3))
    g, backend, ex, camera = start_fake_graph(runtime=rt)
    try:
        rec = Recorder(g)
        assert rec.say("misbehave")[0]
        assert wait_until(lambda: sum(ex.rejections.values()) >= 6 and ex.counts["chunks_accepted"] >= 3, 15.0)
        time.sleep(0.3)
        guard = g.node("driver_node").core.guard
        with rec.lock:
            cmds = [messages.msg_to_command(m) for _, m in rec.commands]
        assert len(cmds) > 50
        for q, grip, st, dt, _ in cmds:  # every command the driver received
            assert np.all(np.isfinite(q)) and np.isfinite(grip) and 0.0 <= grip <= 1.0
            assert np.all(q >= guard.lo - 1e-9) and np.all(q <= guard.hi + 1e-9)
            p = guard.fk_position(q)
            assert np.all(p >= guard.box_lo - 1e-6) and np.all(p <= guard.box_hi + 1e-6)
        vel = [np.abs(np.diff(np.array([c[0] for c in cmds]), axis=0)) /
               np.maximum(np.diff([c[2] for c in cmds]), 1e-9)[:, None]]
        assert np.max(vel) <= ex.limits.max_joint_velocity + 1e-6
        for t, q, _ in backend.log:
            assert np.all(np.isfinite(q))
        assert ex.rejections.get("nonfinite", 0) >= 2 and ex.rejections.get("out_of_range", 0) >= 2, ex.rejections
        assert g.node("policy_node").worker.nonfinite_chunks >= 2
        assert g.node("driver_node").core.refused == 0
        assert _moved(backend) > 0.005  # the good chunks still move the arm
    finally:
        g.stop(park=False)


def test_estop_latches_until_reset_and_dry_run_sends_nothing():
    from std_srvs.srv import SetBool, Trigger

    g, backend, ex, camera = start_fake_graph()
    try:
        rec = Recorder(g)
        assert rec.say("draw a small circle")[0]
        assert wait_until(lambda: _moved(backend) > 0.02, 10.0)
        r = rec.call(Trigger, "/safety_node/estop", Trigger.Request())
        assert r.success and "latched" in r.message
        t_e = time.time()
        assert wait_until(lambda: any(t > t_e and not np.any(v) for t, _, _, _, v, _ in list(ex.ticks)), 2.0)
        t_rest = time.time() + 0.05
        time.sleep(1.5)  # chunks keep coming: still latched
        assert ex.rejections.get("estop", 0) >= 3
        assert all(h and rs.startswith("estop") for t, h, rs, *_ in list(ex.ticks) if t > t_rest)
        moved = [q for t, q, _ in list(backend.log) if t > t_rest]
        assert not moved or np.max(np.abs(np.array(moved) - moved[0])) < 1e-9
        r = rec.call(Trigger, "/safety_node/reset_estop", Trigger.Request())
        assert r.success and "cleared" in r.message
        t1 = time.time()
        assert wait_until(lambda: _moved(backend, t1) > 0.01, 10.0), "no motion after reset_estop"
        # dry run: commands computed, none sent
        assert rec.call(SetBool, "/safety_node/dry_run", SetBool.Request(data=True)).success
        time.sleep(0.2)
        n = len(rec.commands)
        time.sleep(1.0)
        assert len(rec.commands) == n
        # every tick after the switch is computed but not executed (whether it tracks or holds depends on how
        # fresh the chunks are on a loaded machine; the dry-run invariant is that nothing is executed)
        t_dry = time.time() - 1.0
        dry = [tk for tk in list(ex.ticks) if tk[0] > t_dry]
        assert dry and all(tk[5] is False for tk in dry)
        assert rec.call(SetBool, "/safety_node/dry_run", SetBool.Request(data=False)).success
        assert wait_until(lambda: len(rec.commands) > n + 10, 3.0)
    finally:
        g.stop(park=False)


def test_policy_and_driver_restarts_recover():
    rt = ScriptedRuntime(fn=circle_fn())
    g, backend, ex, camera = start_fake_graph(runtime=rt)
    try:
        rec = Recorder(g)
        assert rec.say("draw a small circle")[0]
        assert wait_until(lambda: _moved(backend) > 0.02, 10.0)
        # the policy node dies: no chunks -> chunk_timeout -> hold
        old = g.detach("policy_node")
        old.destroy_node()  # abruptly: callbacks may be in flight (the executor must survive that)
        t_dead = time.time()
        assert wait_until(lambda: any(t > t_dead and rs == "chunk_timeout" for t, _, rs, *_ in list(ex.ticks)),
                          ex.limits.chunk_timeout + 1.5)
        # ... and comes back (the latched instruction reaches the new node): motion resumes
        g._create("policy_node")
        t1 = time.time()
        assert wait_until(lambda: g.node("policy_node").worker.chunks >= 2, 10.0)
        assert wait_until(lambda: _moved(backend, t1) > 0.01, 10.0), "no motion after the policy restart"
        assert g.node("policy_node").worker.instruction == "draw a small circle"
        # the driver restarts: safety re-anchors on the fresh joint states, no refusal
        resets = g.node("safety_node").resets
        new_driver = g.restart_node("driver_node")
        saf = g.node("safety_node")
        assert wait_until(lambda: saf.resets > resets, 10.0), \
            (new_driver.core.state, saf._driver_ready, saf._initialized, saf._ready_since, saf.now_s())
        t2 = time.time()
        assert wait_until(lambda: _moved(backend, t2) > 0.01, 10.0), "no motion after the driver restart"
        # refused: only commands the safety node computed before it re-anchored: while the new driver was homing
        # (not ready), or just after, still moving while the new driver starts from rest (acceleration)
        r = new_driver.core.refusals
        assert set(r) <= {"not_ready", "acceleration"} and r.get("acceleration", 0) <= 3, r
    finally:
        g.stop(park=False)
