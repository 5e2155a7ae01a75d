"""The node graph as data (pure: no rclpy), shared by launch/widowx.launch.py and `etc-vla ros bringup`.

- TOPICS / SERVICES: every name the nodes use.
- PARAMS: every parameter each node declares, with its default and comment, written once. NODE_PARAMS (the
  defaults: the nodes declare exactly these) and the config/ros_<node>.yaml files (param_file_text; written by
  `etc-vla ros params --write`, checked by a test) are derived from it.
- plan_graph(args): which executables and nodes to start for the launch arguments, with their parameter
  files and the overrides the arguments imply. The launch file and the in-process bringup both call it, so
  they start the same nodes with the same YAML.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etc_ros.core import spec as robot_spec
from etc_ros.core.errors import UserError


class GraphConfigError(UserError):
    pass


# ------------------------------------------------------------------------------------------------ names
def image_topic(camera: str) -> str:
    return f"/camera/{camera}/image_raw"


def camera_info_topic(camera: str) -> str:
    return f"/camera/{camera}/camera_info"


def depth_topic(camera: str) -> str:
    return f"/camera/{camera}/aligned_depth_to_color/image_raw"


TOPICS = {
    "joint_states": "/joint_states",  # sensor_msgs/JointState, driver -> all (>= 50 Hz)
    "instruction": "/instruction",  # std_msgs/String, operator -> instruction_node
    "instruction_accepted": "/instruction/accepted",  # std_msgs/String (transient local), -> policy_node
    "instruction_status": "/instruction/status",  # std_msgs/String 'accepted: ...' / 'rejected: ...'
    "action_chunk": "/policy/action_chunk",  # trajectory_msgs/JointTrajectory, policy -> safety
    "joint_command": "/safety/joint_command",  # trajectory_msgs/JointTrajectory (1 point), safety -> driver
    "driver_ready": "/driver/ready",  # std_msgs/Bool (transient local), driver -> safety
    "sim_success": "/sim/success",  # std_msgs/Bool, sim_world -> anyone
    "diagnostics": "/diagnostics",  # diagnostic_msgs/DiagnosticArray, all nodes, 1 Hz
}
# services are private to their node: /<node>/<name>
SERVICES = {
    "safety_node": {"estop": "std_srvs/Trigger", "reset_estop": "std_srvs/Trigger", "dry_run": "std_srvs/SetBool"},
    "instruction_node": {"set_parameters": "rcl_interfaces/SetParameters (parameter 'instruction')",
                         "clear": "std_srvs/Trigger"},
    "sim_world": {"reset": "std_srvs/Trigger"},
}
COMMAND_JOINT_NAMES: tuple[str, ...] = robot_spec.JOINT_NAMES + ("gripper",)  # joint_command layout
JOINT_STATE_NAMES: tuple[str, ...] = robot_spec.JOINT_NAMES + ("left_finger", "right_finger")

# ------------------------------------------------------------------------------------------------ parameters
@dataclass(frozen=True)
class Param:
    """One node parameter: its default and the comment written beside it in config/ros_<node>.yaml."""

    default: Any
    doc: str = ""


# The single written source of every node parameter. NODE_PARAMS (the defaults the nodes declare) and the
# config/ros_<node>.yaml files (what `ros2 launch` and the in-process bringup pass to the nodes) are both derived
# from it: `etc-vla ros params --write` regenerates the files and a test fails when a file is not exactly what
# param_file_text() produces. Python is the source rather than the YAML because the nodes, the launch file and
# the tests import these defaults on every machine (pip install, ament install, tests) without locating config/,
# and defaults can name the shared spec constants (robot_spec.POLICY_HZ, robot_spec.SERVO_HZ, ...) instead of copies.
# To change a value on one robot, do not edit the package's files: pass a directory of your own with
# params_dir:=DIR, or single values with `params:` in config/ros_bringup.yaml.
PARAMS: dict[str, dict[str, Param]] = {
    "camera_node": {
        "camera_type": Param("realsense", "realsense | opencv | sim | fake (launch arg camera_type overrides)"),
        "camera_name": Param("primary", "topics /camera/<camera_name>/{image_raw,camera_info}"),
        "frame_id": Param("camera_color_optical_frame"),
        "width": Param(640),
        "height": Param(480),
        "fps": Param(30.0, "the simulated camera renders at most this often"),
        "depth": Param(False, "RealSense: also publish depth aligned to color (16UC1, mm)"),
        "serial": Param("", 'RealSense serial number ("" = the first one found)'),
        "device": Param("0", "OpenCV: camera index or /dev/videoN"),
        "calibration": Param("", "optional camera model file (JSON/YAML with intrinsics and T_base_cam, etc-vla "
                                 "calibrate output)"),
        "backoff_initial": Param(0.1, "s, reconnect backoff (doubles up to backoff_max)"),
        "backoff_max": Param(2.0),
        "diagnostics_hz": Param(1.0),
    },
    "instruction_node": {
        "instruction": Param("", 'set at run time: etc-vla ros say "..." / ros2 param set; validated, rejected '
                                 "with a reason"),
        "max_chars": Param(200),
        "diagnostics_hz": Param(1.0),
    },
    "policy_node": {
        "policy_bundle": Param("", "bundle directory (etc-vla export) or fake:<hold|circle|busy>"),
        "runtime_backend": Param("onnxruntime"),
        "providers": Param("", 'onnxruntime execution providers in priority order: "" = CPU, cuda, tensorrt,cuda '
                               "(launch arg providers:=...); the node refuses to start when one is missing (no "
                               "CPU fallback)"),
        "cameras": Param("", 'comma-separated camera names; "" = the bundle\'s cameras'),
        "max_rate_hz": Param(robot_spec.POLICY_HZ, "at most one inference per new observation, at most this often"),
        "max_observation_age": Param(robot_spec.MAX_OBSERVATION_AGE, "s; older observations are not sent to the model"),
        "diagnostics_hz": Param(1.0),
    },
    "safety_node": {
        "servo_hz": Param(robot_spec.SERVO_HZ, "control ticks per second: joint commands to the driver (named "
                                         "control_hz before; a bundle's control_hz is the policy rate)"),
        "policy_hz": Param(robot_spec.POLICY_HZ, "rate of the policy's actions (chunks at another rate are rejected)"),
        "mode": Param("receding", "receding (the first 5 actions of a chunk, then the newest chunk) | ensemble "
                                  "(ACT). Measured, shipped pick_up policy, 50 scenes, executor in sim time, 0.1 s "
                                  "latency: receding 24/50, ensemble 19/50 (direct rollout 28/50): the policy was "
                                  "trained and scored executing 5 actions per chunk"),
        "align": Param("arrival", "arrival: a chunk's first action runs at the first policy step not begun when it "
                                  "arrives (as in etc-vla eval) | observation: at the step of its camera stamp"),
        "dry_run": Param(False, "compute and report commands but never send them; launch arg dry_run overrides; "
                                "also service ~/dry_run (std_srvs/SetBool)"),
        "safety_config": Param("", '"" = config/safety.yaml of the package'),
        "camera_name": Param("primary", "camera whose frames must be fresh (camera_timeout)"),
        "diagnostics_hz": Param(1.0),
    },
    "driver_node": {
        "backend": Param("interbotix", "interbotix | sim | fake (launch args use_sim / driver_backend override)"),
        "robot_model": Param(robot_spec.ROBOT_MODEL),
        "publish_hz": Param(100.0, "/joint_states rate (>= servo_hz)"),
        "start_pose": Param("ready", "ready | home | sleep | none: smooth move there before accepting commands"),
        "stop_pose": Param("sleep", "on shutdown"),
        "speed_fraction": Param(0.3, "start/stop moves at this fraction of the velocity/acceleration limits"),
        "moving_time": Param(0.04, "servo time-based profile of each streamed goal [s] (interbotix and sim): about "
                                   "two periods of the 50 Hz command stream; a 0.2-0.25 s profile restarted every "
                                   "20 ms makes the arm trail its commands by ~1 s (sim: 0/10 scenes, 5/10 with "
                                   "0.04 s)"),
        "accel_time": Param(0.02, "acceleration time of that profile [s]"),
        "gripper_mode": Param("position", "position: the commanded opening is the gripper's set point (xs_sdk "
                                          "linear_position mode), as the simulated gripper the policy was trained "
                                          "on | binary: PWM grasp / release when the opening crosses 0.5 (also on "
                                          "sim/fake, to try it in simulation)"),
        "fake_tau": Param(0.05, "fake backend: first-order time constant [s]"),
        "safety_config": Param("", '"" = config/safety.yaml (limits of the command guard)'),
        "diagnostics_hz": Param(1.0),
    },
    "sim_world": {
        "sim_env": Param("etc_training.sim:SimEnv", "module:callable building the world (imported lazily)"),
        "seed": Param(0, "episode seed of the first reset; each ~/reset takes the next one"),
        "split": Param("train"),
        "family": Param("", 'task family of every episode ("" = the world\'s mix)'),
        "announce_instruction": Param(True, "publish each episode's instruction on /instruction"),
        "success_hz": Param(2.0, "/sim/success rate"),
    },
}
NODE_PARAMS: dict[str, dict[str, Any]] = {  # node -> {parameter: default}: what each node declares
    node: {name: p.default for name, p in params.items()} for node, params in PARAMS.items()}
PARAM_FILE_HEADERS = {  # node -> first comment line of its config/ros_<node>.yaml
    "camera_node": "camera_node (and the simulated camera inside sim_robot).",
    "instruction_node": "instruction_node: validates operator instructions (etc_ros/core/instruction.py).",
    "policy_node": "policy_node: runs the policy bundle in a worker thread and publishes action chunks.",
    "safety_node": "safety_node: SafetyExecutor (etc_ros/safety) at servo_hz; limits from safety_config "
                   "(config/safety.yaml).",
    "driver_node": "driver_node (and the simulated driver inside sim_robot).",
    "sim_world": "sim_world (inside sim_robot, use_sim:=true): the MuJoCo world shared by the simulated driver and "
                 "camera.",
}
RENAMED_PARAMS: dict[str, dict[str, str]] = {  # node -> {old parameter name: new name}; the old name is refused
    "safety_node": {"control_hz": "servo_hz"},  # it was the 50 Hz tick, while a bundle's control_hz is the 5 Hz policy
}


def check_renamed(node: str, names, where: str = "") -> None:
    """Refuse a parameter that was renamed, naming its new name (a silent default would hide the setting)."""
    for old, new in RENAMED_PARAMS.get(node, {}).items():
        if old in names:
            raise GraphConfigError(f"{where}{node}: parameter {old!r} was renamed to {new!r}; rename it in your "
                                   f"parameter file / overrides")


PARAM_FILES = {  # node -> its file in config/
    "camera_node": "ros_camera.yaml",
    "instruction_node": "ros_instruction.yaml",
    "policy_node": "ros_policy.yaml",
    "safety_node": "ros_safety.yaml",
    "driver_node": "ros_driver.yaml",
    "sim_world": "ros_sim.yaml",
}
PARAM_FILE_NOTE = ("Generated from etc_ros/nodes/graph.py PARAMS by `etc-vla ros params --write`: change defaults "
                   "there. For one robot, pass your own files (params_dir:=DIR) or ros_bringup.yaml `params:`.")
_KEY_WIDTH = 28  # value column of the generated files: "    key: value" padded to 4 + 28, then "# doc"
_LINE_WIDTH = 116
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "y", "n", "null", "~"}


def _yaml_value(v: Any) -> str:
    """A parameter default as a YAML scalar that reads back as the same value and type."""
    import json
    import re

    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        plain = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_./-]*", v) and v.lower() not in _YAML_WORDS
        return v if plain else json.dumps(v)
    raise GraphConfigError(f"parameter default {v!r} is not a bool, number or string")


def param_file_text(node: str) -> str:
    """The text of config/ros_<node>.yaml, generated from PARAMS[node] (defaults and their comments)."""
    import textwrap

    if node not in PARAMS:
        raise GraphConfigError(f"unknown node {node!r}; known: {sorted(PARAMS)}")
    lines = ["# " + ln for ln in textwrap.wrap(PARAM_FILE_HEADERS[node], _LINE_WIDTH - 2)]
    lines += ["# " + ln for ln in textwrap.wrap(PARAM_FILE_NOTE, _LINE_WIDTH - 2)]
    lines += [f"{node}:", "  ros__parameters:"]
    for name, p in PARAMS[node].items():
        entry = f"    {name}: {_yaml_value(p.default)}"
        if not p.doc:
            lines.append(entry)
            continue
        col = max(4 + _KEY_WIDTH, len(entry) + 2)
        doc = textwrap.wrap(p.doc, _LINE_WIDTH - col - 2)
        lines.append(entry.ljust(col) + "# " + doc[0])
        lines += [" " * col + "# " + ln for ln in doc[1:]]
    return "\n".join(lines) + "\n"


def param_files_out_of_date(directory: str | Path | None = None, write: bool = False) -> list[Path]:
    """The config/ros_<node>.yaml files (of `directory`, default the package's config/) that differ from
    param_file_text(); with write=True they are rewritten. Returns the files that differed."""
    d = Path(directory) if directory is not None else params_dir()
    stale = []
    for node, fname in PARAM_FILES.items():
        f = d / fname
        text = param_file_text(node)
        if not f.is_file() or f.read_text() != text:
            stale.append(f)
            if write:
                f.write_text(text)
    return stale


EXECUTABLES = {  # executable -> nodes it hosts (console_scripts in setup.py)
    "camera_node": ("camera_node",),
    "instruction_node": ("instruction_node",),
    "policy_node": ("policy_node",),
    "safety_node": ("safety_node",),
    "driver_node": ("driver_node",),
    "sim_robot": ("sim_world", "driver_node", "camera_node"),
}
PARK_GRACE_S = 15.0  # s a driver process gets after the first stop signal to park the arm (a 4-6 s move)
LAUNCH_ARGS: dict[str, str] = {  # launch argument -> default (strings, as launch passes them)
    "robot_model": robot_spec.ROBOT_MODEL,
    "use_sim": "false",
    "policy_bundle": "",
    "camera_type": "realsense",
    "dry_run": "false",
    "driver_backend": "",  # '' = interbotix (use_sim:=false) / sim (use_sim:=true); 'fake' for tests
    "params_dir": "",  # '' = the package's config/
    "providers": "",  # policy_node execution providers ('' = the parameter file's: CPU), e.g. cuda or tensorrt,cuda
    "xs_sdk": "false",  # true: also start Interbotix's xs_sdk (interbotix_xsarm_control) with our operating modes
}
XS_SDK_MODES = "interbotix_modes.yaml"  # config/ file passed to xsarm_control.launch.py as mode_configs


def _as_bool(v: Any, name: str) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes", "on"):
        return True
    if s in ("false", "0", "no", "off", ""):
        return False
    raise GraphConfigError(f"launch argument {name} must be true/false, got {v!r}")


@dataclass
class NodePlan:
    executable: str
    nodes: tuple[str, ...]
    param_files: list[str]  # absolute paths
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # node -> {param: value}


def params_dir(value: str = "") -> Path:
    if value:
        p = Path(value)
        if not p.is_dir():
            raise GraphConfigError(f"params_dir {p} is not a directory")
        return p
    from etc_ros.core.paths import share_dir

    return share_dir() / "config"


def plan_graph(args: dict[str, Any]) -> list[NodePlan]:
    """Executables to start for the launch arguments (missing ones take LAUNCH_ARGS defaults)."""
    unknown = sorted(set(args) - set(LAUNCH_ARGS))
    if unknown:
        raise GraphConfigError(f"unknown launch argument(s) {unknown}; known: {sorted(LAUNCH_ARGS)}")
    a = {**LAUNCH_ARGS, **{k: v for k, v in args.items() if v is not None}}
    use_sim = _as_bool(a["use_sim"], "use_sim")
    dry_run = _as_bool(a["dry_run"], "dry_run")
    if a["robot_model"] != robot_spec.ROBOT_MODEL:
        raise GraphConfigError(f"robot_model {a['robot_model']!r} is not supported; this stack is for "
                               f"{robot_spec.ROBOT_MODEL!r}")
    from etc_ros.camera.sources import CAMERA_TYPES
    from etc_ros.robot.base import BACKENDS

    cam = str(a["camera_type"]).strip().lower()
    if cam not in CAMERA_TYPES:
        raise GraphConfigError(f"camera_type {cam!r} is not one of {list(CAMERA_TYPES)}")
    backend = str(a["driver_backend"]).strip().lower() or ("sim" if use_sim else "interbotix")
    if backend not in BACKENDS:
        raise GraphConfigError(f"driver_backend {backend!r} is not one of {list(BACKENDS)}")
    if use_sim:
        if backend != "sim":
            raise GraphConfigError(f"use_sim:=true runs the simulated driver (sim_robot); driver_backend "
                                   f"{backend!r} needs use_sim:=false")
        cam = "sim"  # the simulated world's camera, whatever camera_type says
    elif backend == "sim" or cam == "sim":
        raise GraphConfigError("driver_backend/camera_type 'sim' need use_sim:=true")
    if _as_bool(a["xs_sdk"], "xs_sdk") and (use_sim or backend != "interbotix"):
        raise GraphConfigError("xs_sdk:=true starts the Interbotix driver for the real arm: it needs use_sim:=false "
                               "and the interbotix driver backend")
    pdir = params_dir(str(a["params_dir"]))

    def files(*nodes: str) -> list[str]:
        out = []
        for n in nodes:
            f = pdir / PARAM_FILES[n]
            if not f.is_file():
                raise GraphConfigError(f"parameter file {f} (node {n}) not found")
            out.append(str(f))
        return out

    plans: list[NodePlan] = []
    if use_sim:
        plans.append(NodePlan("sim_robot", EXECUTABLES["sim_robot"],
                              files("sim_world", "driver_node", "camera_node"),
                              {"driver_node": {"backend": "sim", "robot_model": a["robot_model"]},
                               "camera_node": {"camera_type": "sim"}}))
    else:
        plans.append(NodePlan("camera_node", ("camera_node",), files("camera_node"),
                              {"camera_node": {"camera_type": cam}}))
        plans.append(NodePlan("driver_node", ("driver_node",), files("driver_node"),
                              {"driver_node": {"backend": backend, "robot_model": a["robot_model"]}}))
    plans.append(NodePlan("instruction_node", ("instruction_node",), files("instruction_node")))
    pol: dict[str, Any] = {}
    if str(a["policy_bundle"]).strip():
        pol["policy_bundle"] = str(a["policy_bundle"]).strip()
    if str(a["providers"]).strip():
        from etc_ros.policy.worker import PolicyConfigError, parse_providers

        try:
            parse_providers(a["providers"])
        except PolicyConfigError as e:
            raise GraphConfigError(str(e)) from None
        pol["providers"] = str(a["providers"]).strip()
    plans.append(NodePlan("policy_node", ("policy_node",), files("policy_node"), {"policy_node": pol} if pol else {}))
    plans.append(NodePlan("safety_node", ("safety_node",), files("safety_node"),
                          {"safety_node": {"dry_run": dry_run}}))
    return plans


def xs_sdk_include(args: dict[str, Any]) -> dict[str, Any] | None:
    """With xs_sdk:=true: the Interbotix launch file the launch file includes, and its arguments (no RViz, our
    operating modes); None otherwise. Only `ros2 launch` can include it (the in-process bringup cannot)."""
    a = {**LAUNCH_ARGS, **{k: v for k, v in args.items() if v is not None}}
    if not _as_bool(a["xs_sdk"], "xs_sdk"):
        return None
    modes = params_dir(str(a["params_dir"])) / XS_SDK_MODES
    if not modes.is_file():
        raise GraphConfigError(f"xs_sdk:=true needs the operating modes file {modes}")
    return {"package": "interbotix_xsarm_control", "launch_file": "xsarm_control.launch.py",
            "arguments": {"robot_model": str(a["robot_model"]), "use_rviz": "false", "mode_configs": str(modes)}}


# ------------------------------------------------------------------------------------------------ YAML
def read_param_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """ROS 2 parameter file -> {node_name: {param: value}} ('/**' applies to every node)."""
    from etc_ros.core.config import read_yaml_mapping

    p = Path(path)
    data = read_yaml_mapping(p, GraphConfigError, what="parameter file",
                             top_level="a mapping of node names to {ros__parameters: ...}")
    out: dict[str, dict[str, Any]] = {}
    for node, body in data.items():
        if not isinstance(body, dict) or "ros__parameters" not in body or not isinstance(body["ros__parameters"], dict):
            raise GraphConfigError(f"{p}: section {node!r} must hold a 'ros__parameters' mapping")
        out[str(node).lstrip("/")] = dict(body["ros__parameters"])
    return out


def coerce_param(node: str, name: str, value: Any) -> Any:
    """Check `name` is declared by `node` and give `value` the declared type (int -> float allowed)."""
    if node not in NODE_PARAMS:
        raise GraphConfigError(f"unknown node {node!r}; known: {sorted(NODE_PARAMS)}")
    decl = NODE_PARAMS[node]
    check_renamed(node, (name,))
    if name not in decl:
        raise GraphConfigError(f"node {node} has no parameter {name!r}; declared: {sorted(decl)}")
    d = decl[name]
    if isinstance(d, bool):
        if isinstance(value, bool):
            return value
        return _as_bool(value, f"{node}.{name}")
    if isinstance(d, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            try:
                return float(str(value))
            except ValueError:
                raise GraphConfigError(f"{node}.{name} must be a number, got {value!r}") from None
        return float(value)
    if isinstance(d, int):
        if isinstance(value, bool):
            raise GraphConfigError(f"{node}.{name} must be an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError):
            raise GraphConfigError(f"{node}.{name} must be an integer, got {value!r}") from None
    if isinstance(d, str):
        if isinstance(value, (dict, list)):
            raise GraphConfigError(f"{node}.{name} must be a string, got {value!r}")
        return "" if value is None else str(value)
    return value


def node_parameters(node: str, param_files: list[str], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Parameters `node` ends up with: files in order ('/**' then its own section), then overrides."""
    out: dict[str, Any] = {}
    for f in param_files:
        sections = read_param_file(f)
        for key in ("**", node):
            for k, v in sections.get(key, {}).items():
                if key == "**" and k not in NODE_PARAMS.get(node, {}):
                    check_renamed(node, (k,), f"{f}: ")
                    continue
                out[k] = coerce_param(node, k, v)
    for k, v in (overrides or {}).items():
        out[k] = coerce_param(node, k, v)
    return out


# ------------------------------------------------------------------------------------------------ limits
def load_safety_limits(path: str = "", overrides=()):
    """SafetyLimits from `path`, else config/safety.yaml of the package, else the spec.py defaults."""
    from etc_ros.core.config import load_config
    from etc_ros.core.paths import config_path
    from etc_ros.core.spec import SafetyLimits

    if path:
        from pathlib import Path

        if not Path(path).is_absolute() and not Path(path).is_file() and config_path(path).is_file():
            path = str(config_path(path))  # a bare name refers to the package's config/
        return load_config(SafetyLimits, path, overrides)
    default = config_path("safety.yaml")
    return load_config(SafetyLimits, default if default.is_file() else None, overrides)


def resolve_factory(spec_str: str):
    """'package.module:callable' -> the callable (lazy import of optional components such as the sim world)."""
    import importlib

    if ":" not in spec_str:
        raise GraphConfigError(f"factory {spec_str!r} must look like package.module:callable")
    mod_name, attr = spec_str.split(":", 1)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise GraphConfigError(f"cannot import {mod_name!r} for {spec_str!r}: {e}") from e
    obj = getattr(mod, attr, None)
    if obj is None or not callable(obj):
        raise GraphConfigError(f"{mod_name} has no callable {attr!r}")
    return obj


# ------------------------------------------------------------------------------------------------ bringup
@dataclass
class BringupConfig:
    """`etc-vla ros bringup --config FILE`: the launch arguments plus in-process extras."""

    robot_model: str = robot_spec.ROBOT_MODEL
    use_sim: bool = True
    policy_bundle: str = "fake:circle"  # bundle directory or fake:<name>
    camera_type: str = "sim"
    dry_run: bool = False
    driver_backend: str = ""  # '' = sim (use_sim) / interbotix; 'fake' runs without hardware or MuJoCo
    params_dir: str = ""  # '' = the package's config/
    providers: str = ""  # policy execution providers ('' = CPU; cuda; tensorrt,cuda)
    xs_sdk: bool = False  # only `ros2 launch` can start xs_sdk; the in-process bringup refuses it
    params: dict[str, dict[str, Any]] = field(default_factory=dict)  # extra {node: {param: value}} overrides
    instruction: str = ""  # sent once the graph is up ('' = none, or the sim episode's own)
    duration_s: float = 0.0  # 0 = run until Ctrl-C
    domain_id: int = -1  # -1 = ROS_DOMAIN_ID from the environment (0 if unset)
    executor: str = "per_node"  # per_node: each node on its own executor thread (measured faster); shared: one
    threads: int = 4  # threads of the shared MultiThreadedExecutor

    def launch_args(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in LAUNCH_ARGS}


def sim_rollout_settings(bringup: str | Path | None = None) -> dict[str, Any]:
    """What the simulated graph of `bringup` (default config/ros_bringup.yaml) executes a policy with: the safety
    node's executor settings and limits, and the servo profile its driver writes. `etc-vla eval --rollout
    executor` replays exactly these in simulated time, so eval and the ROS graph share one rollout definition."""
    from etc_ros.core.config import load_config
    from etc_ros.core.paths import config_path

    cfg = load_config(BringupConfig, config_path("ros_bringup.yaml") if bringup is None else bringup)
    pdir = params_dir(cfg.params_dir)
    params = cfg.params or {}
    safety = node_parameters("safety_node", [str(pdir / PARAM_FILES["safety_node"])], params.get("safety_node"))
    driver = node_parameters("driver_node", [str(pdir / PARAM_FILES["driver_node"])], params.get("driver_node"))
    return {"mode": safety["mode"], "align": safety["align"], "servo_hz": float(safety["servo_hz"]),
            "policy_hz": float(safety["policy_hz"]), "safety_limits": load_safety_limits(safety["safety_config"]),
            "safety_config": safety["safety_config"] or "safety.yaml",
            "servo_profile": (float(driver["moving_time"]), float(driver["accel_time"]))}
