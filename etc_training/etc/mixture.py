"""ETC mixture: reproducible weighted sampling of ETC records by group / subtype / split.

Groups (the authors' full-ETC sampling weights) and the subtypes mapped to them:

    affordance 0.22  affordance_grasp, affordance_place                    (task-oriented)
    goal       0.14  goal                                                  (scene-grounding)
    spatial    0.24  point, box, objects, relation, gripper_relation        (scene-grounding)
    planning   0.14  plan, next_subtask, done                              (task-oriented)
    trajectory 0.26  trajectory                                            (action-aligned planning)

Sampling is hierarchical: group (by `weights.groups`, renormalised over groups that have samples), then subtype
inside the group (`weights.subtypes`, default uniform over present subtypes), then optionally split
(`weights.splits`, e.g. {"train": 0.9, "ood": 0.1} for Stage-3 OOD mixing; default: pooled), then a uniformly
drawn record. Weights may also be given per category (`weights.categories`): then the category is drawn first
and groups are drawn inside it. Same seed -> same sequence.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from etc_ros.core.errors import UserError

CATEGORIES = ("scene_grounding", "task_oriented", "action_planning")
GROUPS: dict[str, tuple[str, ...]] = {
    "affordance": ("affordance_grasp", "affordance_place"),
    "goal": ("goal",),
    "spatial": ("point", "box", "objects", "relation", "gripper_relation"),
    "planning": ("plan", "next_subtask", "done"),
    "trajectory": ("trajectory",),
}
GROUP_CATEGORY = {"affordance": "task_oriented", "goal": "scene_grounding", "spatial": "scene_grounding",
                  "planning": "task_oriented", "trajectory": "action_planning"}
SUBTYPE_GROUP = {s: g for g, subs in GROUPS.items() for s in subs}
SUBTYPE_CATEGORY = {s: GROUP_CATEGORY[g] for s, g in SUBTYPE_GROUP.items()}
DEFAULT_GROUP_WEIGHTS = {"affordance": 0.22, "goal": 0.14, "spatial": 0.24, "planning": 0.14, "trajectory": 0.26}


class MixtureError(UserError):
    pass


@dataclass
class MixtureWeights:
    groups: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_GROUP_WEIGHTS))
    subtypes: dict[str, float] = field(default_factory=dict)  # relative weight inside its group (default 1)
    categories: dict[str, float] = field(default_factory=dict)  # optional: draw the category first
    splits: dict[str, float] = field(default_factory=dict)  # optional: draw the source split last


def _check(d: dict, known: Sequence[str] | None, what: str) -> None:
    for k, v in d.items():
        if known is not None and k not in known:
            raise MixtureError(f"unknown {what} {k!r} in mixture weights; known: {list(known)}")
        if not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
            raise MixtureError(f"mixture weight for {what} {k!r} must be a finite number >= 0, got {v!r}")


def _as_weights(w) -> MixtureWeights:
    if w is None:
        return MixtureWeights()
    if isinstance(w, MixtureWeights):
        return w
    if isinstance(w, dict):
        if set(w) <= {"groups", "subtypes", "categories", "splits"}:
            return MixtureWeights(groups=dict(w.get("groups") or DEFAULT_GROUP_WEIGHTS),
                                  subtypes=dict(w.get("subtypes") or {}), categories=dict(w.get("categories") or {}),
                                  splits=dict(w.get("splits") or {}))
        return MixtureWeights(groups=dict(w))  # a plain {group: weight} mapping
    raise MixtureError(f"mixture weights must be a mapping, got {type(w).__name__}")


class EtcMixture:
    """`EtcMixture(samples, weights, seed).sample(n)` -> list of records; `iter(mix)` -> infinite stream."""

    def __init__(self, samples: Sequence[dict], weights=None, seed: int = 0):
        self.weights = _as_weights(weights)
        w = self.weights
        _check(w.groups, list(GROUPS), "group")
        _check(w.subtypes, list(SUBTYPE_GROUP), "subtype")
        _check(w.categories, list(CATEGORIES), "category")
        _check(w.splits, None, "split")
        self.samples = list(samples)
        if not self.samples:
            raise MixtureError("the ETC mixture got no samples")
        # index: category -> group -> subtype -> split -> [indices]
        self._pool: dict[str, dict[str, dict[str, dict[str, list[int]]]]] = {}
        for i, s in enumerate(self.samples):
            st = s.get("subtype")
            if st not in SUBTYPE_GROUP:
                raise MixtureError(f"sample {s.get('id', i)!r} has unknown subtype {st!r}")
            g = SUBTYPE_GROUP[st]
            split = str(s.get("split", "train"))
            self._pool.setdefault(GROUP_CATEGORY[g], {}).setdefault(g, {}).setdefault(st, {}).setdefault(
                split, []).append(i)
        self._tree = self._build_tree()
        self.seed = seed
        self._rng = np.random.default_rng(seed)

    # probability tree with only present leaves ---------------------------------------------------------
    def _build_tree(self):
        w = self.weights
        use_cat = bool(w.categories)
        leaves: list[tuple[float, str, str, str, list[int]]] = []  # (prob, group, subtype, split, indices)
        cats = {}
        for cat, groups in self._pool.items():
            gw = {g: float(w.groups.get(g, 0.0)) for g in groups}
            cats[cat] = gw
        if use_cat:
            cat_w = {c: float(w.categories.get(c, 0.0)) for c in cats}
            cat_w = {c: v for c, v in cat_w.items() if v > 0}
            tot_c = sum(cat_w.values())
            if tot_c <= 0:
                raise MixtureError("all category weights of the present categories are zero")
        else:
            all_g = {g: v for c in cats.values() for g, v in c.items()}
            tot_g = sum(all_g.values())
            if tot_g <= 0:
                raise MixtureError("all group weights of the present groups are zero")
        for cat, groups in self._pool.items():
            if use_cat:
                pc = cat_w.get(cat, 0.0) / tot_c
                tot_in = sum(v for v in cats[cat].values())
                if pc > 0 and tot_in <= 0:
                    # category weight given but all its group weights zero: spread uniformly over its groups
                    gprobs = {g: pc / len(groups) for g in groups}
                else:
                    gprobs = {g: (pc * cats[cat][g] / tot_in if tot_in > 0 else 0.0) for g in groups}
            else:
                gprobs = {g: cats[cat][g] / tot_g for g in groups}
            for g, subs in groups.items():
                sw = {s: float(w.subtypes.get(s, 1.0)) for s in subs}
                tot_s = sum(sw.values())
                if tot_s <= 0:
                    continue
                for s, splits in subs.items():
                    ps = gprobs[g] * sw[s] / tot_s
                    if w.splits:
                        spw = {sp: float(w.splits.get(sp, 0.0)) for sp in splits}
                        tot_sp = sum(spw.values())
                        if tot_sp <= 0:
                            continue
                        for sp, idx in splits.items():
                            if spw[sp] > 0:
                                leaves.append((ps * spw[sp] / tot_sp, g, s, sp, idx))
                    else:
                        pooled = [i for idx in splits.values() for i in idx]
                        leaves.append((ps, g, s, "*", pooled))
        leaves = [lf for lf in leaves if lf[0] > 0]
        if not leaves:
            raise MixtureError("the mixture weights select none of the available samples")
        probs = np.array([lf[0] for lf in leaves], dtype=float)
        probs /= probs.sum()
        return probs, leaves

    def expected_ratios(self, level: str = "group") -> dict[str, float]:
        """Probability of each group ('group'), subtype ('subtype') or category ('category') per draw."""
        probs, leaves = self._tree
        out: dict[str, float] = {}
        for p, g, s, _sp, _ in leaves:
            key = {"group": g, "subtype": s, "category": GROUP_CATEGORY[g]}[level]
            out[key] = out.get(key, 0.0) + float(p)
        return out

    def sample_indices(self, n: int) -> np.ndarray:
        if n < 0:
            raise MixtureError(f"cannot draw {n} samples")
        probs, leaves = self._tree
        which = self._rng.choice(len(leaves), size=n, p=probs)
        out = np.empty(n, dtype=np.int64)
        for k in np.unique(which):
            pos = np.nonzero(which == k)[0]
            idx = leaves[k][4]
            out[pos] = np.asarray(idx)[self._rng.integers(len(idx), size=len(pos))]
        return out

    def sample(self, n: int) -> list[dict]:
        return [self.samples[i] for i in self.sample_indices(n)]

    def __iter__(self) -> Iterator[dict]:
        while True:
            for i in self.sample_indices(1024):
                yield self.samples[i]
