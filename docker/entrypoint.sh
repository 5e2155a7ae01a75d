#!/usr/bin/env bash
# Source ROS 2 Humble, the Interbotix workspace and our overlay, then run the command
# (default: ros2 launch etc_ros widowx.launch.py, with extra launch arguments from $ETC_LAUNCH_ARGS).
set -e
source /opt/ros/humble/setup.bash
source /root/interbotix_ws/install/setup.bash
source /opt/etc_ws/install/setup.bash
if [ "$1" = "ros2" ] && [ "$2" = "launch" ] && [ -n "${ETC_LAUNCH_ARGS:-}" ]; then
  # shellcheck disable=SC2086
  exec "$@" ${ETC_LAUNCH_ARGS}
fi
exec "$@"
