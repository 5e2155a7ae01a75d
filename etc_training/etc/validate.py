"""Automatic checks of every ETC record against ground truth.

Two levels:
1. record-only: schema, category/subtype, the answer parses back to exactly the target numbers, coordinates are
   inside the image and consistent with the target's pixels under the 0..1023 convention, points lie in their
   object's box, trajectory gripper bits match the recorded openings, plans are ordered and contiguous;
2. against the dataset (recomputed independently from the episode): the referenced frame and camera exist,
   trajectories = FK of the recorded joints projected through the episode's calibration (so the first waypoint is
   the gripper's current projection), points / boxes = the dataset's object annotations of that frame,
   affordances = the projected EE at a gripper event, plans agree with the recorded gripper events, 'done'
   agrees with the episode's success and completion frame.

    report = validate_etc("runs/etc")          # {'n_samples', 'n_errors', 'errors', 'errors_by_check', ...}
"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from etc_ros.core.errors import UserError
from etc_ros.core.io import atomic_write_json
from etc_training.etc import coords
from etc_training.etc.mixture import SUBTYPE_CATEGORY
from etc_training.etc.store import (
    episode_id_of,
    load_episode,
    load_index,
    load_samples,
    open_dataset,
    reader_image_sizes,
    resolve_dataset,
)

REQUIRED = ("id", "images", "prompt", "answer", "category", "subtype", "source_episode", "split", "target")
POINT_TOL = 1.0  # loc units (0..1023) allowed between recomputed and written coordinates
PIX_TOL = 0.51  # pixels: point-in-box slack (box corners are pixel coordinates too)


class _Checker:
    def __init__(self):
        self.errors: list[dict] = []
        self.warnings: list[dict] = []
        self.by_check: Counter = Counter()

    def err(self, sid: str, check: str, msg: str) -> None:
        self.by_check[check] += 1
        self.errors.append(dict(id=sid, check=check, message=msg))

    def warn(self, sid: str, check: str, msg: str) -> None:
        self.warnings.append(dict(id=sid, check=check, message=msg))


def _in_box(p, b, tol=PIX_TOL) -> bool:
    return b[0] - tol <= p[0] <= b[2] + tol and b[1] - tol <= p[1] <= b[3] + tol


def _loc_close(a, b, tol=POINT_TOL) -> bool:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= tol))


# ------------------------------------------------------------------------------------------ record-only
def check_record(s: dict, ck: _Checker, cfg: dict | None = None) -> None:
    sid = str(s.get("id", "?"))
    missing = [k for k in REQUIRED if k not in s]
    if missing:
        ck.err(sid, "schema", f"missing keys {missing}")
        return
    st, cat = s["subtype"], s["category"]
    if st not in SUBTYPE_CATEGORY:
        ck.err(sid, "schema", f"unknown subtype {st!r}")
        return
    if SUBTYPE_CATEGORY[st] != cat:
        ck.err(sid, "schema", f"subtype {st} belongs to {SUBTYPE_CATEGORY[st]}, record says {cat}")
    if not isinstance(s["prompt"], str) or not s["prompt"].strip():
        ck.err(sid, "schema", "empty prompt")
    if not isinstance(s["images"], list) or not s["images"]:
        ck.err(sid, "schema", "no image reference")
        return
    for ref in s["images"]:
        if not isinstance(ref, dict) or not all(k in ref for k in ("episode", "frame", "camera", "dataset")):
            ck.err(sid, "schema", f"image reference needs episode, frame, camera, dataset: {ref!r}")
            return
    tg = s["target"]
    try:
        want = coords.answer_values(st, tg)
    except (KeyError, TypeError, ValueError) as e:
        ck.err(sid, "target", f"target lacks what the answer is made from: {e!r}")
        return
    got = coords.parse_answer(st, s["answer"])
    if got is None:
        ck.err(sid, "parse", f"answer does not parse as {st}: {s['answer']!r}")
        return
    if got != want:
        ck.err(sid, "parse", f"answer parses to {got!r}, target says {want!r}")
    size = tg.get("image_size")
    if st in ("point", "affordance_grasp", "affordance_place", "box", "trajectory", "objects", "relation",
              "gripper_relation"):
        if not (isinstance(size, list) and len(size) == 2 and size[0] > 0 and size[1] > 0):
            ck.err(sid, "target", f"image_size missing or bad: {size!r}")
            return
    W, H = (size or [0, 0])[:2]
    frame = int(s["images"][0]["frame"])
    if st in ("point", "affordance_grasp", "affordance_place"):
        if not coords.in_image(tg["pixel"], W, H):
            ck.err(sid, "in_image", f"point {tg['pixel']} outside the {W}x{H} image")
        if coords.point_to_loc(tg["pixel"], W, H) != list(tg["loc"]):
            ck.err(sid, "convention", f"loc {tg['loc']} != convention({tg['pixel']})")
        if tg.get("box_pixel") and st != "affordance_place" and not _in_box(tg["pixel"], tg["box_pixel"]):
            ck.err(sid, "on_object", f"point {tg['pixel']} not inside the {tg.get('object')} box {tg['box_pixel']}")
    elif st == "box":
        b = tg["pixel"]
        if not (coords.in_image(b[:2], W, H) and coords.in_image(b[2:], W, H)) or b[0] > b[2] or b[1] > b[3]:
            ck.err(sid, "in_image", f"box {b} not a proper box inside the {W}x{H} image")
        if coords.box_to_loc(b, W, H) != list(tg["loc"]):
            ck.err(sid, "convention", f"loc {tg['loc']} != convention({b})")
        if tg.get("point_pixel") and not _in_box(tg["point_pixel"], b):
            ck.err(sid, "on_object", f"object point {tg['point_pixel']} not inside its box {b}")
    elif st == "trajectory":
        frames, loc, grip = tg["frames"], tg["loc"], tg["gripper"]
        n = (cfg or {}).get("waypoints")
        if n is not None and len(loc) != n:
            ck.err(sid, "trajectory", f"{len(loc)} waypoints, config says {n}")
        if frames[0] != frame:
            ck.err(sid, "trajectory_start", f"first waypoint frame {frames[0]} != image frame {frame}")
        if any(b < a for a, b in zip(frames, frames[1:])):
            ck.err(sid, "trajectory", f"waypoint frames not increasing: {frames}")
        for p, lc in zip(tg["pixel"], loc):
            if not coords.in_image(p, W, H):
                ck.err(sid, "in_image", f"waypoint {p} outside the {W}x{H} image")
                break
            if coords.point_to_loc(p, W, H) != list(lc):
                ck.err(sid, "convention", f"waypoint loc {lc} != convention({p})")
                break
        if [coords.gripper_bit(g) for g in tg["opening"]] != list(grip):
            ck.err(sid, "trajectory_gripper", f"gripper bits {grip} disagree with openings {tg['opening']}")
    elif st == "objects":
        xs = [lc[0] for lc in tg["loc"]]
        if xs != sorted(xs):
            ck.err(sid, "objects_order", f"objects not listed left to right: {xs}")
    elif st == "relation":
        du = tg["subject_loc"][0] - tg["reference_loc"][0]
        rels = tg["relations"]
        if ("left_of" in rels and du > 0) or ("right_of" in rels and du < 0):
            ck.err(sid, "relation", f"left/right relation {rels} contradicts the image columns (du={du})")
    elif st == "gripper_relation":
        rels = tg["relations"]
        du = tg["gripper_loc"][0] - tg["object_loc"][0]
        if ("left_of" in rels and du > 0) or ("right_of" in rels and du < 0):
            ck.err(sid, "relation", f"gripper left/right {rels} contradicts the image columns (du={du})")
        dz = tg.get("dz_m")
        if dz is not None and (("above" in rels and dz <= 0) or ("below" in rels and dz >= 0)):
            ck.err(sid, "relation", f"gripper above/below {rels} contradicts dz={dz}")
    elif st == "plan":
        steps = tg["steps"]
        for a, b in zip(steps, steps[1:]):
            if a["end"] != b["start"]:
                ck.err(sid, "plan_order", f"plan steps not contiguous: {a} then {b}")
                break
        if steps and steps[0]["start"] != 0:
            ck.err(sid, "plan_order", "plan does not start at frame 0")
    elif st == "next_subtask":
        if tg["phase"] != "complete" and not tg["start"] <= tg["frame"] < tg["end"]:
            ck.err(sid, "next_subtask", f"frame {tg['frame']} outside the subtask [{tg['start']}, {tg['end']})")
        if tg["frame"] != frame:
            ck.err(sid, "next_subtask", f"target frame {tg['frame']} != image frame {frame}")
    elif st == "done":
        d = tg["done_frame"]
        exp = d is not None and frame >= d
        if bool(tg["done"]) != exp:
            ck.err(sid, "done", f"done={tg['done']} but frame {frame} vs completion frame {d}")
        if tg["done"] and not tg["success"]:
            ck.err(sid, "done", "a failed episode is never done")


# ------------------------------------------------------------------------------------------ dataset checks
class _Episodes:
    def __init__(self, etc_dir: Path, reader=None, dataset: str | Path | None = None, cfg: dict | None = None):
        self.etc_dir = etc_dir
        self.reader = reader
        self.dataset = dataset
        self._readers: dict[str, Any] = {}
        self._cache: tuple[tuple[str, int], Any] | None = None
        self.cfg = cfg or {}
        self._ann: dict | None = None

    def reader_for(self, ref: str):
        if self.reader is not None:
            return self.reader
        path = Path(self.dataset) if self.dataset is not None else resolve_dataset(ref, self.etc_dir)
        key = str(path)
        if key not in self._readers:
            self._readers[key] = open_dataset(path)
        return self._readers[key]

    def view(self, ref: str, episode: int):
        key = (ref, int(episode))
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        from etc_training.etc.episode import make_view

        r = self.reader_for(ref)
        meta = {}
        try:
            meta = dict(r.episode_meta(int(episode)) or {})
        except Exception:  # noqa: BLE001
            pass
        ep = load_episode(r, int(episode))
        eid = episode_id_of(meta, int(episode))
        ann = None
        if self.cfg.get("annotations"):
            from etc_training.etc.annotate import annotations_for, load_annotations

            if self._ann is None:
                self._ann = load_annotations(self.cfg["annotations"])
            ann = annotations_for(self._ann, int(episode), eid)
        seg = None
        if isinstance(self.cfg.get("segment"), dict):
            from etc_ros.core.config import from_dict
            from etc_training.etc.segment import SegmentParams

            seg = from_dict(SegmentParams, self.cfg["segment"])
        v = make_view(ep, int(episode), ref, meta=meta, annotations=ann, seg_params=seg, episode_id=eid,
                      image_sizes=reader_image_sizes(r))
        self._cache = (key, v)
        return v


def check_against_episode(s: dict, v, ck: _Checker, tol_frames: int = 3) -> None:
    sid, st, tg = s["id"], s["subtype"], s["target"]
    ref = s["images"][0]
    t, cam = int(ref["frame"]), ref["camera"]
    if not 0 <= t < v.num_frames:
        ck.err(sid, "image_ref", f"frame {t} outside episode {ref['episode']} (0..{v.num_frames - 1})")
        return
    if cam not in v.image_sizes:
        ck.err(sid, "image_ref", f"camera {cam!r} not in episode {ref['episode']} ({sorted(v.image_sizes)})")
        return
    if s["source_episode"] != v.episode_id:
        ck.err(sid, "image_ref", f"source_episode {s['source_episode']} != episode id {v.episode_id}")
    if s["split"] != v.split:
        ck.err(sid, "split", f"record split {s['split']!r} != episode split {v.split!r}")
    W, H = v.image_sizes[cam]
    size = tg.get("image_size")
    if size is not None and list(size) != [W, H]:
        ck.err(sid, "image_size", f"target image_size {size} != stored image size {[W, H]}")
        return
    if st == "trajectory":
        if v.state is None:
            ck.err(sid, "trajectory", "episode has no joint states")
            return
        if cam not in v.cameras:
            ck.err(sid, "calibration", f"trajectory record but episode has no calibration for {cam!r}")
            return
        frames = tg["frames"]
        xyz = v.ee_pos[frames]
        if not np.allclose(xyz, np.asarray(tg["ee_xyz"]), atol=1e-4):
            ck.err(sid, "trajectory_fk", "waypoint positions differ from FK of the recorded joints")
        uv, _ = v.cameras[cam].project(xyz)
        loc = [coords.point_to_loc(p, W, H) for p in uv]
        if not _loc_close(loc, tg["loc"]):
            ck.err(sid, "trajectory_projection", f"recomputed waypoints {loc} != {tg['loc']}")
        cur = coords.point_to_loc(v.cameras[cam].project(v.ee_pos[t][None])[0][0], W, H)
        if not _loc_close(cur, coords.parse_answer("trajectory", s["answer"])[0][:2]):
            ck.err(sid, "trajectory_start", f"trajectory does not start at the gripper's current projection {cur}")
        bits = [coords.gripper_bit(g) for g in v.state[frames, 6]]
        if bits != list(tg["gripper"]):
            ck.err(sid, "trajectory_gripper", f"gripper bits {tg['gripper']} != recorded {bits}")
        if v.ee_pose_recorded is not None:
            d = float(np.abs(v.ee_pose_recorded[frames, :3] - xyz).max())
            if d > 0.005:
                ck.warn(sid, "fk_vs_recorded_ee", f"FK differs from the recorded ee_pose by {d * 1000:.1f} mm")
    elif st in ("point", "box"):
        objs = {o.name: o for o in (v.scene_objects(t, cam) or [])}
        o = objs.get(tg["object"])
        if o is None:
            ck.err(sid, "on_object", f"no object {tg['object']!r} at frame {t} camera {cam}")
            return
        if st == "point":
            if o.point is None or not np.allclose(o.point, tg["pixel"], atol=1e-3):
                ck.err(sid, "on_object", f"point {tg['pixel']} != annotated {o.point}")
            if o.box is not None and not _in_box(tg["pixel"], o.box):
                ck.err(sid, "on_object", f"point {tg['pixel']} outside the {o.name} box {list(o.box)}")
        else:
            if o.box is None:
                ck.err(sid, "on_object", f"object {o.name} has no box at frame {t}")
            else:
                b = [max(-0.5, o.box[0]), max(-0.5, o.box[1]), min(W - 0.5, o.box[2]), min(H - 0.5, o.box[3])]
                if not np.allclose(b, tg["pixel"], atol=1e-3):
                    ck.err(sid, "on_object", f"box {tg['pixel']} != annotated {b}")
    elif st == "objects":
        vis = sorted(o.name for o in (v.scene_objects(t, cam) or []) if o.visible and o.point is not None
                     and coords.in_image(o.point, W, H))
        if sorted(tg["names"]) != vis:
            ck.err(sid, "objects", f"listed {sorted(tg['names'])} but visible objects are {vis}")
    elif st in ("affordance_grasp", "affordance_place"):
        if cam not in v.cameras or v.ee_pos is None:
            ck.err(sid, "calibration", f"{st} record but no calibration / joints for {cam!r}")
            return
        f = int(tg["event_frame"])
        uv = v.cameras[cam].project(v.ee_pos[f][None])[0][0]
        if not _loc_close(coords.point_to_loc(uv, W, H), tg["loc"]):
            ck.err(sid, "affordance",
                   f"projected EE at frame {f} is {coords.point_to_loc(uv, W, H)}, record {tg['loc']}")
        kind = "close" if st == "affordance_grasp" else "open"
        recorded = v.metadata.get("gripper_events")
        evs = recorded if isinstance(recorded, list) else (v.seg.events if v.seg else [])
        if not any(e["type"] == kind and abs(int(e["frame"]) - f) <= tol_frames for e in evs):
            ck.err(sid, "affordance_event", f"no recorded {kind} event near frame {f}")
        if f <= t:
            ck.err(sid, "affordance_event", f"{kind} event frame {f} is not after the image frame {t}")
        if st == "affordance_grasp":
            o = {x.name: x for x in (v.scene_objects(t, cam) or [])}.get(tg["object"])
            if o is not None and o.box is not None and not _in_box(uv, o.box):
                ck.err(sid, "on_object", f"grasp point {list(uv)} outside the {o.name} box {list(o.box)}")
    elif st == "plan":
        steps = tg["steps"]
        if steps and steps[-1]["end"] != v.num_frames:
            ck.err(sid, "plan_order", f"plan ends at {steps[-1]['end']}, episode has {v.num_frames} frames")
        recorded = v.metadata.get("gripper_events")
        if isinstance(recorded, list) and v.family != "push":  # push plans come from motion, not the gripper
            closes = [int(e["frame"]) for e in recorded if e["type"] == "close"]
            opens = [int(e["frame"]) for e in recorded if e["type"] == "open"]
            grasps = [x["start"] for x in steps if x["phase"] == "grasp"]
            releases = [x["start"] for x in steps if x["phase"] == "release"]
            if len(grasps) != len(closes) or any(abs(a - b) > tol_frames for a, b in zip(grasps, closes)):
                ck.err(sid, "plan_events", f"grasp steps at {grasps} vs recorded close events {closes}")
            if len(releases) != len(opens) or any(abs(a - b) > tol_frames for a, b in zip(releases, opens)):
                ck.err(sid, "plan_events", f"release steps at {releases} vs recorded open events {opens}")
    elif st == "done":
        if v.success is None or bool(tg["success"]) != bool(v.success):
            ck.err(sid, "done", f"success {tg['success']} != episode success {v.success}")
        if v.seg is not None and tg["done_frame"] != v.seg.done_frame:
            ck.err(sid, "done", f"completion frame {tg['done_frame']} != recomputed {v.seg.done_frame}")


def validate_etc(etc_dir: str | Path, *, reader=None, dataset: str | Path | None = None,
                 check_dataset: bool = True, max_errors: int = 200, write_report: bool = True,
                 progress: bool = True) -> dict:
    """Check every record of an ETC directory; returns a report (n_errors == 0 on good data)."""
    etc_dir = Path(etc_dir)
    idx = load_index(etc_dir)
    cfg = idx.get("config", {})
    ck = _Checker()
    samples = load_samples(etc_dir)
    ids = Counter(s.get("id") for s in samples)
    for k, c in ids.items():
        if c > 1:
            ck.err(str(k), "schema", f"id appears {c} times")
    for s in samples:
        check_record(s, ck, cfg)
    n_checked_ds = 0
    if check_dataset and samples:
        eps = _Episodes(etc_dir, reader, dataset, cfg)
        groups: dict[tuple[str, int], list[dict]] = defaultdict(list)
        for s in samples:
            if isinstance(s.get("images"), list) and s["images"] and isinstance(s["images"][0], dict):
                r = s["images"][0]
                groups[(str(r.get("dataset")), int(r.get("episode", -1)))].append(s)
        tol = int(cfg.get("event_tolerance", 3))
        import sys

        from tqdm import tqdm

        for (ref, ep), group in tqdm(sorted(groups.items()), desc="etc validate", unit="ep",
                                     disable=not (progress and sys.stderr.isatty())):
            try:
                v = eps.view(ref, ep)
            except UserError as e:
                for s in group:
                    ck.err(s["id"], "image_ref", f"cannot load episode {ep} of {ref}: {e}")
                continue
            for s in group:
                if s.get("subtype") in SUBTYPE_CATEGORY and "target" in s:
                    try:
                        check_against_episode(s, v, ck, tol)
                    except (KeyError, TypeError, IndexError, ValueError) as e:
                        ck.err(s["id"], "target", f"malformed target ({type(e).__name__}: {e})")
                    n_checked_ds += 1
    report = dict(
        etc_dir=str(etc_dir), n_samples=len(samples), n_checked_against_dataset=n_checked_ds,
        n_errors=len(ck.errors), errors_by_check=dict(ck.by_check), errors=ck.errors[:max_errors],
        n_warnings=len(ck.warnings), warnings=ck.warnings[:max_errors],
        by_subtype=dict(Counter(s.get("subtype") for s in samples)),
    )
    if write_report:
        atomic_write_json(etc_dir / "validation.json", report)
    return report


def format_report(rep: dict) -> str:
    lines = [f"{rep['n_samples']} ETC records checked ({rep['n_checked_against_dataset']} against the dataset): "
             f"{rep['n_errors']} errors, {rep['n_warnings']} warnings"]
    for k, v in sorted(rep["errors_by_check"].items()):
        lines.append(f"  {k}: {v}")
    for e in rep["errors"][:20]:
        lines.append(f"  - {e['id']} [{e['check']}] {e['message']}")
    return "\n".join(lines)


__all__ = ["validate_etc", "format_report", "check_record", "check_against_episode"]
