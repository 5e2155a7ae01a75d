"""The language of the task families: instruction templates (some held out for the ood_phrase split) and goal
texts, rendered for a concrete object and target.

    render_instruction("pick_place", "pp0", "red block", "blue bowl", "bowl") == "put the red block in the blue bowl"

Plain data, no imports from the rest of the simulator: tasks.py (episode sampling) and splits.py (which
templates a split may use) both read it.
"""
from __future__ import annotations

# template id -> text; {obj}, {tgt}, {prep} ("in"/"on"), {into} ("into"/"onto")
TEMPLATES: dict[str, dict[str, str]] = {
    "pick_place": {
        "pp0": "put the {obj} {prep} the {tgt}",
        "pp1": "place the {obj} {prep} the {tgt}",
        "pp2": "move the {obj} {into} the {tgt}",
        "pp3": "pick up the {obj} and put it {prep} the {tgt}",
        "pp4": "put the {obj} {into} the {tgt}",
        "pp5": "transfer the {obj} {into} the {tgt}",
        "pp6": "the {obj} belongs {prep} the {tgt}, take it there",
        "pp7": "grab the {obj} and drop it {into} the {tgt}",
    },
    "pick_up": {
        "pu0": "pick up the {obj}",
        "pu1": "lift the {obj}",
        "pu2": "grab the {obj}",
        "pu3": "pick the {obj} up off the table",
        "pu4": "raise the {obj} into the air",
        "pu5": "take hold of the {obj} and lift it",
    },
    "push": {
        "ps0": "push the {obj} onto the {tgt}",
        "ps1": "push the {obj} to the {tgt}",
        "ps2": "slide the {obj} onto the {tgt}",
        "ps3": "move the {obj} to the {tgt} by pushing it",
        "ps4": "nudge the {obj} over to the {tgt}",
        "ps5": "shove the {obj} toward the {tgt} until it is on it",
    },
    "stack": {
        "st0": "stack the {obj} on the {tgt}",
        "st1": "put the {obj} on top of the {tgt}",
        "st2": "place the {obj} on the {tgt}",
        "st3": "stack the {obj} on top of the {tgt}",
        "st4": "build a tower by setting the {obj} onto the {tgt}",
        "st5": "set the {obj} atop the {tgt}",
    },
}
HELDOUT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "pick_place": ("pp5", "pp6", "pp7"),
    "pick_up": ("pu4", "pu5"),
    "push": ("ps4", "ps5"),
    "stack": ("st4", "st5"),
}
GOALS = {
    "pick_place": "the {obj} is {prep} the {tgt}",
    "pick_up": "the {obj} is lifted off the table",
    "push": "the {obj} is on the {tgt}",
    "stack": "the {obj} is stacked on the {tgt}",
}


def preposition(target_kind: str | None) -> tuple[str, str]:
    if target_kind in ("bowl", "box"):
        return "in", "into"
    return "on", "onto"


def render_instruction(family: str, template_id: str, obj: str, tgt: str | None, tgt_kind: str | None) -> str:
    prep, into = preposition(tgt_kind)
    return TEMPLATES[family][template_id].format(obj=obj, tgt=tgt or "", prep=prep, into=into)


def goal_text(family: str, obj: str, tgt: str | None, tgt_kind: str | None) -> str:
    prep, _ = preposition(tgt_kind)
    return GOALS[family].format(obj=obj, tgt=tgt or "", prep=prep)
