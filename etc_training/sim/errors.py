"""Errors of the simulator meant for a person (bad arguments, bad state requests)."""
from __future__ import annotations

from etc_ros.core.errors import UserError


class SimError(UserError, ValueError):
    pass
