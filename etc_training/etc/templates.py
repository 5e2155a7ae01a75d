"""Paraphrased prompt templates per ETC subtype (written for this project).

Placeholders: {obj} object name, {ref} reference object, {instruction} task instruction, {n} number of
waypoints, {seconds} trajectory horizon in seconds. Every prompt that asks for coordinates states the format,
so the answer convention (etc_training/etc/coords.py) is visible to the model.
"""
from __future__ import annotations

import numpy as np

from etc_ros.core.errors import UserError

_PT = "Answer with [x, y] on a 0-1023 grid."
_BOX = "Answer with [x1, y1, x2, y2] on a 0-1023 grid."

TEMPLATES: dict[str, tuple[str, ...]] = {
    "point": (
        "Where is the {obj}? " + _PT,
        "Point to the {obj}. " + _PT,
        "Give the image location of the {obj}. " + _PT,
        "Locate the {obj} in the image. " + _PT,
        "Which pixel is at the centre of the {obj}? " + _PT,
    ),
    "box": (
        "Give the bounding box of the {obj}. " + _BOX,
        "Draw a box around the {obj}. " + _BOX,
        "Where is the {obj}? " + _BOX,
        "Detect the {obj}. " + _BOX,
    ),
    "objects": (
        "List the objects on the table, from left to right.",
        "Which objects can you see in the workspace? Name them from left to right.",
        "Name every object in front of the robot, left to right.",
        "What objects are there in the scene? List them left to right.",
    ),
    "relation": (
        "Where is the {obj} relative to the {ref}?",
        "Describe the position of the {obj} with respect to the {ref}.",
        "How is the {obj} placed relative to the {ref}, as seen in the image?",
        "Relative to the {ref}, where is the {obj}?",
    ),
    "gripper_relation": (
        "Where is the robot gripper relative to the {obj}?",
        "Describe where the gripper is with respect to the {obj}.",
        "Relative to the {obj}, where is the end effector?",
        "How is the gripper positioned relative to the {obj}?",
    ),
    "goal": (
        "The task is: {instruction}. What should the scene look like when the task is done?",
        "Instruction: {instruction}. Describe the goal state of the scene.",
        "If the robot finishes \"{instruction}\", what will the scene look like?",
        "Describe the final arrangement after the robot does this: {instruction}.",
    ),
    "affordance_grasp": (
        "The task is: {instruction}. Where should the gripper grasp the {obj}? " + _PT,
        "Point to where the robot should grasp the {obj}. " + _PT,
        "Which point of the {obj} is best for picking it up? " + _PT,
        "To {instruction}, where should the gripper close on the {obj}? " + _PT,
    ),
    "affordance_place": (
        "The task is: {instruction}. Where should the {obj} be placed? " + _PT,
        "Point to where the robot should release the {obj}. " + _PT,
        "Where does the {obj} go to {instruction}? " + _PT,
        "Mark the place where the gripper should put down the {obj}. " + _PT,
    ),
    "plan": (
        "The task is: {instruction}. List the steps the robot should take, in order.",
        "Break the task \"{instruction}\" into ordered subtasks.",
        "What is the step-by-step plan to {instruction}?",
        "Plan the subtasks for: {instruction}.",
    ),
    "next_subtask": (
        "The task is: {instruction}. What should the robot do next?",
        "Given the current scene and the task \"{instruction}\", what is the next subtask?",
        "Task: {instruction}. Which step is the robot on now?",
        "What is the robot's current subtask for: {instruction}?",
    ),
    "done": (
        "The task is: {instruction}. Is the task complete? Answer yes or no.",
        "Has the robot finished \"{instruction}\"? Answer yes or no.",
        "Is the task \"{instruction}\" done in this image? Answer yes or no.",
        "Task: {instruction}. Is it already accomplished? Answer yes or no.",
    ),
    "trajectory": (
        "The task is: {instruction}. Predict the gripper trajectory for the next {seconds} seconds as {n} "
        "waypoints [[x, y, g], ...] on a 0-1023 grid, g = 1 open, 0 closed.",
        "Task: {instruction}. Where will the gripper move? Give {n} waypoints [[x, y, g], ...] "
        "(0-1023 grid, g: 1 open / 0 closed), starting at its current position.",
        "To {instruction}, trace the end effector's future path: {n} points [[x, y, g], ...], "
        "x and y on a 0-1023 grid, g = 1 when the gripper is open.",
        "Plan the next {seconds} s of gripper motion for \"{instruction}\" as {n} waypoints "
        "[[x, y, g], ...] (0-1023 grid; g = 1 open, 0 closed).",
    ),
}


def render(subtype: str, rng: np.random.Generator, **fields) -> tuple[str, int]:
    """Pick a paraphrase for `subtype` with `rng` and fill it; returns (prompt, template index)."""
    if subtype not in TEMPLATES:
        raise UserError(f"no prompt templates for ETC subtype {subtype!r}")
    options = TEMPLATES[subtype]
    k = int(rng.integers(len(options)))
    try:
        return options[k].format(**fields), k
    except KeyError as e:
        raise UserError(f"template {subtype}[{k}] needs field {e}") from None
