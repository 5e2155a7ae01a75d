"""ETC sample generators: one function per subtype.

Signature: gen_<subtype>(ep: EpisodeView, t: int, cam: str, rng, cfg: EtcConfig) -> list[dict]; each dict holds
subtype, prompt, answer, template (paraphrase index) and target (the structured ground truth the answer was made
from; see docs/etc.md). The builder adds ids, image references, category and split. A generator returns [] when
the frame does not support the question (object not visible, trajectory leaving the image, ambiguous relation...).
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from etc_training.etc import coords
from etc_training.etc.episode import EpisodeView, ObjView
from etc_training.etc.templates import render

Sample = dict
COMPLETE_TEXT = "nothing, the task is complete"


def _instr(ep: EpisodeView) -> str:
    return ep.instruction.strip().rstrip(".!?") or "complete the task"


def _sample(subtype: str, rng, target: dict, answer: str, **fields) -> Sample:
    prompt, k = render(subtype, rng, **fields)
    return dict(subtype=subtype, prompt=prompt, answer=answer, template=k, target=target)


def _visible(ep: EpisodeView, t: int, cam: str) -> list[ObjView]:
    objs = ep.scene_objects(t, cam) or []
    W, H = ep.image_sizes[cam]
    return [o for o in objs if o.visible and o.point is not None and coords.in_image(o.point, W, H)]


def _unique(objs: list[ObjView]) -> list[ObjView]:
    """Objects whose name is unique in the scene (a question about an ambiguous name has no single answer)."""
    names = [o.name for o in objs]
    return [o for o in objs if names.count(o.name) == 1]


def _clip_box(box, W, H):
    x1, y1, x2, y2 = box
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    return (max(-0.5, x1), max(-0.5, y1), min(W - 0.5, x2), min(H - 0.5, y2))


def _box_of(o: ObjView, W, H):
    if o.box is None:
        return None
    return _clip_box(o.box, W, H)


def _project(ep: EpisodeView, cam: str, xyz: np.ndarray, need: str) -> np.ndarray:
    cm = ep.camera(cam, need)
    uv, _ = cm.project(np.atleast_2d(xyz))
    return uv


# ------------------------------------------------------------------------------------ scene grounding
def gen_point(ep: EpisodeView, t: int, cam: str, rng, cfg) -> list[Sample]:
    W, H = ep.image_sizes[cam]
    objs = _unique(_visible(ep, t, cam))
    if not objs:
        return []
    k = min(len(objs), max(0, cfg.objects_per_frame))
    out = []
    for i in rng.choice(len(objs), size=k, replace=False):
        o = objs[int(i)]
        box = _box_of(o, W, H)
        if box is not None and not (box[0] <= o.point[0] <= box[2] and box[1] <= o.point[1] <= box[3]):
            continue  # point off its own box: inconsistent record, do not teach it
        loc = coords.point_to_loc(o.point, W, H)
        target = dict(object=o.name, pixel=[float(o.point[0]), float(o.point[1])], loc=loc, image_size=[W, H],
                      box_pixel=list(box) if box is not None else None)
        out.append(_sample("point", rng, target, coords.fmt_point(loc), obj=o.name))
    return out


def gen_box(ep: EpisodeView, t: int, cam: str, rng, cfg) -> list[Sample]:
    W, H = ep.image_sizes[cam]
    objs = [o for o in _unique(_visible(ep, t, cam)) if o.box is not None]
    good = []
    for o in objs:
        b = _box_of(o, W, H)
        if b[2] - b[0] >= cfg.min_box_px and b[3] - b[1] >= cfg.min_box_px:
            good.append((o, b))
    if not good:
        return []
    k = min(len(good), max(0, cfg.objects_per_frame))
    out = []
    for i in rng.choice(len(good), size=k, replace=False):
        o, b = good[int(i)]
        loc = coords.box_to_loc(b, W, H)
        target = dict(object=o.name, pixel=[float(x) for x in b], loc=loc, image_size=[W, H],
                      point_pixel=[float(o.point[0]), float(o.point[1])])
        out.append(_sample("box", rng, target, coords.fmt_box(loc), obj=o.name))
    return out


def gen_objects(ep: EpisodeView, t: int, cam: str, rng, cfg) -> list[Sample]:
    W, H = ep.image_sizes[cam]
    objs = _visible(ep, t, cam)
    if not objs:
        return []
    objs = sorted(objs, key=lambda o: (o.point[0], o.point[1]))
    names = [o.name for o in objs]
    locs = [coords.point_to_loc(o.point, W, H) for o in objs]
    target = dict(names=names, loc=locs, image_size=[W, H])
    return [_sample("objects", rng, target, coords.fmt_list(names))]


def _relations(a: ObjView, b: ObjView, W: int, cfg) -> tuple[list[str], dict]:
    """Relations of a to b as seen in the image: left/right by image column, in front/behind by camera depth
    (3-D poses) or, without 3-D poses, by image row (lower in the image = in front, tabletop view)."""
    rels = []
    du = a.point[0] - b.point[0]
    if abs(du) > cfg.relation_margin_frac * W:
        rels.append("left_of" if du < 0 else "right_of")
    info = dict(du_px=float(du))
    if a.depth is not None and b.depth is not None:
        dd = a.depth - b.depth
        info["depth_diff_m"] = float(dd)
        if abs(dd) > cfg.relation_margin_m:
            rels.append("in_front_of" if dd < 0 else "behind")
    else:
        dv = a.point[1] - b.point[1]
        info["dv_px"] = float(dv)
        if abs(dv) > cfg.relation_margin_frac * W:
            rels.append("in_front_of" if dv > 0 else "behind")
    return rels, info


def gen_relation(ep: EpisodeView, t: int, cam: str, rng, cfg) -> list[Sample]:
    W, H = ep.image_sizes[cam]
    objs = _unique(_visible(ep, t, cam))
    if len(objs) < 2:
        return []
    pairs = [(i, j) for i in range(len(objs)) for j in range(len(objs)) if i != j]
    order = rng.permutation(len(pairs))
    for k in order:
        a, b = objs[pairs[k][0]], objs[pairs[k][1]]
        rels, info = _relations(a, b, W, cfg)
        if not rels:
            continue
        target = dict(subject=a.name, reference=b.name, relations=rels, subject_loc=coords.point_to_loc(a.point, W, H),
                      reference_loc=coords.point_to_loc(b.point, W, H), image_size=[W, H],
                      basis="depth" if "depth_diff_m" in info else "image_row", **info)
        return [_sample("relation", rng, target, coords.fmt_relation(rels), obj=a.name, ref=b.name)]
    return []


def _holding(ep: EpisodeView, t: int, name: str) -> bool:
    if ep.seg is None or ep.task_object is None or name != ep.task_object:
        return False
    s = ep.seg.segment_at(t)
    return s is not None and s.phase in ("transport", "lift")


def gen_gripper_relation(ep: EpisodeView, t: int, cam: str, rng, cfg) -> list[Sample]:
    if ep.ee_pos is None or cam not in ep.cameras:
        return []
    W, H = ep.image_sizes[cam]
    objs = _unique(_visible(ep, t, cam))
    if not objs:
        return []
    ee = ep.ee_pos[t]
    uv = _project(ep, cam, ee, "gripper_relation")[0]
    if not coords.in_image(uv, W, H):
        return []
    for k in rng.permutation(len(objs)):
        o = objs[int(k)]
        info = dict(gripper_pixel=[float(uv[0]), float(uv[1])], gripper_xyz=[float(x) for x in ee])
        if _holding(ep, t, o.name):
            rels = ["holding"]
        else:
            rels = []
            du = uv[0] - o.point[0]
            info["du_px"] = float(du)
            if abs(du) > cfg.relation_margin_frac * W:
                rels.append("left_of" if du < 0 else "right_of")
            if o.xyz is not None:
                dz = float(ee[2] - o.xyz[2])
                info["dz_m"] = dz
                if abs(dz) > cfg.gripper_margin_m:
                    rels.insert(0, "above" if dz > 0 else "below")
        if not rels:
            continue
        target = dict(object=o.name, relations=rels, gripper_loc=coords.point_to_loc(uv, W, H),
                      object_loc=coords.point_to_loc(o.point, W, H), image_size=[W, H], **info)
        return [_sample("gripper_relation", rng, target, coords.fmt_relation(rels), obj=o.name)]
    return []


def goal_text(ep: EpisodeView) -> str | None:
    g = ep.task.get("goal_text")
    if g:
        return str(g).strip().rstrip(".")
    o, tg, fam = ep.task_object, ep.task_target, ep.family
    if not o:
        return None
    if fam == "pick_place" and tg:
        return f"the {o} is at the {tg}"
    if fam == "stack" and tg:
        return f"the {o} is stacked on the {tg}"
    if fam == "pick_up":
        return f"the {o} is held up above the table"
    if fam == "push" and tg:
        return f"the {o} has been pushed to the {tg}"
    return None


def gen_goal(ep: EpisodeView, t: int, cam: str, rng, cfg) -> list[Sample]:
    text = goal_text(ep)
    if not text:
        return []
    target = dict(text=text, family=ep.family, object=ep.task_object, target=ep.task_target)
    return [_sample("goal", rng, target, text, instruction=_instr(ep))]


# ------------------------------------------------------------------------------------ task oriented
def _events(ep: EpisodeView, kind: str) -> list[dict]:
    return [e for e in (ep.seg.events if ep.seg else []) if e["type"] == kind]


def _find_obj(ep: EpisodeView, t: int, cam: str, name: str | None) -> ObjView | None:
    if not name:
        return None
    for o in ep.scene_objects(t, cam) or []:
        if o.name == name:
            return o
    return None


def _affordance(ep: EpisodeView, t: int, cam: str, rng, cfg, kind: str) -> list[Sample]:
    if ep.ee_pos is None or ep.seg is None or not ep.family or ep.success is False:
        return []  # a failed episode does not show where to grasp / place
    if kind == "affordance_place" and ep.family not in ("pick_place", "stack"):
        return []
    if kind == "affordance_grasp" and ep.family == "push":
        return []
    evs = _events(ep, "close" if kind == "affordance_grasp" else "open")
    nxt = [e for e in evs if e["frame"] > t]
    if not nxt:
        return []
    if kind == "affordance_place" and not [c for c in _events(ep, "close") if c["frame"] < nxt[0]["frame"]]:
        return []  # an opening that releases nothing is not a placement
    e = nxt[0]
    f = int(min(e["frame"], ep.num_frames - 1))
    xyz = ep.ee_pos[f]
    W, H = ep.image_sizes[cam]
    uv = _project(ep, cam, xyz, kind)[0]
    if not coords.in_image(uv, W, H):
        return []
    obj_name = ep.task_object or "object"
    ref = ep.task_object if kind == "affordance_grasp" else ep.task_target
    o = _find_obj(ep, t, cam, ref)
    box = _box_of(o, W, H) if o is not None else None
    if kind == "affordance_grasp" and box is not None and not (box[0] <= uv[0] <= box[2] and
                                                                box[1] <= uv[1] <= box[3]):
        return []  # the recorded grasp point is not on the object in this view: do not teach it
    loc = coords.point_to_loc(uv, W, H)
    target = dict(object=obj_name, target=ep.task_target, event_frame=f, event=e["type"],
                  ee_xyz=[float(x) for x in xyz], pixel=[float(uv[0]), float(uv[1])], loc=loc, image_size=[W, H],
                  box_pixel=list(box) if box is not None else None)
    return [_sample(kind, rng, target, coords.fmt_point(loc), obj=obj_name, instruction=_instr(ep))]


def gen_affordance_grasp(ep: EpisodeView, t: int, cam: str, rng, cfg) -> list[Sample]:
    return _affordance(ep, t, cam, rng, cfg, "affordance_grasp")


def gen_affordance_place(ep: EpisodeView, t: int, cam: str, rng, cfg) -> list[Sample]:
    return _affordance(ep, t, cam, rng, cfg, "affordance_place")


def gen_plan(ep: EpisodeView, t: int, cam: str, rng, cfg) -> list[Sample]:
    if ep.seg is None or not ep.seg.segments or ep.success is False:
        return []  # what a failed episode did is not a plan to teach
    first = ep.seg.segments[0]
    if not first.start <= t < first.end:  # the whole plan is asked before the robot started working
        return []
    steps = [s.to_dict() for s in ep.seg.segments]
    target = dict(steps=steps, events=[dict(e) for e in ep.seg.events], family=ep.family)
    return [_sample("plan", rng, target, coords.fmt_plan([s["text"] for s in steps]), instruction=_instr(ep))]


def gen_next_subtask(ep: EpisodeView, t: int, cam: str, rng, cfg) -> list[Sample]:
    if ep.seg is None or not ep.seg.segments or ep.success is False:
        return []
    done = ep.seg.done_frame
    if done is not None and t >= done:
        if t < done + cfg.done_margin:
            return []
        target = dict(text=COMPLETE_TEXT, phase="complete", start=int(done), end=ep.num_frames, frame=int(t))
        return [_sample("next_subtask", rng, target, COMPLETE_TEXT, instruction=_instr(ep))]
    s = ep.seg.segment_at(t)
    if s is None:
        return []
    target = dict(text=s.text, phase=s.phase, start=s.start, end=s.end, frame=int(t))
    return [_sample("next_subtask", rng, target, s.text, instruction=_instr(ep))]


def gen_done(ep: EpisodeView, t: int, cam: str, rng, cfg) -> list[Sample]:
    if ep.seg is None or ep.success is None:
        return []
    d = ep.seg.done_frame
    if ep.success and d is None:
        return []  # successful, but the completion frame could not be found from the signals
    if d is not None and abs(t - d) < cfg.done_margin:
        return []
    done = d is not None and t >= d
    target = dict(done=bool(done), done_frame=d, frame=int(t), success=bool(ep.success))
    return [_sample("done", rng, target, coords.fmt_done(done), instruction=_instr(ep))]


# ------------------------------------------------------------------------------------ action planning
def trajectory_frames(t: int, num_frames: int, horizon: int, n: int) -> list[int] | None:
    """Waypoint frames: n frames evenly spaced from t to t + horizon (clamped to the last frame), rounded."""
    last = min(t + horizon, num_frames - 1)
    if last - t < n - 1:
        return None
    return [int(x) for x in np.floor(np.linspace(t, last, n) + 0.5)]


def gen_trajectory(ep: EpisodeView, t: int, cam: str, rng, cfg) -> list[Sample]:
    if ep.ee_pos is None or ep.state is None:
        return []
    frames = trajectory_frames(t, ep.num_frames, cfg.horizon, cfg.waypoints)
    if frames is None:
        return []
    W, H = ep.image_sizes[cam]
    xyz = ep.ee_pos[frames]
    uv = _project(ep, cam, xyz, "trajectory")
    if not all(coords.in_image(p, W, H) for p in uv):
        return []
    loc = [coords.point_to_loc(p, W, H) for p in uv]
    opening = ep.state[frames, 6]
    grip = [coords.gripper_bit(g) for g in opening]
    seconds = round(cfg.horizon / ep.fps, 1)
    seconds = int(seconds) if float(seconds).is_integer() else seconds
    target = dict(frames=frames, ee_xyz=xyz.tolist(), pixel=uv.tolist(), loc=loc, gripper=grip,
                  opening=[float(g) for g in opening], horizon=int(cfg.horizon), image_size=[W, H])
    answer = coords.fmt_trajectory([[a, b, g] for (a, b), g in zip(loc, grip)])
    return [_sample("trajectory", rng, target, answer, instruction=_instr(ep), n=cfg.waypoints, seconds=seconds)]


GENERATORS: dict[str, Callable[..., list[Sample]]] = {
    "point": gen_point, "box": gen_box, "objects": gen_objects, "relation": gen_relation,
    "gripper_relation": gen_gripper_relation, "goal": gen_goal,
    "affordance_grasp": gen_affordance_grasp, "affordance_place": gen_affordance_place,
    "plan": gen_plan, "next_subtask": gen_next_subtask, "done": gen_done,
    "trajectory": gen_trajectory,
}
NEEDS_CALIBRATION = ("trajectory", "affordance_grasp", "affordance_place")
