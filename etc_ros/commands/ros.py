"""`etc-robot ros ...` (also `etc-vla ros`): the ROS 2 graph without `ros2 launch` (no rclpy import here:
etc_ros.nodes does it).

    etc-robot ros bringup --config config/ros_bringup.yaml [key=value ...]   # same nodes + YAML as the launch file
    etc-robot ros say "pick up the red block"                               # prints accepted / rejected: reason
    etc-robot ros estop | reset-estop | dry-run on|off
    etc-robot ros plan --config FILE                                        # which nodes/parameters would start
    etc-robot ros params [--write]                 # config/ros_<node>.yaml vs graph.PARAMS (--write: regenerate)
"""
from __future__ import annotations

import argparse
import json


def register(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="ros_command", metavar="ACTION")
    b = sub.add_parser("bringup", help="start the node graph in this process (MultiThreadedExecutor)")
    b.add_argument("--config", default=None, help="bringup YAML (default: config/ros_bringup.yaml)")
    b.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    b.add_argument("overrides", nargs="*", help="key=value overrides, e.g. use_sim=false driver_backend=fake")
    b.set_defaults(func=_bringup)

    pl = sub.add_parser("plan", help="print the executables, nodes and parameters the config would start")
    pl.add_argument("--config", default=None)
    pl.add_argument("overrides", nargs="*")
    pl.set_defaults(func=_plan)

    pa = sub.add_parser("params", help="check (or --write) the config/ros_<node>.yaml files generated from "
                                       "etc_ros/nodes/graph.py PARAMS")
    pa.add_argument("--write", action="store_true", help="rewrite the files that differ")
    pa.add_argument("--dir", default=None, help="directory of the files (default: the package's config/)")
    pa.set_defaults(func=_params)

    s = sub.add_parser("say", help="send an instruction; prints accepted or rejected with the reason")
    s.add_argument("text", help="the instruction")
    s.add_argument("--node", default="/instruction_node")
    s.add_argument("--timeout", type=float, default=5.0)
    s.set_defaults(func=_say)

    for name, hlp in (("estop", "latch the safety e-stop"), ("reset-estop", "clear a latched e-stop")):
        e = sub.add_parser(name, help=hlp)
        e.add_argument("--node", default="/safety_node")
        e.add_argument("--timeout", type=float, default=5.0)
        e.set_defaults(func=_trigger, service=name.replace("-", "_"))

    d = sub.add_parser("dry-run", help="switch the safety node's dry run on or off")
    d.add_argument("state", choices=["on", "off"])
    d.add_argument("--node", default="/safety_node")
    d.add_argument("--timeout", type=float, default=5.0)
    d.set_defaults(func=_dry_run)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _config(args):
    from etc_ros.core.config import load_config
    from etc_ros.core.paths import config_path
    from etc_ros.nodes.graph import BringupConfig

    path = args.config if args.config else config_path("ros_bringup.yaml")
    return load_config(BringupConfig, path, args.overrides)


def _bringup(args) -> int:
    from dataclasses import replace

    from etc_ros.nodes.bringup import run_bringup

    cfg = _config(args)
    if args.duration is not None:
        cfg = replace(cfg, duration_s=float(args.duration))
    return run_bringup(cfg)


def _plan(args) -> int:
    from etc_ros.nodes.graph import node_parameters, plan_graph

    cfg = _config(args)
    out = []
    for plan in plan_graph(cfg.launch_args()):
        for node in plan.nodes:
            extra = {**plan.overrides.get(node, {}), **(cfg.params or {}).get(node, {})}
            out.append({"executable": plan.executable, "node": node,
                        "parameters": node_parameters(node, plan.param_files, extra)})
    print(json.dumps(out, indent=2))
    return 0


def _params(args) -> int:
    from etc_ros.nodes.graph import param_files_out_of_date

    stale = param_files_out_of_date(args.dir, write=args.write)
    for f in stale:
        print(f"{'wrote' if args.write else 'out of date'}: {f}")
    if not stale:
        print("parameter files match etc_ros/nodes/graph.py PARAMS")
    return 0 if (args.write or not stale) else 1


def _say(args) -> int:
    from etc_ros.nodes.tools import say

    ok, reason = say(args.text, node=args.node, timeout=args.timeout)
    if ok:
        print(f"accepted: {args.text.strip()}")
        return 0
    print(reason if reason.startswith("rejected") else f"rejected: {reason}")
    return 1


def _trigger(args) -> int:
    from etc_ros.nodes.tools import trigger

    ok, msg = trigger(f"{args.node.rstrip('/')}/{args.service}", timeout=args.timeout)
    print(("ok: " if ok else "failed: ") + msg)
    return 0 if ok else 1


def _dry_run(args) -> int:
    from etc_ros.nodes.tools import set_bool

    ok, msg = set_bool(f"{args.node.rstrip('/')}/dry_run", args.state == "on", timeout=args.timeout)
    print(("ok: " if ok else "failed: ") + msg)
    return 0 if ok else 1


