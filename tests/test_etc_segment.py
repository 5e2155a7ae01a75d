"""Plan segmentation from gripper events and EE motion, on constructed episodes."""
from __future__ import annotations

import numpy as np
import pytest

from etc_ros.core.errors import UserError
from etc_training.etc.segment import (
    SegmentParams,
    compare_events,
    compare_segments,
    detect_gripper_events,
    segment_episode,
)


def ramp(a: float, b: float, n: int) -> list[float]:
    return [a + (b - a) * k / n for k in range(1, n + 1)]


def pick_place_signals(close_at=10, open_at=30, T=45, closed=0.3):
    """Gripper: open until close_at, closes over 3 frames to `closed` (object in hand), opens at open_at."""
    g = [1.0] * (close_at + 1) + ramp(1.0, closed, 3)
    g += [closed] * (open_at + 1 - len(g)) + ramp(closed, 1.0, 3)
    g += [1.0] * (T - len(g))
    z = np.full(T, 0.10)
    z[close_at - 5:close_at + 1] = np.linspace(0.10, 0.02, 6)
    z[close_at + 1:close_at + 4] = 0.02
    z[close_at + 4:open_at] = 0.12
    x = np.linspace(0.2, 0.35, T)
    ee = np.stack([x, np.zeros(T), z], axis=1)
    return np.array(g[:T]), ee


def test_events_partial_closure_on_object():
    g, _ = pick_place_signals(closed=0.3)
    ev = detect_gripper_events(g)
    assert [(e["type"], e["frame"], e["end"]) for e in ev] == [("close", 10, 13), ("open", 30, 33)]


def test_events_ignore_jitter_and_merge_repeated_closing():
    rng = np.random.default_rng(0)
    g, _ = pick_place_signals()
    noisy = np.clip(g + rng.normal(0, 0.02, len(g)), 0, 1)
    ev = detect_gripper_events(noisy)
    assert [e["type"] for e in ev] == ["close", "open"]
    assert abs(ev[0]["frame"] - 10) <= 1 and abs(ev[1]["frame"] - 30) <= 1
    # a second squeeze while already closed is not a new event
    g2 = np.concatenate([[1.0] * 5, ramp(1.0, 0.5, 2), [0.5] * 5, ramp(0.5, 0.2, 3), [0.2] * 5])
    ev2 = detect_gripper_events(g2)
    assert len(ev2) == 1 and ev2[0]["type"] == "close" and ev2[0]["frame"] == 4


def test_small_changes_are_not_events():
    g = np.concatenate([[1.0] * 10, ramp(1.0, 0.9, 3), [0.9] * 10])
    assert detect_gripper_events(g) == []
    assert detect_gripper_events(g, SegmentParams(min_delta=0.05))[0]["type"] == "close"


def test_pick_place_segmentation_and_done():
    g, ee = pick_place_signals()
    seg = segment_episode(g, ee, "pick_place", "red cube", "blue bowl", success=True)
    got = [(s.phase, s.start, s.end) for s in seg.segments]
    assert got == [("reach", 0, 10), ("grasp", 10, 13), ("transport", 13, 30), ("release", 30, 33),
                   ("retreat", 33, 45)]
    assert [s.text for s in seg.segments][:3] == ["reach the red cube", "grasp the red cube",
                                                  "carry the red cube to the blue bowl"]
    assert seg.done_frame == 33
    assert seg.segment_at(20).phase == "transport" and seg.segment_at(45) is None


def test_failed_or_unknown_success_is_never_done():
    g, ee = pick_place_signals()
    assert segment_episode(g, ee, "pick_place", success=False).done_frame is None
    assert segment_episode(g, ee, "pick_place", success=None).done_frame is None


def test_pick_up_lift_and_done_by_height():
    T = 30
    g = np.array([1.0] * 11 + ramp(1.0, 0.25, 3) + [0.25] * (T - 14))
    z = np.concatenate([np.linspace(0.1, 0.02, 11), [0.02] * 3, np.linspace(0.02, 0.12, T - 14)])
    ee = np.stack([np.full(T, 0.3), np.zeros(T), z], axis=1)
    seg = segment_episode(g, ee, "pick_up", "cube", success=True)
    assert [s.phase for s in seg.segments] == ["reach", "grasp", "lift"]
    # done when the EE is lift_min (3 cm) above its height at the end of the grasp
    d = seg.done_frame
    assert d is not None and ee[d, 2] >= 0.02 + 0.03 - 1e-9 and ee[d - 1, 2] < 0.05


def test_regrasp_gives_two_cycles():
    g = np.array([1.0] * 6 + ramp(1.0, 0.3, 2) + [0.3] * 3 + ramp(0.3, 1.0, 2) + [1.0] * 4 + ramp(1.0, 0.3, 2)
                 + [0.3] * 6 + ramp(0.3, 1.0, 2) + [1.0] * 5)
    T = len(g)
    ee = np.stack([np.linspace(0.2, 0.3, T), np.zeros(T), np.linspace(0.1, 0.05, T)], axis=1)
    seg = segment_episode(g, ee, "pick_place", "cube", "bowl", success=True)
    phases = [s.phase for s in seg.segments]
    assert phases.count("grasp") == 2 and phases.count("release") == 2
    assert [s.text for s in seg.segments if s.phase == "reach"] == ["reach the cube", "reach the cube again"]
    starts = [s.start for s in seg.segments]
    assert starts == sorted(starts) and seg.segments[-1].end == T


def test_push_from_motion_only():
    T = 36
    z = np.concatenate([np.linspace(0.12, 0.02, 12), [0.02] * 12, np.linspace(0.02, 0.12, 12)])
    y = np.concatenate([np.full(12, -0.1), np.linspace(-0.1, 0.05, 12), np.full(12, 0.05)])
    ee = np.stack([np.full(T, 0.3), y, z], axis=1)
    seg = segment_episode(np.zeros(T), ee, "push", "cube", "plate", success=True)
    # contact = EE within contact_dz (1.5 cm) of its lowest height: z <= 0.035 from frame 10 to frame 25
    low = np.nonzero(z <= 0.02 + 0.015 + 1e-12)[0]
    assert (low[0], low[-1]) == (10, 25)
    assert [(s.phase, s.start, s.end) for s in seg.segments] == [("reach", 0, 10), ("push", 10, 26),
                                                                 ("retreat", 26, 36)]
    assert seg.done_frame == 26
    # no horizontal motion at contact height: not a push
    ee2 = ee.copy()
    ee2[:, 1] = 0.0
    assert [s.phase for s in segment_episode(np.zeros(T), ee2, "push").segments] == ["move"]


def test_segmentation_matches_synthetic_ground_truth():
    from etc_training.etc.episode import make_view
    from etc_training.etc.synthetic import make_episode

    for fam in ("pick_place", "pick_up", "stack", "push"):
        ep = make_episode(3, fam)
        v = make_view(ep, 0, "memory")
        assert compare_events(v.seg.events, ep.metadata["gripper_events"], tol=1)["ok"], fam
        sb = compare_segments([s.to_dict() for s in v.seg.segments], ep.metadata["subtasks"], tol=2)
        assert sb["precision"] == 1.0, (fam, sb)  # every boundary we predict is a real one


def test_compare_events_and_segments_detect_disagreement():
    truth = [{"frame": 10, "type": "close"}, {"frame": 30, "type": "open"}]
    assert compare_events([{"frame": 11, "type": "close"}, {"frame": 29, "type": "open"}], truth)["ok"]
    assert not compare_events([{"frame": 20, "type": "close"}, {"frame": 30, "type": "open"}], truth)["ok"]
    assert not compare_events([{"frame": 10, "type": "close"}], truth)["ok"]
    a = [{"start": 0, "end": 10}, {"start": 10, "end": 20}]
    assert compare_segments(a, a)["f1"] == 1.0
    assert compare_segments(a, [{"start": 0, "end": 15}, {"start": 15, "end": 20}], tol=2)["f1"] == 0.0


def test_bad_inputs():
    with pytest.raises(UserError, match="ee positions"):
        segment_episode(np.ones(5), np.zeros((4, 3)))
    with pytest.raises(UserError, match="unknown task family"):
        segment_episode(np.ones(5), np.zeros((5, 3)), family="juggle")
    with pytest.raises(UserError, match="NaN"):
        detect_gripper_events(np.array([1.0, np.nan, 0.0]))
