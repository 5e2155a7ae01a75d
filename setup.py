"""ament_python package `etc_ros`, holding two Python packages: etc_ros (robot side) and etc_training (offline)."""
import os
from glob import glob

from setuptools import find_packages, setup

package_name = "etc_ros"
# The robot image (docker/Dockerfile.robot) copies etc_ros only: its command line is `etc-robot`; `etc-vla`
# (training + the same robot commands) is installed where etc_training is present.
HAS_TRAINING = os.path.isdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), "etc_training"))


def data_dir(folder, pattern="*"):
    files = [f for f in glob(os.path.join(folder, pattern)) if os.path.isfile(f)]
    return (os.path.join("share", package_name, folder), files)


ENTRY_POINTS = {
    "console_scripts": [
        "etc-robot = etc_ros.cli:main",
        "camera_node = etc_ros.nodes.camera_node:main",
        "instruction_node = etc_ros.nodes.instruction_node:main",
        "policy_node = etc_ros.nodes.policy_node:main",
        "safety_node = etc_ros.nodes.safety_node:main",
        "driver_node = etc_ros.nodes.driver_node:main",
        "sim_robot = etc_ros.nodes.sim_robot:main",
        "teleop_node = etc_ros.nodes.teleop_node:main",
        "recorder_node = etc_ros.nodes.recorder_node:main",
    ],
}
if HAS_TRAINING:
    ENTRY_POINTS["console_scripts"].append("etc-vla = etc_training.cli:main")


setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=["etc_ros", "etc_ros.*", "etc_training", "etc_training.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + package_name]),
        ("share/" + package_name, ["package.xml"]),
        data_dir("launch"),
        data_dir("urdf"),
        data_dir("config"),
    ],
    include_package_data=True,
    package_data={"etc_training.etc": ["annotate_page.html"]} if HAS_TRAINING else {},
    zip_safe=False,
    maintainer="ETC-VLA team",
    maintainer_email="robot-learning@example.org",
    description="ETC vision-language-action policies for the WidowX 250 6DOF: training and ROS 2 deployment.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points=ENTRY_POINTS,
)
