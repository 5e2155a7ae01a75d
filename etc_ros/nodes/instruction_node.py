"""Instruction node: the one place where operator text enters the graph (validation: etc_ros.core.instruction).

Inputs (standard types only):
- topic /instruction (std_msgs/String): fire-and-forget; the verdict goes to /instruction/status;
- parameter `instruction`, set through the node's standard rcl_interfaces/SetParameters service
  (/instruction_node/set_parameters, what `etc-vla ros say` and `ros2 param set` use): a parameter callback
  validates it and rejects with the reason, which the caller gets back in the service response;
- service ~/clear (std_srvs/Trigger): drop the current instruction (the policy stops, the robot holds).
Output: /instruction/accepted (std_msgs/String, transient local: late joiners get the current one; '' = none).
A rejected instruction never replaces the current one (if none was accepted, the robot keeps holding).
"""
from __future__ import annotations

import threading
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from std_msgs.msg import String
from std_srvs.srv import Trigger

from etc_ros.core.instruction import check_instruction
from etc_ros.nodes import messages
from etc_ros.nodes.common import LATCHED, RELIABLE, GraphNode, run_nodes
from etc_ros.nodes.graph import TOPICS


class InstructionNode(GraphNode):
    param_set = "instruction_node"

    def __init__(self, params: dict[str, Any] | None = None, name: str = "instruction_node", **kwargs: Any):
        super().__init__(name, params, **kwargs)
        self._lock = threading.Lock()
        self.current = ""
        self.accepted = 0
        self.rejected = 0
        self.last_verdict = ""
        self.pub_accepted = self.create_publisher(String, TOPICS["instruction_accepted"], LATCHED)
        self.pub_status = self.create_publisher(String, TOPICS["instruction_status"], RELIABLE)
        # raw: the bytes as sent, so invalid UTF-8 and an embedded NUL are rejected with a reason instead of
        # arriving as U+FFFD or silently cut short (what rclpy's deserialization makes of them)
        self.create_subscription(String, TOPICS["instruction"], self._on_topic, RELIABLE, raw=True)
        self.create_service(Trigger, "~/clear", self._srv_clear)
        self.add_on_set_parameters_callback(self._on_params)
        self.pub_accepted.publish(String(data=""))
        initial = str(self.p("instruction") or "")
        if initial:
            self.submit(initial)
        dhz = float(self.p("diagnostics_hz"))
        if dhz > 0:
            self.create_timer(1.0 / dhz, self._diagnostics)

    def submit(self, text: Any) -> tuple[bool, str]:
        """Validate and, if accepted, make `text` the current instruction. Returns (accepted, reason)."""
        res = check_instruction(text, int(self.p("max_chars")))
        with self._lock:
            if res.ok:
                self.current = res.text
                self.accepted += 1
                self.last_verdict = f"accepted: {res.text}"
            else:
                self.rejected += 1
                self.last_verdict = res.reason
        if res.ok:
            self.pub_accepted.publish(String(data=res.text))
            self.get_logger().info(f"instruction accepted: {res.text!r}")
        else:
            self.get_logger().warning(f"instruction {str(text)[:80]!r} {res.reason}; keeping "
                                      f"{self.current!r}" if self.current else f"instruction {res.reason}; holding")
        self.pub_status.publish(String(data=self.last_verdict))
        return res.ok, ("accepted" if res.ok else res.reason)

    def _on_topic(self, raw: bytes) -> None:
        try:
            data = messages.string_bytes_from_cdr(raw)
        except messages.MessageError as e:
            self._reject(f"rejected: {e}")
            return
        k = data.find(b"\0")
        if k >= 0:
            self._reject(f"rejected: embedded NUL at byte {k} (the text after it would be lost)")
            return
        self.submit(data)  # bytes: check_instruction decodes them strictly as UTF-8

    def _reject(self, reason: str) -> None:
        with self._lock:
            self.rejected += 1
            self.last_verdict = reason
        self.get_logger().warning(f"instruction {reason}")
        self.pub_status.publish(String(data=reason))

    def _on_params(self, params) -> SetParametersResult:
        for prm in params:
            if prm.name == "instruction":
                ok, reason = self.submit(prm.value if prm.value is not None else "")
                if not ok:
                    return SetParametersResult(successful=False, reason=reason)
            elif prm.name == "max_chars":
                try:
                    ok = int(prm.value) >= 1
                except (TypeError, ValueError):
                    ok = False
                if not ok:
                    return SetParametersResult(successful=False, reason="max_chars must be an integer >= 1")
        return SetParametersResult(successful=True, reason="accepted")

    def clear(self) -> None:
        with self._lock:
            self.current = ""
            self.last_verdict = "cleared"
        self.pub_accepted.publish(String(data=""))
        self.pub_status.publish(String(data="cleared"))

    def _srv_clear(self, req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        self.clear()
        res.success, res.message = True, "instruction cleared: the robot holds"
        return res

    def _diagnostics(self) -> None:
        with self._lock:
            d = {"current": self.current, "accepted": self.accepted, "rejected": self.rejected,
                 "last_verdict": self.last_verdict}
        self.publish_diagnostics("ok" if self.current else "warn",
                                 f"instruction: {self.current!r}" if self.current else "no instruction: holding", d)


def main(args: list[str] | None = None) -> None:
    run_nodes(lambda: [InstructionNode()], args)


if __name__ == "__main__":
    main()
