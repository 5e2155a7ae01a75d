"""`etc-robot data` (also `etc-vla data`): episode datasets (validate, info, repair, import a
rosbag2 / MCAP recording).

    etc-robot data validate PATH [--shallow]     every schema error, exit 1 if any; "OK: N episodes, M frames"
    etc-robot data info PATH [--json]            summary: spec, episodes per split, tasks, frames, broken episodes
    etc-robot data repair PATH [--deep]          remove crash leftovers, quarantine broken episodes, rebuild meta
    etc-robot data import-bag BAG OUT --image-topic T --joint-topic T [--instruction-topic T | --instruction S]
                                  [--fps 5] [--camera primary] [--size H W] [--split train]
"""
from __future__ import annotations

import argparse
import json
import sys


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_command", metavar="ACTION")

    v = sub.add_parser("validate", help="check a dataset against the schema (exit 1 on errors)")
    v.add_argument("path")
    v.add_argument("--shallow", action="store_true", help="do not decode every image (faster)")
    v.add_argument("--quiet", action="store_true", help="do not print warnings")
    v.set_defaults(func=_validate)

    i = sub.add_parser("info", help="summary of a dataset")
    i.add_argument("path")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=_info)

    r = sub.add_parser("repair", help="remove crash leftovers, quarantine broken episodes, rebuild meta files")
    r.add_argument("path")
    r.add_argument("--deep", action="store_true", help="also decode every image to find damaged ones")
    r.set_defaults(func=_repair)

    b = sub.add_parser("import-bag", help="import a rosbag2 (sqlite3 or MCAP) recording as one episode")
    b.add_argument("bag")
    b.add_argument("out", help="dataset directory (created if absent, appended to otherwise)")
    b.add_argument("--image-topic", required=True, help="sensor_msgs/Image topic (rgb8/bgr8)")
    b.add_argument("--joint-topic", required=True, help="sensor_msgs/JointState topic")
    b.add_argument("--instruction-topic", default=None, help="std_msgs/String topic holding the instruction")
    b.add_argument("--instruction", default=None, help="instruction text (overrides --instruction-topic)")
    b.add_argument("--fps", type=float, default=5.0, help="resampling rate (default 5 Hz, Bridge)")
    b.add_argument("--camera", default="primary", help="camera name in the dataset")
    b.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=None, help="resize images to HxW")
    b.add_argument("--split", default="train")
    b.set_defaults(func=_import_bag)

    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _validate(args) -> int:
    from etc_ros.data.validate import validate_report

    rep = validate_report(args.path, deep=not args.shallow)
    if not args.quiet:
        for w in rep.warnings:
            print(f"warning: {w}", file=sys.stderr)
    for e in rep.errors:
        print(e)
    if rep.errors:
        print(f"FAILED: {len(rep.errors)} error(s) in {args.path}", file=sys.stderr)
        return 1
    print(f"OK: {rep.num_episodes} episodes, {rep.num_frames} frames")
    return 0


def dataset_info(path) -> dict:
    from etc_ros.data.reader import DatasetReader

    r = DatasetReader(path)
    splits: dict[str, int] = {}
    success = {"true": 0, "false": 0, "unknown": 0}
    sources: dict[str, int] = {}
    lengths = []
    for i in r.episodes():
        m = r.episode_meta(i)
        splits[m["split"]] = splits.get(m["split"], 0) + 1
        success["unknown" if m["success"] is None else str(bool(m["success"])).lower()] += 1
        src = str(m["metadata"].get("source", "unknown"))
        sources[src] = sources.get(src, 0) + 1
        lengths.append(m["length"])
    return {
        "path": str(r.root), "spec": r.spec.to_dict(), "episodes": r.num_episodes, "frames": r.num_frames,
        "duration_s": round(r.num_frames / r.spec.fps, 2), "splits": splits, "success": success,
        "sources": sources, "tasks": {str(k): v for k, v in sorted(r.tasks.items())},
        "episode_length": ({"min": min(lengths), "mean": round(sum(lengths) / len(lengths), 2), "max": max(lengths)}
                           if lengths else None),
        "broken_episodes": r.broken_episodes,
    }


def _info(args) -> int:
    d = dataset_info(args.path)
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    s = d["spec"]
    cams = ", ".join(f"{k} {v[0]}x{v[1]} (HxW)" for k, v in s["cameras"].items())
    print(f"{d['path']}: {d['episodes']} episodes, {d['frames']} frames ({d['duration_s']} s at {s['fps']} fps)")
    print(f"  robot {s['robot_type']}; cameras: {cams}; depth: {s['depth']}; "
          f"images: {'mp4 (' + s['video_codec'] + ')' if s['video'] else 'png'}")
    print(f"  splits: {d['splits']}; success: {d['success']}; sources: {d['sources']}")
    if d["episode_length"]:
        print(f"  episode length: {d['episode_length']}")
    print(f"  tasks ({len(d['tasks'])}):")
    for k, v in list(d["tasks"].items())[:20]:
        print(f"    {k}: {v}")
    if len(d["tasks"]) > 20:
        print(f"    ... {len(d['tasks']) - 20} more")
    for i, why in d["broken_episodes"].items():
        print(f"  BROKEN episode {i}: {why}")
    return 0


def _repair(args) -> int:
    from etc_ros.data.repair import repair_dataset

    actions = repair_dataset(args.path, deep=args.deep)
    for a in actions:
        print(a)
    print(f"repaired {args.path}: {len(actions)} action(s); meta files rebuilt")
    return 0


def _import_bag(args) -> int:
    from etc_ros.data.bag_import import import_bag

    idx = import_bag(args.bag, args.out, image_topic=args.image_topic, joint_state_topic=args.joint_topic,
                     instruction_topic=args.instruction_topic, instruction=args.instruction, fps=args.fps,
                     camera=args.camera, image_size=args.size, split=args.split)
    print(f"imported {args.bag} as episode {idx} of {args.out}")
    return 0
