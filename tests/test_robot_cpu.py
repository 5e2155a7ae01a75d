"""CPU sharing on the robot PC: the policy's inference leaves a core and the scheduler's preference to the 50 Hz
control loop (issue 14 item 4; measured effect in docs/ros.md)."""
from __future__ import annotations

import os
import threading

from etc_ros.policy.worker import INFERENCE_NICE, inference_threads, load_runtime, lower_thread_priority


def test_inference_leaves_one_core_to_the_control_loop():
    assert inference_threads() == max(1, (os.cpu_count() or 2) - 1)
    rt = load_runtime("policies/sim_pickup")  # what the policy node loads
    so = next(iter(rt.model.graphs.sessions.values())).get_session_options()
    assert so.intra_op_num_threads == inference_threads()
    assert so.get_session_config_entry("session.intra_op.allow_spinning") == "0"  # no spinning between chunks


def test_inference_thread_runs_at_a_lower_priority_than_the_rest():
    out = {}

    def worker():
        tid = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, tid)
        out["ok"] = lower_thread_priority(INFERENCE_NICE)
        out["delta"] = os.getpriority(os.PRIO_PROCESS, tid) - before

    main_before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=worker)
    t.start()
    t.join()
    assert out["ok"] and out["delta"] == min(INFERENCE_NICE, 19 - main_before)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main_before  # only that thread
