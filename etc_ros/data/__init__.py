"""Episode dataset (LeRobot v3 layout, one episode per file, atomic commits): one schema for sim collection,
teleop recording, rosbag2 import and training. Robot side: numpy + pyarrow + PIL/PyAV only (no torch).

    from etc_ros.data import DatasetSpec, DatasetWriter, DatasetReader, EpisodeData, validate_dataset

See docs/dataset.md for the schema, the commit protocol and the coordinate conventions.
"""
from __future__ import annotations

from etc_ros.core.errors import DatasetError
from etc_ros.data.reader import DatasetReader
from etc_ros.data.repair import repair_dataset
from etc_ros.data.schema import DatasetSpec, EpisodeData
from etc_ros.data.validate import validate_dataset, validate_report
from etc_ros.data.writer import DatasetWriter, EpisodeRecorder

repair = repair_dataset

__all__ = ["DatasetSpec", "DatasetWriter", "DatasetReader", "EpisodeData", "EpisodeRecorder", "DatasetError",
           "validate_dataset", "validate_report", "repair_dataset", "repair"]
