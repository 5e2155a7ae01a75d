"""Errors that carry a message meant for a person (bad input, missing file, invalid dataset...).
The CLI prints them as one line and exits 2; everything else is a bug and shows a traceback."""


class UserError(Exception):
    pass


class DatasetError(UserError):
    pass


class BundleError(UserError):
    pass


class CalibrationError(UserError):
    pass


class UrdfError(UserError):
    """Malformed or inconsistent URDF (the message names the offending element)."""


class KinematicsError(UserError):
    """Bad input to the kinematics (wrong joint vector shape, unknown link, non-finite pose...)."""


class SafetyError(UserError):
    """Bad input to the safety filter / executor / driver guard (wrong shape, non-finite time, misuse)."""


class RecorderError(UserError):
    """The teleop recorder refused an operation (no instruction, low disk, bad configuration, no `mcap`...)."""


class ModelError(UserError):
    """Bad input to the VLA model side: processor, tokenizers, normalization stats, checkpoints, presets."""
