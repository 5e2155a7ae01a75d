"""ETC mixture: empirical ratios match the weights, reproducibility, split mixing, bad weights."""
from __future__ import annotations

from collections import Counter

import pytest

from etc_training.etc.mixture import (
    DEFAULT_GROUP_WEIGHTS,
    GROUPS,
    SUBTYPE_CATEGORY,
    SUBTYPE_GROUP,
    EtcMixture,
    MixtureError,
)


def pool(per_subtype=None, splits=("train",)):
    out = []
    for st in SUBTYPE_GROUP:
        for sp in splits:
            for k in range((per_subtype or {}).get(st, 7)):
                out.append({"id": f"{st}-{sp}-{k}", "subtype": st, "category": SUBTYPE_CATEGORY[st], "split": sp})
    return out


def test_default_weights_are_the_authors_full_etc_weights():
    assert DEFAULT_GROUP_WEIGHTS == {"affordance": 0.22, "goal": 0.14, "spatial": 0.24, "planning": 0.14,
                                     "trajectory": 0.26}
    assert abs(sum(DEFAULT_GROUP_WEIGHTS.values()) - 1.0) < 1e-12
    assert set(SUBTYPE_GROUP) == {s for subs in GROUPS.values() for s in subs}


def test_empirical_group_ratios_match_weights():
    # very unbalanced pool: the mixture, not the pool sizes, decides the ratios
    samples = pool({"point": 500, "trajectory": 3, "goal": 1, "plan": 40})
    mix = EtcMixture(samples, None, seed=1)
    n = 40000
    got = Counter(SUBTYPE_GROUP[s["subtype"]] for s in mix.sample(n))
    for g, w in DEFAULT_GROUP_WEIGHTS.items():
        assert abs(got[g] / n - w) < 0.01, (g, got[g] / n, w)
    # within a group subtypes are uniform by default
    sub = Counter(s["subtype"] for s in mix.sample(n) if SUBTYPE_GROUP[s["subtype"]] == "affordance")
    tot = sum(sub.values())
    assert abs(sub["affordance_grasp"] / tot - 0.5) < 0.03


def test_subtype_and_category_weights():
    mix = EtcMixture(pool(), {"groups": {"spatial": 1.0}, "subtypes": {"point": 3.0, "box": 1.0, "objects": 0,
                                                                       "relation": 0, "gripper_relation": 0}}, seed=0)
    c = Counter(s["subtype"] for s in mix.sample(20000))
    assert set(c) == {"point", "box"} and abs(c["point"] / 20000 - 0.75) < 0.015
    mix2 = EtcMixture(pool(), {"categories": {"action_planning": 0.5, "scene_grounding": 0.5}}, seed=0)
    c2 = Counter(s["category"] for s in mix2.sample(20000))
    assert set(c2) == {"action_planning", "scene_grounding"}
    assert abs(c2["action_planning"] / 20000 - 0.5) < 0.015
    assert mix2.expected_ratios("category") == pytest.approx({"action_planning": 0.5, "scene_grounding": 0.5})


def test_split_mixing_for_ood_etc():
    mix = EtcMixture(pool(splits=("train", "ood")), {"splits": {"train": 0.9, "ood": 0.1}}, seed=3)
    c = Counter(s["split"] for s in mix.sample(20000))
    assert abs(c["ood"] / 20000 - 0.1) < 0.01


def test_missing_groups_are_renormalised():
    only = [s for s in pool() if SUBTYPE_GROUP[s["subtype"]] in ("trajectory", "goal")]
    mix = EtcMixture(only, None, seed=0)
    r = mix.expected_ratios("group")
    assert r == pytest.approx({"trajectory": 0.26 / 0.40, "goal": 0.14 / 0.40})


def test_reproducible_and_seed_dependent():
    s = pool()
    a = [x["id"] for x in EtcMixture(s, None, seed=5).sample(300)]
    b = [x["id"] for x in EtcMixture(s, None, seed=5).sample(300)]
    c = [x["id"] for x in EtcMixture(s, None, seed=6).sample(300)]
    assert a == b and a != c
    it1, it2 = iter(EtcMixture(s, None, seed=5)), iter(EtcMixture(s, None, seed=5))
    assert [next(it1)["id"] for _ in range(50)] == [next(it2)["id"] for _ in range(50)]
    stream = iter(EtcMixture(s, None, seed=9))
    assert len([next(stream) for _ in range(2500)]) == 2500  # infinite iterator crosses its refill boundary


@pytest.mark.parametrize("weights,match", [
    ({"groups": {"nonsense": 1.0}}, "unknown group"),
    ({"groups": {"spatial": -1.0}}, ">= 0"),
    ({"subtypes": {"teleport": 1.0}}, "unknown subtype"),
    ({"groups": {"affordance": 0, "goal": 0, "spatial": 0, "planning": 0, "trajectory": 0}}, "zero"),
    ({"splits": {"val": 1.0}}, "none of the available"),
    ("heavy", "mapping"),
])
def test_bad_weights(weights, match):
    with pytest.raises(MixtureError, match=match):
        EtcMixture(pool(), weights, seed=0)


def test_bad_samples():
    with pytest.raises(MixtureError, match="no samples"):
        EtcMixture([], None)
    with pytest.raises(MixtureError, match="unknown subtype"):
        EtcMixture([{"id": "x", "subtype": "dance"}], None)
