"""Simulated robot in one process: sim_world (owns the MuJoCo world) + driver_node (backend 'sim', advances the
physics in real time from its timer) + camera_node (renders the world's camera). The three share the world
through one lock. Each node reads its own section of the parameter files, exactly like the separate
driver/camera executables on the real robot.

sim_world: service ~/reset (std_srvs/Trigger: new episode with the next seed; the driver re-syncs so the
safety node re-anchors), topic /sim/success (std_msgs/Bool), and, with announce_instruction, the episode's
instruction published on /instruction (validated by the instruction node like any other).
"""
from __future__ import annotations

import threading
from typing import Any, Callable

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from std_msgs.msg import Bool, String
from std_srvs.srv import Trigger

from etc_ros.nodes.camera_node import CameraNode
from etc_ros.nodes.common import LATCHED, RELIABLE, GraphNode, run_nodes
from etc_ros.nodes.driver_node import DriverNode
from etc_ros.nodes.graph import TOPICS, resolve_factory
from etc_ros.robot.sim import ThreadBoundEnv


class SimWorldNode(GraphNode):
    param_set = "sim_world"

    def __init__(self, params: dict[str, Any] | None = None, env: Any = None, name: str = "sim_world",
                 **kwargs: Any):
        super().__init__(name, params, **kwargs)
        self.lock = threading.RLock()
        self._owns_env = env is None
        if env is None:
            self.env = ThreadBoundEnv(factory=resolve_factory(self.p("sim_env")))
        else:
            self.env = env if isinstance(env, ThreadBoundEnv) else ThreadBoundEnv(env=env)
        self._accepted = ""
        self._announce_pending = False
        self.seed = int(self.p("seed"))
        self.on_reset: list[Callable[[], None]] = []  # e.g. the driver's resync
        self.pub_success = self.create_publisher(Bool, TOPICS["sim_success"], RELIABLE)
        self.pub_instruction = self.create_publisher(String, TOPICS["instruction"], RELIABLE)
        group = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "~/reset", self._srv_reset, callback_group=group)
        self.create_subscription(String, TOPICS["instruction_accepted"], self._on_accepted, LATCHED,
                                 callback_group=group)
        self.create_timer(1.0, self._announce_tick, callback_group=group)
        hz = float(self.p("success_hz"))
        if hz > 0:
            self.create_timer(1.0 / hz, self._publish_success, callback_group=group)
        self.episodes = 0
        self.instruction = ""
        self._reset_world(self.seed)

    def _reset_world(self, seed: int) -> str:
        with self.lock:
            family = str(self.p("family") or "") or None
            try:
                if family:
                    self.env.reset(seed=seed, split=self.p("split"), family=family)
                else:
                    self.env.reset(seed=seed, split=self.p("split"))
            except TypeError:  # worlds without splits / families
                self.env.reset(seed=seed)
            self.instruction = str(getattr(self.env, "instruction", "") or "")
        self.seed = seed
        self.episodes += 1
        return self.instruction

    def reset_episode(self, seed: int | None = None, announce: bool | None = None) -> str:
        """New episode (next seed by default); re-syncs the driver; returns the episode's instruction."""
        seed = self.seed + 1 if seed is None else int(seed)
        instr = self._reset_world(seed)
        for cb in self.on_reset:
            cb()
        if (self.p("announce_instruction") if announce is None else announce) and instr:
            self.announce()
        return instr

    def announce(self) -> None:
        """Publish the episode's instruction on /instruction, again every second until the instruction node
        has accepted it (it may start after us) or another instruction was accepted."""
        if self.instruction:
            self._announce_pending = True
            self.pub_instruction.publish(String(data=self.instruction))

    def _on_accepted(self, msg: String) -> None:
        self._accepted = msg.data
        if msg.data:
            self._announce_pending = False

    def _announce_tick(self) -> None:
        if self._announce_pending and self.instruction:
            self.pub_instruction.publish(String(data=self.instruction))

    def destroy_node(self) -> None:
        env = getattr(self, "env", None)  # absent when the constructor failed
        if env is not None:
            env.close(close_env=self._owns_env)  # a caller's world is left open: only our thread stops
        super().destroy_node()

    def is_success(self) -> bool:
        with self.lock:
            return bool(self.env.is_success())

    def _publish_success(self) -> None:
        try:
            ok = self.is_success()
        except Exception:  # world being rebuilt
            return
        self.pub_success.publish(Bool(data=ok))

    def _srv_reset(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        try:
            instr = self.reset_episode()
        except Exception as e:
            res.success, res.message = False, f"reset failed: {e}"
            return res
        res.success, res.message = True, f"episode seed {self.seed}: {instr}"
        return res


def build_sim_robot(params: dict[str, dict[str, Any]] | None = None, env: Any = None,
                    **node_kwargs: Any) -> tuple[SimWorldNode, DriverNode, CameraNode]:
    """The three nodes sharing one world. params: {node_name: {param: value}} (overrides)."""
    params = params or {}
    world = SimWorldNode(params.get("sim_world"), env=env, **node_kwargs)
    driver = DriverNode({**params.get("driver_node", {}), "backend": "sim"}, env=world.env, lock=world.lock,
                        **node_kwargs)
    camera = CameraNode({**params.get("camera_node", {}), "camera_type": "sim"}, env=world.env, lock=world.lock,
                        **node_kwargs)
    world.on_reset.append(driver.resync)
    if world.instruction and world.p("announce_instruction"):
        world.announce()
    return world, driver, camera


def main(args: list[str] | None = None) -> None:
    run_nodes(lambda: list(build_sim_robot()), args, park=lambda nodes: nodes[1].shutdown_motion())


if __name__ == "__main__":
    main()
