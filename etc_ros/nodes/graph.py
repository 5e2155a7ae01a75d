"""The node graph as data (pure: no rclpy), shared by launch/widowx.launch.py and `etc-vla ros bringup`.

- TOPICS / SERVICES: every name the nodes use.
- NODE_PARAMS: every parameter each node declares, with its default (the nodes declare exactly these).
- plan_graph(args): which executables and nodes to start for the launch arguments, with their parameter
  files and the overrides the arguments imply. The launch file and the in-process bringup both call it, so
  they start the same nodes with the same YAML.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from etc_ros.core import spec
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
COMMAND_JOINT_NAMES: tuple[str, ...] = spec.JOINT_NAMES + ("gripper",)  # joint_command layout
JOINT_STATE_NAMES: tuple[str, ...] = spec.JOINT_NAMES + ("left_finger", "right_finger")

# ------------------------------------------------------------------------------------------------ parameters
NODE_PARAMS: dict[str, dict[str, Any]] = {
    "camera_node": {
        "camera_type": "realsense",  # realsense | opencv | sim | fake
        "camera_name": "primary",  # topics /camera/<camera_name>/...
        "frame_id": "camera_color_optical_frame",
        "width": 640,
        "height": 480,
        "fps": 30.0,
        "depth": False,  # RealSense: also publish depth aligned to color (16UC1, mm)
        "serial": "",  # RealSense serial number ('' = any)
        "device": "0",  # OpenCV: index or /dev/videoN
        "calibration": "",  # optional camera model file (JSON/YAML with intrinsics, T_base_cam)
        "backoff_initial": 0.1,  # s, reconnect backoff doubles up to backoff_max
        "backoff_max": 2.0,
        "diagnostics_hz": 1.0,
    },
    "instruction_node": {
        "instruction": "",  # set through /instruction_node/set_parameters; validated, rejected with a reason
        "max_chars": 200,
        "diagnostics_hz": 1.0,
    },
    "policy_node": {
        "policy_bundle": "",  # bundle directory from `etc-vla export`, or fake:<hold|circle|nan|huge|slow|busy>
        "runtime_backend": "onnxruntime",
        "providers": "",  # onnxruntime execution providers in priority order ('' = CPU; 'tensorrt,cuda,cpu', 'cuda')
        "cameras": "",  # comma-separated camera names; '' = the bundle's cameras
        "max_rate_hz": 5.0,  # inference at most this often (one per new observation)
        "max_observation_age": 0.5,  # s; older observations are not sent to the model
        "diagnostics_hz": 1.0,
    },
    "safety_node": {
        "control_hz": 50.0,
        "policy_hz": 5.0,  # rate of the policy's actions; chunks at another rate are rejected
        "mode": "receding",  # receding | ensemble (see config/ros_safety.yaml for the measurement)
        "align": "arrival",  # arrival | observation: a chunk's first action goes to the first step not yet begun
        "dry_run": False,  # compute and report commands but never send them
        "safety_config": "",  # '' = config/safety.yaml of the package
        "camera_name": "primary",  # camera_info stamps of this camera feed the staleness check
        "diagnostics_hz": 1.0,
    },
    "driver_node": {
        "backend": "interbotix",  # interbotix | sim | fake
        "robot_model": spec.ROBOT_MODEL,
        "publish_hz": 100.0,  # joint_states rate (>= 50)
        "start_pose": "ready",  # ready | home | sleep | none
        "stop_pose": "sleep",
        "speed_fraction": 0.3,  # start/stop moves at this fraction of the velocity/acceleration limits
        "moving_time": 0.04,  # servo profile of each streamed goal [s] (interbotix and sim): ~2 command periods
        "accel_time": 0.02,
        "gripper_mode": "position",  # position (continuous opening, as in training) | binary (open/close at 0.5)
        "fake_tau": 0.05,  # fake: first-order time constant [s]
        "safety_config": "",  # '' = config/safety.yaml (the guard's limits)
        "diagnostics_hz": 1.0,
    },
    "sim_world": {
        "sim_env": "etc_training.sim:SimEnv",  # module:callable building the world (imported lazily)
        "seed": 0,  # episode seed of the first reset; each ~/reset takes the next one
        "split": "train",
        "family": "",  # task family of every episode ('' = the world's mix)
        "announce_instruction": True,  # publish each episode's instruction on /instruction
        "success_hz": 2.0,  # /sim/success rate
    },
}
PARAM_FILES = {  # node -> its file in config/
    "camera_node": "ros_camera.yaml",
    "instruction_node": "ros_instruction.yaml",
    "policy_node": "ros_policy.yaml",
    "safety_node": "ros_safety.yaml",
    "driver_node": "ros_driver.yaml",
    "sim_world": "ros_sim.yaml",
}
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
    "robot_model": spec.ROBOT_MODEL,
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
    if a["robot_model"] != spec.ROBOT_MODEL:
        raise GraphConfigError(f"robot_model {a['robot_model']!r} is not supported; this stack is for "
                               f"{spec.ROBOT_MODEL!r}")
    from etc_ros.camera_sources import CAMERA_TYPES
    from etc_ros.driver_backends import BACKENDS

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
        from etc_ros.policy_worker import PolicyConfigError, parse_providers

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

    robot_model: str = spec.ROBOT_MODEL
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
    return {"mode": safety["mode"], "align": safety["align"], "control_hz": float(safety["control_hz"]),
            "policy_hz": float(safety["policy_hz"]), "safety_limits": load_safety_limits(safety["safety_config"]),
            "safety_config": safety["safety_config"] or "safety.yaml",
            "servo_profile": (float(driver["moving_time"]), float(driver["accel_time"]))}
