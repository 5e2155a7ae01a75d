# Robot PC image: ROS 2 Humble (the distro Interbotix supports), Interbotix X-Series arm packages, librealsense /
# pyrealsense2, ONNX Runtime GPU + TensorRT, and this package (etc_ros). The entrypoint starts
#   ros2 launch etc_ros widowx.launch.py
# Build (from the repository root):  docker build -f docker/Dockerfile.robot -t etc-vla-robot .
# Run:                               docker compose -f docker/compose.robot.yaml up
FROM ros:humble-ros-base-jammy

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    ROS_DISTRO=humble

# System packages: build tools for the Interbotix workspace, RealSense SDK, video/image libs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        curl ca-certificates git python3-pip python3-colcon-common-extensions python3-rosdep \
        python3-vcstool udev usbutils libgl1 libegl1 libusb-1.0-0 \
        ros-humble-librealsense2 ros-humble-diagnostic-updater \
    && rm -rf /var/lib/apt/lists/*

# Interbotix X-Series arm stack (interbotix_xs_sdk, interbotix_xs_modules, descriptions) from Trossen's installer,
# ROS 2 Humble (-d humble). It builds ~/interbotix_ws; in a container root's home is /root.
# INTERBOTIX_REF pins the installer script (interbotix_ros_manipulators main, 0bb2b0e, 2024-07-10). What `-n`
# (non-interactive) does, read from that script: apt-get upgrade; ros-humble-desktop if missing (this base image
# has ros-base, so it is installed: ~1 GB); rosdep init/update; the perception modules (apriltag_ros built from
# source) and the MATLAB modules (both answers default to yes with -n); then it clones interbotix_ros_core,
# interbotix_ros_manipulators and interbotix_ros_toolboxes at their `humble` BRANCH (moving: not pinned by
# INTERBOTIX_REF; record `git -C /root/interbotix_ws/src/<repo> rev-parse HEAD` of a known-good image) and builds.
ARG INTERBOTIX_REF=0bb2b0e6d0e619bff02cf74dbd5af5681dcf80c9
WORKDIR /opt
RUN curl -fsSL "https://raw.githubusercontent.com/Interbotix/interbotix_ros_manipulators/${INTERBOTIX_REF}/interbotix_ros_xsarms/install/amd64/xsarm_amd64_install.sh" \
        -o xsarm_amd64_install.sh \
    && chmod +x xsarm_amd64_install.sh \
    && sed -i 's/sudo //g' xsarm_amd64_install.sh \
    && apt-get update \
    && ./xsarm_amd64_install.sh -d humble -n \
    && rm -rf /var/lib/apt/lists/* xsarm_amd64_install.sh

# Python side of the robot (no torch): numpy, pyarrow, onnxruntime-gpu, TensorRT 10 and RealSense bindings.
# numpy stays below 2 (requirements-robot.txt): pip installs into the same dist-packages path the apt Python
# packages of Humble use, and those (cv_bridge, tf_transformations, the Interbotix modules' numpy use) were built
# against Ubuntu 22.04's numpy 1.21; a pip numpy 2 would shadow it and break their compiled extensions. Pinning
# keeps one numpy for both (a venv with --system-site-packages would still see the apt one first); OpenCV is
# pinned to a release that supports numpy 1.x.
# TensorRT is pinned below 11: TensorRT 11 removed the FP16/INT8 builder flags our engine cache was built with,
# and the ONNX Runtime TensorRT execution provider in onnxruntime-gpu 1.2x links against TensorRT 10.
COPY requirements-robot.txt /tmp/requirements-robot.txt
# CUDA 12 + cuDNN 9 user-space libraries for onnxruntime-gpu come as pip wheels (the [cuda,cudnn] extras; the
# policy node calls onnxruntime.preload_dlls() before opening a CUDA/TensorRT session), cuda-python for the
# native TensorRT runner. The node refuses to start when the provider it was asked for is missing.
RUN python3 -m pip install --no-cache-dir -r /tmp/requirements-robot.txt "tensorrt-cu12>=10.3,<11" \
        "onnxruntime-gpu[cuda,cudnn]>=1.20,<1.32" "cuda-python>=12,<13" \
    && rm /tmp/requirements-robot.txt

# This package, built with colcon into its own overlay on top of the Interbotix workspace. Only its robot side
# (etc_ros: nodes, policy runtime, safety, drivers, and the operator command line `etc-robot` for ros / teleop /
# calibrate / data); the training side (etc_training, torch) is not in this image, so setup.py installs no etc-vla.
WORKDIR /opt/etc_ws/src/etc_ros
COPY package.xml setup.py setup.cfg ./
COPY resource ./resource
COPY etc_ros ./etc_ros
COPY launch ./launch
COPY urdf ./urdf
COPY config ./config
WORKDIR /opt/etc_ws
RUN . /opt/ros/humble/setup.bash \
    && . /root/interbotix_ws/install/setup.bash \
    && colcon build --symlink-install --packages-select etc_ros

COPY docker/entrypoint.sh /entrypoint.sh
RUN chmod +x /entrypoint.sh
# Policy bundles are mounted here (see compose file); the launch argument `policy_bundle` points into it.
VOLUME ["/bundles", "/data"]
ENTRYPOINT ["/entrypoint.sh"]
CMD ["ros2", "launch", "etc_ros", "widowx.launch.py"]
