"""Validation of natural-language instructions sent to the robot (pure: no ROS).

An instruction reaches the policy only after `check_instruction` accepted it. A rejected instruction never
replaces the current one: if none was accepted yet the robot keeps holding.

Rules (each rejection carries a one-line reason meant for the operator):
- bytes must decode as UTF-8; a str must encode as UTF-8 (no lone surrogates, e.g. from undecodable argv);
- leading/trailing whitespace is stripped, then the text must not be empty;
- at most `max_chars` characters (default MAX_INSTRUCTION_CHARS);
- no control or invisible format characters (Unicode categories Cc, Cf, Cs, Co), e.g. NUL, ESC, TAB, newline
  inside the text, zero-width joiners or bidi overrides.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from etc_ros.core.errors import UserError

MAX_INSTRUCTION_CHARS = 200
_REJECTED_CATEGORIES = {"Cc": "control", "Cf": "invisible format", "Cs": "surrogate", "Co": "private-use"}


class InstructionError(UserError):
    """An instruction was rejected (the message says why)."""


@dataclass(frozen=True)
class InstructionCheck:
    ok: bool
    text: str  # the normalized instruction ('' when rejected)
    reason: str  # 'accepted' or why it was rejected


def check_instruction(raw: object, max_chars: int = MAX_INSTRUCTION_CHARS) -> InstructionCheck:
    """Validate `raw` (str or bytes); never raises for bad input, returns the verdict with a reason."""
    if max_chars < 1:
        raise InstructionError(f"max_chars must be >= 1, got {max_chars}")
    if isinstance(raw, (bytes, bytearray, memoryview)):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            return InstructionCheck(False, "", f"rejected: not valid UTF-8 (byte {e.start}: {e.reason})")
    elif isinstance(raw, str):
        text = raw
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            return InstructionCheck(False, "", f"rejected: not valid UTF-8 (character {e.start} cannot be encoded)")
    elif raw is None:
        return InstructionCheck(False, "", "rejected: empty instruction")
    else:
        return InstructionCheck(False, "", f"rejected: expected text, got {type(raw).__name__}")
    text = text.strip()
    if not text:
        return InstructionCheck(False, "", "rejected: empty instruction")
    if len(text) > max_chars:
        return InstructionCheck(False, "", f"rejected: too long ({len(text)} characters > {max_chars})")
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat in _REJECTED_CATEGORIES:
            return InstructionCheck(
                False, "", f"rejected: {_REJECTED_CATEGORIES[cat]} character U+{ord(ch):04X} at position {i}"
            )
    return InstructionCheck(True, text, "accepted")


def validate_instruction(raw: object, max_chars: int = MAX_INSTRUCTION_CHARS) -> str:
    """Normalized instruction, or InstructionError naming the problem."""
    res = check_instruction(raw, max_chars)
    if not res.ok:
        raise InstructionError(res.reason)
    return res.text
