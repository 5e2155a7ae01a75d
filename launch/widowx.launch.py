"""WidowX 250 6DOF VLA stack on a ROS 2 install (robot PC: Humble, Python 3.10).

    ros2 launch etc_ros widowx.launch.py policy_bundle:=/bundles/etc_tiny camera_type:=realsense
    ros2 launch etc_ros widowx.launch.py use_sim:=true policy_bundle:=fake:circle
    ros2 launch etc_ros widowx.launch.py dry_run:=true ...

Arguments: robot_model (wx250s), use_sim (false: camera_node + driver_node on the hardware; true: sim_robot, the
MuJoCo world with its simulated driver and camera in one process), policy_bundle, camera_type
(realsense | opencv | fake), dry_run (the safety node computes but never sends commands), driver_backend
('' = interbotix / sim, fake for a dry bench), params_dir ('' = this package's config/).
Which nodes start and with which parameter files is decided by etc_ros.nodes.graph.plan_graph, the same function
`etc-vla ros bringup` uses, so both start the same graph with the same YAML. The Interbotix xs_sdk driver
(interbotix_xsarm_control) must be running for driver_backend interbotix; see docs/ros.md.
"""
from __future__ import annotations


def generate_launch_description():
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from etc_ros.nodes.graph import LAUNCH_ARGS, PARK_GRACE_S, plan_graph, xs_sdk_include

    help_text = {
        "robot_model": "Interbotix model (only wx250s is supported)",
        "use_sim": "true: simulated robot and camera (MuJoCo) instead of the hardware",
        "policy_bundle": "policy bundle directory (etc-vla export) or fake:<hold|circle|...>",
        "camera_type": "realsense | opencv | fake (ignored with use_sim)",
        "dry_run": "true: compute and report joint commands but never send them",
        "driver_backend": "'' (interbotix, or sim with use_sim) | fake",
        "params_dir": "directory of the ros_*.yaml parameter files ('' = this package's config/)",
        "providers": "policy execution providers: '' (CPU) | cuda | tensorrt,cuda (refuses to start if missing)",
        "xs_sdk": "true: also start Interbotix's xs_sdk (xsarm_control.launch.py, no RViz, "
                  "config/interbotix_modes.yaml)",
    }
    args = [DeclareLaunchArgument(name, default_value=str(default), description=help_text.get(name, name))
            for name, default in LAUNCH_ARGS.items()]

    def setup(context, *unused_args, **unused_kwargs):
        values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGS}
        actions = []
        for plan in plan_graph(values):
            overrides = {}
            for node_overrides in plan.overrides.values():
                overrides.update(node_overrides)
            params = list(plan.param_files) + ([overrides] if overrides else [])
            kwargs = dict(package="etc_ros", executable=plan.executable, parameters=params, output="screen",
                          emulate_tty=True)
            if len(plan.nodes) == 1:  # multi-node processes (sim_robot) keep their own node names
                kwargs["name"] = plan.nodes[0]
            if "driver_node" in plan.nodes:
                # on Ctrl-C launch sends SIGINT, then SIGTERM after sigterm_timeout (default 5 s) and SIGKILL
                # after sigkill_timeout: the driver parks the arm on the first signal (a 4-6 s move), so it
                # gets PARK_GRACE_S before either escalation
                kwargs["sigterm_timeout"] = str(PARK_GRACE_S)
                kwargs["sigkill_timeout"] = str(PARK_GRACE_S)
            actions.append(Node(**kwargs))
        inc = xs_sdk_include(values)
        if inc is not None:
            import os

            from ament_index_python.packages import get_package_share_directory
            from launch.actions import IncludeLaunchDescription
            from launch.launch_description_sources import PythonLaunchDescriptionSource

            path = os.path.join(get_package_share_directory(inc["package"]), "launch", inc["launch_file"])
            actions.insert(0, IncludeLaunchDescription(PythonLaunchDescriptionSource(path),
                                                       launch_arguments=list(inc["arguments"].items())))
        return actions

    return LaunchDescription(args + [OpaqueFunction(function=setup)])
