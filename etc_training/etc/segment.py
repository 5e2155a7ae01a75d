"""Task-plan segmentation of one episode from the gripper signal and the end-effector motion.

Nothing here reads simulator metadata: events come from the recorded gripper opening (state[:, 6], 1 = open),
phases from events plus EE motion (FK of the recorded joints). Sim metadata (gripper_events, subtasks) is ground
truth to compare against (`compare_events`, `compare_segments`).

Gripper events. The opening is median-filtered (3 frames); frames where it changes by more than `eps` form
monotone runs (gaps of up to `gap` still frames are bridged); a run whose total change is at least `min_delta`
is a close (falling) or open (rising) event. Closing on an object stops the fingers early, so no absolute
threshold is used. Event `frame` = the last frame before the fingers move (the frame whose command started the
motion), `end` = the first frame at which the motion is over. Events alternate, starting from the initial state.

Phases (segments are [start, end) frame ranges covering 0..T):
- grasp families (pick_place, stack, pick_up, or unknown with events): per close/open cycle
  reach -> grasp (close event start..end) -> transport (pick_up: lift) -> release (open event start..end);
  after the last open a retreat phase if the EE still moves >= `retreat_min_move` m, else release runs to T.
- push (no events): motion only. The EE's low phase (z within `contact_dz` of its minimum, the longest such
  run) that moves >= `push_min_move` m horizontally is the push; before it reach, after it retreat.
Done frame (success episodes only): end of the last release (pick_place, stack), the first frame after the
last grasp at which the EE is `lift_min` m above its grasp height (pick_up), end of the push (push).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from etc_ros.core.errors import UserError

GRASP_FAMILIES = ("pick_place", "stack", "pick_up")
FAMILIES = GRASP_FAMILIES + ("push",)


@dataclass
class SegmentParams:
    eps: float = 0.01  # per-frame opening change counted as motion
    min_delta: float = 0.15  # total opening change of an event
    gap: int = 1  # still frames bridged inside one run
    retreat_min_move: float = 0.01  # m
    contact_dz: float = 0.015  # m above the lowest EE height that counts as contact height (push)
    push_min_move: float = 0.02  # m horizontal motion during contact (push)
    lift_min: float = 0.03  # m (pick_up done)


@dataclass
class Segment:
    phase: str  # reach | grasp | transport | lift | release | retreat | push | move
    text: str
    start: int
    end: int  # exclusive

    def to_dict(self) -> dict:
        return dict(phase=self.phase, text=self.text, start=int(self.start), end=int(self.end))


@dataclass
class Segmentation:
    events: list[dict] = field(default_factory=list)  # {"frame", "end", "type": close|open}
    segments: list[Segment] = field(default_factory=list)
    done_frame: int | None = None
    num_frames: int = 0

    def segment_at(self, t: int) -> Segment | None:
        for s in self.segments:
            if s.start <= t < s.end:
                return s
        return None

    def to_dict(self) -> dict:
        return dict(events=[dict(e) for e in self.events], segments=[s.to_dict() for s in self.segments],
                    done_frame=self.done_frame, num_frames=self.num_frames)


def _median3(x: np.ndarray) -> np.ndarray:
    if len(x) < 3:
        return x.copy()
    p = np.concatenate([x[:1], x, x[-1:]])
    return np.median(np.stack([p[:-2], p[1:-1], p[2:]]), axis=0)


def detect_gripper_events(gripper: np.ndarray, params: SegmentParams | None = None) -> list[dict]:
    """Close/open events from a gripper opening signal (T,) in [0, 1] (1 = open)."""
    p = params or SegmentParams()
    g = np.asarray(gripper, dtype=float).reshape(-1)
    if g.size == 0:
        return []
    if not np.all(np.isfinite(g)):
        raise UserError("gripper signal contains NaN/Inf")
    g = _median3(g)
    d = np.diff(g)
    sign = np.where(d > p.eps, 1, np.where(d < -p.eps, -1, 0))
    runs: list[tuple[int, int, int]] = []  # (sign, first diff index, last diff index)
    cur = None
    still = 0
    for i, s in enumerate(sign):
        if s == 0:
            if cur is not None:
                still += 1
                if still > p.gap:
                    runs.append(cur)
                    cur, still = None, 0
            continue
        if cur is not None and s == cur[0]:
            cur = (cur[0], cur[1], i)
            still = 0
        else:
            if cur is not None:
                runs.append(cur)
            cur, still = (int(s), i, i), 0
    if cur is not None:
        runs.append(cur)
    events: list[dict] = []
    state_open = g[0] >= 0.5
    for s, a, b in runs:
        change = g[b + 1] - g[a]
        if abs(change) < p.min_delta:
            continue
        # trim jitter / slow drift at both ends: the event frame is the last frame still at the old level,
        # the end the first frame at the new level (levels within tol)
        tol = max(2 * p.eps, 0.1 * abs(change))
        start_level, end_level = g[a], g[b + 1]
        while a < b and abs(g[a + 1] - start_level) <= tol:
            a += 1
        end = b + 1
        while end - 1 > a and abs(g[end - 1] - end_level) <= tol:
            end -= 1
        kind = "open" if s > 0 else "close"
        if (kind == "close") != state_open:  # a second close while closed etc.: merge into the previous one
            if events and events[-1]["type"] == kind:
                events[-1]["end"] = int(end)
            continue
        events.append({"frame": int(a), "end": int(end), "type": kind})
        state_open = kind == "open"
    return events


def _names(obj: str | None, target: str | None) -> tuple[str, str]:
    return (obj or "object"), (target or "target location")


def _step_text(phase: str, family: str | None, obj: str | None, target: str | None, repeat: bool = False) -> str:
    o, t = _names(obj, target)
    if phase == "reach":
        return f"reach the {o}" + (" again" if repeat else "")
    if phase == "grasp":
        return f"grasp the {o}"
    if phase == "transport":
        return f"carry the {o} over the {t}" if family == "stack" else f"carry the {o} to the {t}"
    if phase == "lift":
        return f"lift the {o}"
    if phase == "release":
        return f"release the {o} on the {t}" if family == "stack" else f"release the {o}"
    if phase == "retreat":
        return "move the gripper away"
    if phase == "push":
        return f"push the {o} to the {t}"
    return "move the gripper"


def segment_episode(gripper: np.ndarray, ee_pos: np.ndarray, family: str | None = None, obj: str | None = None,
                    target: str | None = None, success: bool | None = None,
                    params: SegmentParams | None = None) -> Segmentation:
    """Segment an episode into ordered subtasks (see the module doc)."""
    p = params or SegmentParams()
    g = np.asarray(gripper, dtype=float).reshape(-1)
    ee = np.asarray(ee_pos, dtype=float)
    T = len(g)
    if ee.shape != (T, 3):
        raise UserError(f"ee positions must have shape ({T}, 3) to match the gripper signal, got {ee.shape}")
    if family is not None and family not in FAMILIES:
        raise UserError(f"unknown task family {family!r}; known: {list(FAMILIES)}")
    seg = Segmentation(num_frames=T)
    if T == 0:
        return seg
    events = detect_gripper_events(g, p)
    seg.events = events
    if family == "push" or (family is None and not events):
        _segment_push(seg, ee, obj, target, p, family)
    else:
        _segment_grasp(seg, ee, family, obj, target, p)
    seg.segments = [s for s in seg.segments if s.end > s.start]
    if success is not True:
        seg.done_frame = None
    return seg


def _segment_grasp(seg: Segmentation, ee: np.ndarray, family, obj, target, p: SegmentParams) -> None:
    T = seg.num_frames
    out: list[Segment] = []
    t = 0
    cycles = 0
    last_close_end = None
    last_open_end = None
    for e in seg.events:
        a, b = e["frame"], min(e["end"], T)
        if e["type"] == "close":
            out.append(Segment("reach", _step_text("reach", family, obj, target, cycles > 0), t, a))
            out.append(Segment("grasp", _step_text("grasp", family, obj, target), a, b))
            cycles += 1
            last_close_end = b
        else:
            carry = "lift" if family == "pick_up" else "transport"
            if out and out[-1].phase == "grasp":
                out.append(Segment(carry, _step_text(carry, family, obj, target), t, a))
                out.append(Segment("release", _step_text("release", family, obj, target), a, b))
                last_open_end = b
            else:  # opening with nothing grasped (initially closed gripper): part of reaching
                out.append(Segment("reach", _step_text("reach", family, obj, target), t, b))
        t = b
    if t < T:
        if out and out[-1].phase == "grasp":
            carry = "lift" if family == "pick_up" else "transport"
            out.append(Segment(carry, _step_text(carry, family, obj, target), t, T))
        elif out and out[-1].phase == "release":
            moved = float(np.linalg.norm(ee[t:] - ee[t], axis=1).max()) if T - t > 1 else 0.0
            if moved >= p.retreat_min_move:
                out.append(Segment("retreat", _step_text("retreat", family, obj, target), t, T))
            else:
                out[-1].end = T
        else:
            out.append(Segment("reach", _step_text("reach", family, obj, target, cycles > 0), t, T))
    seg.segments = out
    # done frame
    if family in ("pick_place", "stack"):
        seg.done_frame = min(last_open_end, T - 1) if (last_open_end is not None and out
                                                       and out[-1].phase in ("release", "retreat")) else None
    elif family == "pick_up" and last_close_end is not None and out[-1].phase == "lift":
        z0 = ee[min(last_close_end, T - 1), 2]
        up = np.nonzero(ee[last_close_end:, 2] >= z0 + p.lift_min)[0]
        seg.done_frame = int(last_close_end + up[0]) if len(up) else None
    else:
        seg.done_frame = None


def _segment_push(seg: Segmentation, ee: np.ndarray, obj, target, p: SegmentParams, family) -> None:
    T = seg.num_frames
    z = ee[:, 2]
    low = z <= z.min() + p.contact_dz
    best = None
    i = 0
    while i < T:
        if low[i]:
            j = i
            while j < T and low[j]:
                j += 1
            if best is None or (j - i) > (best[1] - best[0]):
                best = (i, j)
            i = j
        else:
            i += 1
    fam = family or "push"
    if best is not None:
        a, b = best
        horiz = float(np.linalg.norm(ee[a:b, :2] - ee[a, :2], axis=1).max()) if b - a > 1 else 0.0
        if horiz >= p.push_min_move:
            seg.segments = [Segment("reach", _step_text("reach", fam, obj, target), 0, a),
                            Segment("push", _step_text("push", fam, obj, target), a, b)]
            if b < T:
                seg.segments.append(Segment("retreat", _step_text("retreat", fam, obj, target), b, T))
            seg.done_frame = min(b, T - 1) if family == "push" else None
            return
    seg.segments = [Segment("move", _step_text("move", fam, obj, target), 0, T)]
    seg.done_frame = None


# ---------------------------------------------------------------------------------------------- checks
def compare_events(pred: list[dict], truth: list[dict], tol: int = 3) -> dict:
    """Match predicted to ground-truth gripper events (same type, |frame difference| <= tol, in order)."""
    matched, errs = 0, []
    j = 0
    for e in truth:
        while j < len(pred) and pred[j]["type"] != e["type"]:
            j += 1
        if j < len(pred) and abs(int(pred[j]["frame"]) - int(e["frame"])) <= tol:
            matched += 1
            errs.append(abs(int(pred[j]["frame"]) - int(e["frame"])))
            j += 1
    ok = matched == len(truth) == len(pred)
    return dict(ok=bool(ok), matched=matched, n_pred=len(pred), n_truth=len(truth),
                max_frame_error=max(errs) if errs else None)


def compare_segments(pred: list[dict], truth: list[dict], tol: int = 3) -> dict:
    """Boundary agreement of two segmentations (names are not compared: conventions differ).
    A predicted inner boundary is correct if a ground-truth boundary lies within tol frames."""
    def bounds(segs):
        b = set()
        for s in segs:
            b.add(int(s["start"]))
        if segs:
            b.discard(min(int(s["start"]) for s in segs))
        return sorted(b)

    pb, tb = bounds(pred), bounds(truth)
    hit_p = sum(any(abs(x - y) <= tol for y in tb) for x in pb)
    hit_t = sum(any(abs(x - y) <= tol for y in pb) for x in tb)
    precision = hit_p / len(pb) if pb else float(not tb)
    recall = hit_t / len(tb) if tb else float(not pb)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return dict(precision=precision, recall=recall, f1=f1, n_pred=len(pb), n_truth=len(tb))
