"""Train / OOD splits are disjoint by construction, and sampled episodes respect their partitions."""
from __future__ import annotations

import itertools

import pytest

from etc_ros.core.errors import UserError
from etc_training.sim import splits
from etc_training.sim.config import FAMILIES
from etc_training.sim.language import HELDOUT_TEMPLATES, TEMPLATES
from etc_training.sim.objects import GRASPABLE_KINDS, NOVEL_KINDS
from etc_training.sim.tasks import OBJECT_KINDS, TARGET_KINDS, sample_episode

N = 40  # sampled episodes per split


def test_partitions_are_disjoint_by_construction():
    assert not set(splits.TRAIN_COLORS) & set(splits.OOD_COLORS)
    assert not set(splits.TRAIN_DISTRACTOR_KINDS) & set(splits.OOD_DISTRACTOR_KINDS)
    assert set(splits.OOD_DISTRACTOR_KINDS) == set(NOVEL_KINDS)
    for fam in FAMILIES:
        tr, ph = set(splits.template_ids(fam, "train")), set(splits.template_ids(fam, "ood_phrase"))
        assert tr and ph and not tr & ph
        assert tr | ph == set(TEMPLATES[fam]) and ph == set(HELDOUT_TEMPLATES[fam])
        assert not {TEMPLATES[fam][i] for i in tr} & {TEMPLATES[fam][i] for i in ph}


@pytest.mark.parametrize("family", ["pick_place", "push", "stack"])
def test_combo_partition_covers_every_object_and_target(family):
    names_o = [f"{c} {k}" for c in splits.TRAIN_COLORS for k in OBJECT_KINDS[family]]
    names_t = [f"{c} {k}" for c in splits.TRAIN_COLORS for k in TARGET_KINDS[family]]
    pairs = [(o, t) for o, t in itertools.product(names_o, names_t) if o.split()[0] != t.split()[0]]
    held = {p for p in pairs if splits.pair_allowed("ood_combo", *p)}
    train = {p for p in pairs if splits.pair_allowed("train", *p)}
    assert held and train and not held & train and held | train == set(pairs)
    # only the pairing is new: every object and every target of ood_combo also occurs in train
    assert {o for o, _ in held} <= {o for o, _ in train}
    assert {t for _, t in held} <= {t for _, t in train}


def _episodes(split):
    return [sample_episode(seed, split) for seed in range(N)]


def test_train_split_stays_in_distribution():
    for ep in _episodes("train"):
        objs = ep.scene.objects
        assert all(po.spec.color in splits.TRAIN_COLORS for po in objs)
        assert all(po.spec.kind in splits.TRAIN_DISTRACTOR_KINDS for po in objs if po.role == "distractor")
        assert ep.task.template_id.split("/")[1] in splits.template_ids(ep.task.family, "train")
        if ep.task.target:
            assert not splits.combo_heldout(ep.task.object, ep.task.target)


def test_ood_color_uses_unseen_colours():
    for ep in _episodes("ood_color"):
        obj = ep.scene.object(ep.task.object)
        assert obj.spec.color in splits.OOD_COLORS


def test_ood_combo_uses_heldout_pairs_of_seen_things():
    for ep in _episodes("ood_combo"):
        assert ep.task.target is not None and splits.combo_heldout(ep.task.object, ep.task.target)
        assert all(po.spec.color in splits.TRAIN_COLORS for po in ep.scene.objects)


def test_ood_distractor_uses_unseen_kinds_only():
    n_d = 0
    for ep in _episodes("ood_distractor"):
        for po in ep.scene.objects:
            if po.role == "distractor":
                assert po.spec.kind in splits.OOD_DISTRACTOR_KINDS
                n_d += 1
            else:
                assert po.spec.kind not in splits.OOD_DISTRACTOR_KINDS and po.spec.color in splits.TRAIN_COLORS
    assert n_d >= N


def test_ood_phrase_uses_heldout_templates():
    for ep in _episodes("ood_phrase"):
        fam, tid = ep.task.template_id.split("/")
        assert tid in HELDOUT_TEMPLATES[fam]


def test_sampling_is_seeded_and_varied():
    a, b = sample_episode(7, "train"), sample_episode(7, "train")
    assert a.task == b.task and [po.xy for po in a.scene.objects] == [po.xy for po in b.scene.objects]
    assert (a.scene.primary_T == b.scene.primary_T).all()
    eps = _episodes("train")
    assert len({ep.task.family for ep in eps}) == len(FAMILIES)
    assert len({ep.scene.appearance.table_rgb1 for ep in eps}) > N // 2
    assert len({tuple(ep.scene.primary_T[:3, 3].round(6)) for ep in eps}) == N  # camera jitter
    assert {ep.scene.object(ep.task.object).spec.kind for ep in eps} == set(GRASPABLE_KINDS)


def test_bad_split_and_family_are_clear_errors():
    with pytest.raises(UserError, match="unknown split"):
        sample_episode(0, "validation")
    with pytest.raises(UserError, match="family"):
        sample_episode(0, "train", family="juggle")
    with pytest.raises(UserError, match="seed"):
        sample_episode(-1, "train")
