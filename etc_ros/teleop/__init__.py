"""Teleoperation and episode recording on the robot PC (pure: no ROS; nodes/teleop_node.py and
nodes/recorder_node.py wrap these). Guide: docs/teleop.md.

- mapping.py: `TeleopMapper`, keyboard / gamepad / SpaceMouse input -> Bridge EE deltas; `TeleopConfig`.
- devices.py: raw-mode terminal keys (`parse_keys`) and the SpaceMouse reader (`SpaceMouseSource`).
- script.py: scripted input (`load_script`, `ScriptPlayer`, `apply_event`).
- config.py: `load_teleop_file` (config/teleop.yaml: teleop, recorder and robot sections).
- recorder.py: the recorder's configuration (`RecorderConfig`), its calibration lookup and `RecordingSession`,
  synchronized samples -> dataset episodes (through the DatasetWriter's `EpisodeWriter`).
- mcap_log.py: `McapLog`, the optional raw MCAP log of the recorded topics (one file per episode).
- stamped_buffer.py: `StampedBuffer`, recent messages by stamp (the recorder node pairs images and joint states).
"""
