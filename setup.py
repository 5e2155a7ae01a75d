"""ament_python package `etc_ros`, holding two Python packages: etc_ros (robot side) and etc_training (offline)."""
import os
from glob import glob

from setuptools import find_packages, setup

package_name = "etc_ros"


def data_dir(folder, pattern="*"):
    files = [f for f in glob(os.path.join(folder, pattern)) if os.path.isfile(f)]
    return (os.path.join("share", package_name, folder), files)


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
    zip_safe=False,
    maintainer="ETC-VLA team",
    maintainer_email="robot-learning@example.org",
    description="ETC vision-language-action policies for the WidowX 250 6DOF: training and ROS 2 deployment.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "etc-vla = etc_training.cli:main",
        ],
    },
)
