"""The arm behind the driver node (pure: no ROS; nodes/driver_node.py wraps `DriverCore`).

- base.py: the `DriverBackend` interface, `JointMeasurement`, gripper modes, trapezoidal joint moves.
- fake.py, sim.py, interbotix.py: one backend each (sim.py also holds `ThreadBoundEnv`, the world's thread).
- core.py: `make_backend` and `DriverCore`, the start / stop moves and the command gate (JointCommandGuard).
"""
