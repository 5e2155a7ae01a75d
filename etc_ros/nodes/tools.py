"""One-shot ROS clients for the command line (`etc-vla ros say / estop / reset-estop / dry-run`)."""
from __future__ import annotations

from typing import Any

import rclpy
from rcl_interfaces.srv import SetParameters
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool, Trigger

from etc_ros.core.instruction import check_instruction
from etc_ros.nodes.common import isolate_ros_env


class _Client:
    def __init__(self, name: str, domain_id: int | None = None):
        isolate_ros_env(domain_id)
        self.context = Context()
        rclpy.init(args=[], context=self.context)
        self.node = Node(name, context=self.context)

    def call(self, srv_type: Any, service: str, request: Any, timeout: float) -> tuple[Any | None, str]:
        client: Any = self.node.create_client(srv_type, service)
        if not client.wait_for_service(timeout_sec=timeout):
            return None, (f"no service {service} within {timeout:g} s (is the graph running on this machine, "
                          f"with the same ROS_DOMAIN_ID?)")
        future = client.call_async(request)
        ex = SingleThreadedExecutor(context=self.context)
        ex.add_node(self.node)
        try:
            ex.spin_until_future_complete(future, timeout_sec=timeout)
        finally:
            ex.shutdown()
        if not future.done() or future.result() is None:
            return None, f"{service} did not answer within {timeout:g} s"
        return future.result(), ""

    def close(self) -> None:
        self.node.destroy_node()
        if self.context.ok():
            rclpy.shutdown(context=self.context)

    def __enter__(self) -> "_Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def say(text: str, node: str = "/instruction_node", timeout: float = 5.0,
        domain_id: int | None = None) -> tuple[bool, str]:
    """Set the instruction node's `instruction` parameter (rcl_interfaces/SetParameters). Returns
    (accepted, reason); text that cannot even be sent (not UTF-8) is rejected here with the same wording."""
    local = check_instruction(text)
    if not local.ok and "UTF-8" in local.reason:
        return False, local.reason
    req = SetParameters.Request()
    req.parameters = [Parameter("instruction", value=str(text)).to_parameter_msg()]
    with _Client("etc_vla_say", domain_id) as c:
        res, err = c.call(SetParameters, f"{node.rstrip('/')}/set_parameters", req, timeout)
    if res is None:
        return False, err
    r = res.results[0]
    return bool(r.successful), (r.reason or ("accepted" if r.successful else "rejected"))


def trigger(service: str, timeout: float = 5.0, domain_id: int | None = None) -> tuple[bool, str]:
    with _Client("etc_vla_trigger", domain_id) as c:
        res, err = c.call(Trigger, service, Trigger.Request(), timeout)
    return (False, err) if res is None else (bool(res.success), res.message)


def set_bool(service: str, value: bool, timeout: float = 5.0, domain_id: int | None = None) -> tuple[bool, str]:
    with _Client("etc_vla_set_bool", domain_id) as c:
        res, err = c.call(SetBool, service, SetBool.Request(data=bool(value)), timeout)
    return (False, err) if res is None else (bool(res.success), res.message)
