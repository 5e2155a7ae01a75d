"""Episode dataset (LeRobot v3 layout, one episode per file, atomic commits): one schema for sim collection,
teleop recording, rosbag2 import and training. Robot side: numpy + pyarrow + PIL/PyAV only (no torch).

    from etc_ros.data import DatasetSpec, DatasetWriter, DatasetReader, EpisodeData, validate_dataset

See docs/dataset.md for the schema, the commit protocol and the coordinate conventions. Modules:

    schema.py      format constants, DatasetSpec / EpisodeData, arrow schemas, value checks
    codec.py       PNG and mp4 encoding / decoding
    stats.py       per-episode and dataset statistics
    writer.py      DatasetWriter: one writer per dataset (lock, create / open, episodes, the commit point)
    episode.py     EpisodeWriter: one episode being recorded (frame checks, row groups, videos, finalize)
    meta.py        the derived meta files (info.json, tasks.parquet, stats.json)
    reader.py      DatasetReader;  validate.py  validation;  repair.py  repair;  bag_import.py  rosbag2 import
"""
from __future__ import annotations

from etc_ros.core.errors import DatasetError
from etc_ros.data.episode import EpisodeWriter
from etc_ros.data.reader import DatasetReader
from etc_ros.data.repair import repair_dataset
from etc_ros.data.schema import DatasetSpec, EpisodeData
from etc_ros.data.validate import validate_dataset, validate_report
from etc_ros.data.writer import DatasetWriter

repair = repair_dataset

__all__ = ["DatasetSpec", "DatasetWriter", "DatasetReader", "EpisodeData", "EpisodeWriter", "DatasetError",
           "validate_dataset", "validate_report", "repair_dataset", "repair"]
