"""The ETC ablation's variants beyond the pathway of the paper's Table (issue 17, item 1): three_stage_ood (OOD ETC
in Stage 3, from scenes whose actions the policy never trains on; refused without such ETC) and the category
variants etc_<category> (every ETC source restricted to one category, checked on real generated ETC, down to the
records the stage sampler draws), the existing variants unchanged, the closed-loop splits a task family can make,
the success pooled over seeds with a Wilson interval in the table, and a tiny end-to-end run that resumes."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from etc_ros.core.config import to_dict
from etc_training.etc.mixture import CATEGORIES, SUBTYPE_CATEGORY
from etc_training.recipe import ablate
from etc_training.recipe.ablate import (
    CATEGORY_VARIANTS,
    AblationConfig,
    ood_etc_source,
    variant_config,
)
from etc_training.recipe.config import RecipeError, SourceConfig, load_train_config

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "config/train_tiny.yaml")
PICKUP = str(ROOT / "config/ablation_pickup.yaml")
TARGET_ONLY = "stages.stage3.etc_sources=[{name: target, kind: etc, splits: [target], weight: 1.0}]"
OLD = ("action_only", "etc_stage2", "three_stage", "db_action_only")


@pytest.fixture(scope="module")
def syn(tmp_path_factory):
    """Generated tiny episodes + their ETC (splits train / val / target / ood, all three categories)."""
    from etc_training.recipe.data import make_synthetic_data

    root = tmp_path_factory.mktemp("ablate")
    cfg = load_train_config(TINY, ["data.synthetic.episodes=3", "data.synthetic.val_episodes=1",
                                   "data.synthetic.target_episodes=1", "data.synthetic.ood_episodes=1",
                                   "data.synthetic.etc_stride=8"])
    eps, etc = make_synthetic_data(root / "data", cfg.data.synthetic)
    return {"root": root, "eps": str(eps), "etc": str(etc), "data": [f"data.episodes={eps}", f"data.etc={etc}"]}


def _ood(splits=("ood",)) -> SourceConfig:
    return SourceConfig(name="ood", kind="etc", splits=list(splits))


# ---------------------------------------------------------------- variant configurations
@pytest.mark.parametrize("path,ov", [(PICKUP, []), (TINY, [TARGET_ONLY])])
def test_new_variants_change_only_their_part(path, ov):
    base = load_train_config(path, ov)
    full = to_dict(variant_config(base, "three_stage"))
    ood = variant_config(base, "three_stage_ood", ood_source=_ood(), ood_share=0.1)
    s3 = ood.stages.stage3
    assert [s.name for s in s3.etc_sources][-1] == "ood" and s3.etc_sources[-1].splits == ["ood"]
    assert s3.etc_sources[-1].weight / sum(s.weight for s in s3.etc_sources) == pytest.approx(0.1)
    d = to_dict(ood)
    d["stages"]["stage3"]["etc_sources"].pop()
    assert d == full  # three_stage + the OOD source, nothing else (same ETC batch: the same compute)
    for cat in CATEGORIES:
        c = variant_config(base, f"etc_{cat}")
        srcs = [s for _, st in c.stages.items() for s in st.etc_sources]
        assert srcs and all(s.categories == [cat] for s in srcs)
        d = to_dict(c)
        for _, st in d["stages"].items():
            for s in st["etc_sources"]:
                s["categories"] = []
        assert d == full  # three_stage with the category filter, nothing else
    for v in OLD + ("three_stage_ood",) + CATEGORY_VARIANTS:  # the OOD source only in three_stage_ood
        c = variant_config(base, v, ood_source=_ood())
        has = any("ood" in s.splits for _, st in c.stages.items() for s in st.etc_sources)
        assert has == (v == "three_stage_ood"), v
        if v in OLD:  # the existing variants ignore the new arguments
            assert to_dict(c) == to_dict(variant_config(base, v))
        if v not in CATEGORY_VARIANTS:
            assert all(not s.categories for _, st in c.stages.items() for s in st.etc_sources)


def test_existing_variants_unchanged_on_the_tiny_recipe():
    base = load_train_config(TINY)
    s1, s2, s3 = base.stages.stage1, base.stages.stage2, base.stages.stage3
    for v in OLD:
        for budget in ("stages", "total"):
            c = variant_config(base, v, budget)
            has1 = v in ("three_stage", "db_action_only")
            assert c.stages.stage1.enabled == has1
            assert c.stages.stage2.steps == s2.steps + (s1.steps if budget == "total" and not has1 else 0)
            etc = v in ("etc_stage2", "three_stage")
            assert c.stages.stage2.resolved_etc_batch() == (s2.resolved_etc_batch() if etc else 0)
            assert c.stages.stage3.resolved_etc_batch() == (s3.resolved_etc_batch() if etc else 0)
            assert to_dict(c.stages.stage3.etc_sources) == to_dict(s3.etc_sources)  # target 0.9 / ood 0.1 kept


def test_pickup_ablation_config_same_budget_per_variant():
    base = load_train_config(PICKUP)
    assert not any("ood" in "".join(s.splits) for _, st in base.stages.items() for s in st.etc_sources)
    steps = set()
    for v in ablate.VARIANTS:
        if v in ablate.RETENTIVE_VARIANTS + ablate.RETENTIVE_CATEGORY_VARIANTS + ablate.MIDTRAIN_VARIANTS:
            continue  # from a trained policy (tested below)
        c = variant_config(base, v, "total", ood_source=_ood(["ood_color"]))
        steps.add(sum(s.steps for _, s in c.stages.items() if s.enabled))
        etc = v not in ("action_only", "db_action_only")
        assert c.stages.stage2.resolved_etc_batch() == (8 if etc else 0) and c.stages.stage2.grounding_batch == 16
        assert c.stages.stage3.action_splits == ["train"] and c.model.head == "regression"
    assert steps == {5400}
    # the retentive variants: Stage 3 alone (1800 steps) from one trained policy, ETC 8 of 56 except s3_action_only
    init = load_train_config(PICKUP, ["model.init=runs/policy_pickup/stage2/final"])
    for v in ablate.RETENTIVE_VARIANTS + ablate.RETENTIVE_CATEGORY_VARIANTS:
        c = variant_config(init, v, "total", ood_source=_ood(["ood_color"]))
        assert [n for n, s in c.stages.items() if s.enabled] == ["stage3"] and c.stages.stage3.steps == 1800
        assert c.stages.stage3.resolved_etc_batch() == (0 if v == "s3_action_only" else 8)


def test_bad_categories_and_ood_arguments_are_refused():
    base = load_train_config(TINY, [TARGET_ONLY])
    with pytest.raises(RecipeError, match="unknown ETC categor"):
        load_train_config(TINY, ["stages.stage2.etc_sources=[{name: e, kind: etc, categories: [spatial]}]"])
    with pytest.raises(RecipeError, match="needs an OOD ETC source"):
        variant_config(base, "three_stage_ood")
    with pytest.raises(RecipeError, match=r"must be in \(0, 1\)"):
        variant_config(base, "three_stage_ood", ood_source=_ood(), ood_share=1.0)
    with pytest.raises(RecipeError, match="already draws from the OOD"):  # train_tiny's Stage 3 mixes OOD ETC
        variant_config(load_train_config(TINY), "three_stage_ood", ood_source=_ood())
    with pytest.raises(RecipeError, match="limited to the categories"):
        b = load_train_config(TINY, ["stages.stage2.etc_sources=[{name: e, kind: etc, categories: [task_oriented]}]"])
        variant_config(b, "etc_scene_grounding")
    with pytest.raises(RecipeError, match="give the category no weight"):
        b = load_train_config(TINY, ["stages.stage2.etc_sources=[{name: e, kind: etc, groups: {trajectory: 1.0}}]"])
        variant_config(b, "etc_scene_grounding")
    assert ablate.expand_variants(["three_stage", "pathway", "categories"]) == \
        ["three_stage", "action_only", "etc_stage2", "three_stage_ood"] + list(CATEGORY_VARIANTS)


# ---------------------------------------------------------------- category filter on real ETC
def test_category_variant_draws_only_its_category(syn):
    from etc_training.recipe.data import StageData, load_language_source

    base = load_train_config(TINY, syn["data"] + [TARGET_ONLY])

    def drawn(cfg) -> Counter:
        cats: Counter = Counter()
        for _, st in cfg.stages.items():
            srcs = [(load_language_source(s, cfg.data.etc), s.weight) for s in st.etc_sources]
            data = StageData(None, None, srcs, 0, 16, seed=3, etc_groups=[dict(s.groups) or None
                                                                        for s in st.etc_sources])
            for _ in range(25):
                for k, i in data.draw()[1]:
                    rec = data.sources[k].records[i]
                    assert SUBTYPE_CATEGORY[rec["subtype"]] == rec["category"]
                    cats[rec["category"]] += 1
        return cats

    assert set(drawn(variant_config(base, "three_stage"))) == set(CATEGORIES)  # all three in the full pathway
    for cat in CATEGORIES:
        c = drawn(variant_config(base, f"etc_{cat}"))
        assert set(c) == {cat} and sum(c.values()) == 3 * 25 * 16  # the same ETC batches, one category
    # the retentive form: s3_etc_<category> is s3_etc (Stage 3 only, from model.init) with one category
    init = load_train_config(TINY, syn["data"] + [TARGET_ONLY, "model.init=" + str(syn["root"])])
    full = variant_config(init, "s3_etc")
    assert set(drawn(full)) == set(CATEGORIES)
    for cat in CATEGORIES:
        one = variant_config(init, f"s3_etc_{cat}")
        c = drawn(one)
        assert set(c) == {cat} and sum(c.values()) == 3 * 25 * 16
        d_one, d_full = to_dict(one), to_dict(full)
        for d in (d_one, d_full):
            for st in d["stages"].values():
                for src in st["etc_sources"]:
                    src.pop("categories")
        assert d_one == d_full  # nothing else differs from s3_etc: same stages, steps, batches, init
        assert [s.categories for s in one.stages.stage3.etc_sources] == [[cat]]
        assert one.stages.stage3.resolved_etc_batch() == full.stages.stage3.resolved_etc_batch() > 0
    assert ablate.expand_variants(["retentive_categories"]) == \
        ["s3_action_only", "s3_etc"] + [f"s3_etc_{c}" for c in CATEGORIES]
    order = ablate._run_order(["s3_etc_task_oriented", "s3_action_only", "s3_etc"], [0, 1])
    assert order == [("s3_action_only", 0), ("s3_etc", 0), ("s3_action_only", 1), ("s3_etc", 1),
                     ("s3_etc_task_oriented", 0), ("s3_etc_task_oriented", 1)]  # references first
    with pytest.raises(RecipeError, match="s3_etc_scene_grounding: .*give the category no weight"):
        b = load_train_config(TINY, ["model.init=x",
                                     "stages.stage3.etc_sources=[{name: e, kind: etc, groups: {trajectory: 1.0}}]"])
        variant_config(b, "s3_etc_scene_grounding")


# ---------------------------------------------------------------- OOD ETC: found or refused
def test_ood_etc_source_found_or_refused(syn, tmp_path):
    from etc_training.etc.store import FORMAT
    from etc_training.recipe.data import load_language_source

    base = load_train_config(TINY, syn["data"] + [TARGET_ONLY])
    src = ood_etc_source(base, AblationConfig())
    assert src.splits == ["ood"] and src.path is None  # the ood split of data.etc, whose actions no stage uses
    cfg = variant_config(base, "three_stage_ood", ood_source=src)
    recs = load_language_source(cfg.stages.stage3.etc_sources[-1], syn["etc"]).records
    assert recs and {r["split"] for r in recs} == {"ood"}
    assert ablate.etc_split_counts(syn["etc"])["ood"] == len(recs)
    with pytest.raises(RecipeError, match=r"no ETC in split\(s\) \['ood_color'\]"):
        ood_etc_source(base, AblationConfig(ood_etc_splits=["ood_color"]))
    with pytest.raises(RecipeError, match=r"trains on the actions of split\(s\) \['target'\]"):
        ood_etc_source(base, AblationConfig(ood_etc_splits=["target"]))
    # an ETC with no OOD split (train only): refused, naming what is there and how to make OOD ETC
    only = tmp_path / "etc_train_only"
    only.mkdir()
    (only / "index.json").write_text(json.dumps({"format": FORMAT, "files": [
        {"path": "samples/train/scene_grounding.jsonl", "split": "train", "category": "scene_grounding",
         "count": 5}]}))
    with pytest.raises(RecipeError, match=r"has no OOD ETC split \(splits present: \['train'\]\).*--ood-etc"):
        ood_etc_source(base, AblationConfig(ood_etc=str(only)))
    with pytest.raises(RecipeError, match="not found"):
        ood_etc_source(base, AblationConfig(ood_etc=str(tmp_path / "nope")))
    # the ablation refuses before any training starts
    with pytest.raises(RecipeError, match="has no OOD ETC split"):
        ablate.run_ablation(base, AblationConfig(out=str(tmp_path / "abl"), variants=["three_stage_ood"], seeds=[0],
                                                 eval_episodes=0, ood_etc=str(only)), progress=False, log=None)
    assert not (tmp_path / "abl" / "three_stage_ood").exists()


# ---------------------------------------------------------------- evaluation splits and the table
def test_eval_splits_skip_what_the_family_cannot_make():
    keep, skipped = ablate.eval_splits(AblationConfig(eval_splits=["all"], families=["pick_up"]))
    assert keep == ["train", "ood_color", "ood_distractor", "ood_phrase"] and list(skipped) == ["ood_combo"]
    assert "target" in skipped["ood_combo"]
    keep, skipped = ablate.eval_splits(AblationConfig(eval_splits=["all"]))
    assert "ood_combo" in keep and not skipped
    with pytest.raises(RecipeError, match="unknown sim split"):
        ablate.eval_splits(AblationConfig(eval_splits=["ood_weather"]))
    with pytest.raises(RecipeError, match="unknown task family"):
        ablate.eval_splits(AblationConfig(eval_splits=["train"], families=["juggle"]))


def test_table_pools_success_over_seeds_with_a_wilson_interval(tmp_path):
    from etc_training.recipe.evaluate import wilson_interval

    acfg = AblationConfig(out=str(tmp_path), variants=["action_only", "three_stage_ood"], seeds=[0, 1, 2],
                          eval_episodes=50, eval_splits=["all"], families=["pick_up"])
    runs = []
    for v, ks in (("action_only", (20, 25, 30)), ("three_stage_ood", (40, 45, 50))):
        for s, k in enumerate(ks):
            runs.append({"variant": v, "seed": s, "steps": 5400, "train_s": 4020.0 + 60 * s, "eval_s": 360.0,
                         "val_action_loss": 0.1, "success": {"train": k / 50, "ood_color": k / 100},
                         "success_counts": {"train": [k, 50], "ood_color": [k // 2, 50]}, "cka_curve": []})
    meta = {"eval_splits": ["train", "ood_color"], "skipped_splits": {"ood_combo": "needs a target"},
            "ood_etc": {"path": "d/etc_ood", "splits": ["ood_color"], "share": 0.1}}
    res = ablate._write(tmp_path, acfg, runs, 100.0, meta)
    lo, hi = wilson_interval(75, 150)
    row = {r["variant"]: r for r in res["table"]}
    p = row["action_only"]["pooled:train"]
    assert (p["successes"], p["episodes"], p["seeds"]) == (75, 150, 3) and p["rate"] == pytest.approx(0.5)
    assert p["ci95"] == [round(lo, 4), round(hi, 4)]
    assert row["three_stage_ood"]["pooled:ood_color"]["successes"] == 20 + 22 + 25
    assert row["action_only"]["train_min"][0] == pytest.approx(68.0)  # run time per variant, minutes
    md = (tmp_path / "ablation.md").read_text()
    assert f"0.50 [{lo:.2f}, {hi:.2f}] (75/150); 0.50 ± 0.10" in md  # pooled + Wilson next to mean ± std
    assert "| three_stage_ood | 3 | 5400 |" in md and "68.0 ± 1.0 | 6.0 ± 0.0 |" in md
    assert "`ood_combo` not evaluated: needs a target" in md and "10% of the Stage-3 ETC batch" in md
    saved = json.loads((tmp_path / "ablation.json").read_text())
    assert saved["skipped_splits"] == {"ood_combo": "needs a target"} and saved["table"][0]["pooled:train"] == p
    # runs without counts (older results) still give mean ± std and no pooled cell
    for r in runs:
        del r["success_counts"]
    _, rows = ablate._table(acfg, runs, ["train"])
    assert rows[0]["pooled:train"] is None and rows[0]["success:train"][0] == pytest.approx(0.5)


def test_retentive_variants_adapt_one_policy_in_stage3_only(syn):
    """s3_*: Stages 1-2 off, Stage 3 from model.init with the same steps; ETC only where named, OOD ETC only in
    s3_etc_ood; refused without a trained policy to start from or without Stage-3 ETC."""
    base = load_train_config(TINY, syn["data"] + [TARGET_ONLY, "model.init=" + str(syn["root"])])
    ood = SourceConfig(name="ood", kind="etc", splits=["ood"])
    cfgs = {v: variant_config(base, v, "total", ood, 0.1) for v in ablate.expand_variants(["retentive"])}
    assert list(cfgs) == ["s3_action_only", "s3_etc", "s3_etc_ood"]
    for v, c in cfgs.items():
        assert not c.stages.stage1.enabled and not c.stages.stage2.enabled and c.stages.stage3.enabled
        assert c.stages.stage3.steps == base.stages.stage3.steps and c.model.init == base.model.init
    assert cfgs["s3_action_only"].stages.stage3.resolved_etc_batch() == 0
    assert cfgs["s3_etc"].stages.stage3.resolved_etc_batch() == base.stages.stage3.resolved_etc_batch() > 0
    assert [s.name for s in cfgs["s3_etc"].stages.stage3.etc_sources] == \
        [s.name for s in base.stages.stage3.etc_sources]
    assert [s.name for s in cfgs["s3_etc_ood"].stages.stage3.etc_sources][-1] == "ood"
    no_init = load_train_config(TINY, syn["data"] + [TARGET_ONLY])
    with pytest.raises(RecipeError, match="set model.init"):
        variant_config(no_init, "s3_etc", "total", ood)
    no_etc = load_train_config(TINY, syn["data"] + [TARGET_ONLY, "model.init=x", "stages.stage3.etc_ratio=0"])
    with pytest.raises(RecipeError, match="Stage 3 has no ETC"):
        variant_config(no_etc, "s3_etc", "total", ood)


def test_paired_difference_pairs_the_same_scenes_of_the_same_seed(tmp_path):
    """three_stage minus action_only is computed on (training seed, scene) pairs: scenes only one variant ran, or a
    seed the reference lacks, are not paired; the interval is the paired bootstrap's, in points."""
    from etc_training.recipe.evaluate import paired_bootstrap

    def ev(outcomes, split="train"):
        return {"closed_loop": {"episodes": [{"split": split, "seed": 100 + i, "success": o}
                                             for i, o in enumerate(outcomes)]}}

    a0, b0 = [1, 1, 0, 1, 0, 1], [0, 1, 0, 0, 0, 1]
    a1, b1 = [1, 0, 1, 1], [1, 0, 0, 0]
    runs = [{"variant": "action_only", "seed": 0, "episode_success": ablate.episode_outcomes(ev(b0))},
            {"variant": "action_only", "seed": 1, "episode_success": ablate.episode_outcomes(ev(b1 + [True]))},
            {"variant": "three_stage", "seed": 0, "episode_success": ablate.episode_outcomes(ev(a0))},
            {"variant": "three_stage", "seed": 1, "episode_success": ablate.episode_outcomes(ev(a1))},
            {"variant": "three_stage", "seed": 2, "episode_success": ablate.episode_outcomes(ev([1, 1]))}]
    d = ablate.paired_differences(runs, ["train", "ood_color"])
    a, b = np.array(a0 + a1, float), np.array(b0 + b1, float)
    lo, hi = paired_bootstrap(a, b)
    assert set(d) == {"three_stage"} and set(d["three_stage"]) == {"train"}
    assert d["three_stage"]["train"] == {"points": round(100 * (a.mean() - b.mean()), 2),
                                         "ci95_points": [round(100 * lo, 2), round(100 * hi, 2)], "pairs": 10}
    assert d["three_stage"]["train"]["points"] == pytest.approx(40.0)
    for r in runs:
        r.update(steps=10, train_s=1.0, eval_s=1.0, success={"train": 0.5}, success_counts={"train": [1, 2]},
                 cka_curve=[], failure_mode={"train": {"median_horizontal_miss_m": 0.031, "never_closed": 0}})
    acfg = AblationConfig(out=str(tmp_path), variants=["action_only", "three_stage"], seeds=[0, 1, 2],
                          eval_episodes=6, eval_splits=["train"])
    res = ablate._write(tmp_path, acfg, runs, 1.0, {"eval_splits": ["train"]})
    md = (tmp_path / "ablation.md").read_text()
    assert res["paired_vs_reference"] == d and res["paired_reference"] == "action_only"
    assert "| three_stage | +40.0 [" in md and "(10) |" in md
    assert "| three_stage | 31 |" in md  # failure mode: median miss at the first close, mm


# ---------------------------------------------------------------- end to end, tiny
@pytest.mark.usefixtures("torch_one_thread")
def test_tiny_ablation_runs_the_new_variants_and_resumes(syn):
    fast = ["run.threads=1", "run.progress=false", "run.log_every=1", "cka.probe_size=4", "cka.every=1",
            "model.overrides={image_size: 64, patch_size: 16}", "stages.stage1.steps=2", "stages.stage2.steps=2",
            "stages.stage3.steps=2", "stages.stage1.etc_batch=2", "stages.stage2.action_batch=2",
            "stages.stage3.action_batch=2", "stages.stage2.etc_ratio=1.0", "stages.stage3.etc_ratio=1.0"]
    base = load_train_config(TINY, syn["data"] + [TARGET_ONLY] + fast)
    out = syn["root"] / "abl"
    acfg = AblationConfig(out=str(out), variants=["etc_action_planning", "three_stage_ood"], seeds=[0],
                          eval_episodes=0, etc_samples=2, action_samples=2, ood_etc_share=0.5)
    res = ablate.run_ablation(base, acfg, progress=False, log=None)
    assert [r["variant"] for r in res["runs"]] == ["three_stage_ood", "etc_action_planning"]  # pathway first
    assert res["ood_etc"]["splits"] == ["ood"]
    runs = {r["variant"]: r for r in res["runs"]}
    s3 = runs["three_stage_ood"]["etc_sources"]["stage3"]
    assert [s["name"] for s in s3["sources"]] == ["target", "ood"] and s3["etc_batch"] == 2
    rows = [json.loads(x) for x in (out / "three_stage_ood/seed0/stage3/metrics.jsonl").read_text().splitlines()]
    assert max(r.get("counts", {}).get("ood", 0) for r in rows) > 0  # OOD ETC drawn in Stage 3
    assert all(s["categories"] == ["action_planning"]
               for st in runs["etc_action_planning"]["etc_sources"].values() for s in st["sources"])
    assert runs["three_stage_ood"]["val_action_loss"] is not None and runs["three_stage_ood"]["train_s"] > 0
    again = ablate.run_ablation(base, acfg, progress=False, log=None)  # a rerun resumes: nothing is retrained
    assert [r["train_s"] for r in again["runs"]] == [r["train_s"] for r in res["runs"]]
    assert [r["eval_s"] for r in again["runs"]] == [r["eval_s"] for r in res["runs"]]  # evaluations reused
    assert json.loads((out / "three_stage_ood/seed0/eval/eval.json").read_text())["seconds"] == \
        pytest.approx(runs["three_stage_ood"]["eval_s"], abs=0.051)


# ---------------------------------------------------------------- EmbodiedMidtrain downstream (issue 17, item 4)
def _selections(root: Path, methods=("learned", "random", "distance")) -> Path:
    d = root / "selection"
    d.mkdir(parents=True, exist_ok=True)
    for m in methods:
        (d / f"{m}.jsonl").write_text(json.dumps({"id": f"{m}/0", "image": "x.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat is shown?"}, {"from": "gpt", "value": "a box"}]}) + "\n")
    return d


def test_midtrain_variants_midtrain_on_their_selection_then_fine_tune_as_s3_action_only(tmp_path):
    """mt_<method>: Stage 1 draws only the selection <method>.jsonl (general data, no actions, no grounding), Stage 2
    off, and Stage 3 is exactly s3_action_only's; refused without the selections, a method's file or a start."""
    sel = _selections(tmp_path)
    base = load_train_config(PICKUP, ["model.init=runs/x"])
    ref = variant_config(base, "s3_action_only")
    assert ablate.expand_variants(["midtrain"]) == ["s3_action_only", "mt_learned", "mt_random", "mt_distance"]
    for m in ("learned", "random", "distance"):
        c = variant_config(base, f"mt_{m}", midtrain_selections=str(sel))
        s1 = c.stages.stage1
        assert s1.enabled and not c.stages.stage2.enabled and c.model.init == "runs/x"
        assert s1.action_batch == 0 and s1.grounding_batch == 0
        assert s1.resolved_etc_batch() == base.stages.stage1.resolved_etc_batch() > 0
        assert [(s.kind, s.path) for s in s1.etc_sources] == [("general", str(sel / f"{m}.jsonl"))]
        assert s1.steps == base.stages.stage1.steps and s1.lr == base.stages.stage1.lr
        assert to_dict(c.stages.stage3) == to_dict(ref.stages.stage3)
    with pytest.raises(RecipeError, match="no mid-training selections"):
        variant_config(base, "mt_random")
    (sel / "distance.jsonl").unlink()
    with pytest.raises(RecipeError, match="selection file not found"):
        variant_config(base, "mt_distance", midtrain_selections=str(sel))
    with pytest.raises(RecipeError, match="set model.init"):
        variant_config(load_train_config(PICKUP), "mt_random", midtrain_selections=str(sel))


def test_eval_checkpoints_must_be_stage3_checkpoints():
    cfg = variant_config(load_train_config(PICKUP, ["model.init=x", "run.checkpoint_every=200",
                                                    "stages.stage3.steps=600"]), "s3_action_only")
    assert ablate.checkpoint_steps(cfg, [400, 200, 200]) == [200, 400] and ablate.checkpoint_steps(cfg, []) == []
    for bad in ([300], [600], [0], [-200]):
        with pytest.raises(RecipeError, match="multiple of run.checkpoint_every"):
            ablate.checkpoint_steps(cfg, bad)
    cfg.stages.stage3.enabled = False
    with pytest.raises(RecipeError, match="no Stage 3"):
        ablate.checkpoint_steps(cfg, [200])


def test_step_curves_pool_seeds_and_pair_the_same_step_and_scenes(tmp_path):
    """Success vs fine-tuning step: pooled over seeds per step with the Wilson interval, the mean CKA at the step,
    and the paired difference vs the reference at the SAME step on the same scenes (a step the reference lacks is
    not paired); written to the table and the JSON."""
    from etc_training.recipe.evaluate import paired_bootstrap, wilson_interval

    def curve(per_step):  # {step: outcomes}
        return [{"step": k, "split": "train", "successes": int(sum(o)), "episodes": len(o), "rate": sum(o) / len(o),
                 "episode_success": {str(100 + i): bool(x) for i, x in enumerate(o)}, "cka": 1.0 - k / 1000}
                for k, o in per_step.items()]

    ref0, ref1 = {0: [1, 0, 1, 0], 200: [1, 1, 0, 0]}, {0: [0, 0, 1, 1], 200: [1, 1, 1, 0]}
    mt0, mt1 = {0: [0, 0, 0, 0], 200: [1, 1, 1, 1], 400: [1, 1, 1, 1]}, {0: [1, 0, 0, 0], 200: [1, 1, 1, 1]}
    runs = [{"variant": "s3_action_only", "seed": 0, "curve": curve(ref0)},
            {"variant": "s3_action_only", "seed": 1, "curve": curve(ref1)},
            {"variant": "mt_learned", "seed": 0, "curve": curve(mt0)},
            {"variant": "mt_learned", "seed": 1, "curve": curve(mt1)}]
    c = ablate.step_curves(runs, "s3_action_only")
    assert sorted(c) == ["mt_learned", "s3_action_only"] and sorted(c["mt_learned"]) == [0, 200, 400]
    cell = c["mt_learned"][200]
    assert (cell["successes"], cell["episodes"], cell["seeds"]) == (8, 8, 2)
    assert cell["ci95"] == [round(x, 4) for x in wilson_interval(8, 8)] and cell["cka"] == pytest.approx(0.8)
    a, b = np.ones(8), np.array(ref0[200] + ref1[200], float)
    lo, hi = paired_bootstrap(a, b)
    assert cell["paired"] == {"points": round(100 * (a.mean() - b.mean()), 2),
                              "ci95_points": [round(100 * lo, 2), round(100 * hi, 2)], "pairs": 8}
    assert c["mt_learned"][0]["paired"]["points"] == pytest.approx(100 * (1 / 8 - 4 / 8))
    assert "paired" not in c["mt_learned"][400] and "paired" not in c["s3_action_only"][0]
    for r in runs:
        r.update(steps=10, train_s=1.0, eval_s=1.0, success={"train": 0.5}, success_counts={"train": [1, 2]},
                 episode_success={}, cka_curve=[])
    acfg = AblationConfig(out=str(tmp_path), variants=["midtrain"], seeds=[0, 1], eval_episodes=4,
                          eval_splits=["train"], midtrain_selections="sel")
    res = ablate._write(tmp_path, acfg, runs, 1.0, {"eval_splits": ["train"]})
    md = (tmp_path / "ablation.md").read_text()
    assert res["step_curves"]["mt_learned"][200] == cell
    assert "## Success vs fine-tuning step (train)" in md and "| variant | step 0 | step 200 | step 400 |" in md
    assert "| mt_learned | 0.12 [0.02, 0.47]; CKA 1.000; -37.5 [" in md  # step 0: pooled 1/8, paired 1/8 - 4/8
    assert "CKA 0.800; +37.5 [" in md  # step 200: 8/8 vs the reference's 5/8
    assert (tmp_path / "success_vs_step.png").is_file()


def test_category_table_pairs_each_category_with_its_all_three_reference(tmp_path):
    """s3_etc_<category> is paired with s3_etc (all three) on the same scenes and seeds, besides the paired
    difference vs s3_action_only (no ETC) that every variant gets; written to the table and the JSON."""
    from etc_training.recipe.evaluate import paired_bootstrap

    def es(outcomes):
        return {"train": {str(100 + i): bool(o) for i, o in enumerate(outcomes)}}

    none, full, task = [0, 0, 1, 0, 1, 0], [1, 0, 1, 1, 1, 0], [1, 1, 1, 1, 1, 0]
    runs = [{"variant": v, "seed": 0, "episode_success": es(o)}
            for v, o in (("s3_action_only", none), ("s3_etc", full), ("s3_etc_task_oriented", task))]
    runs.append({"variant": "s3_etc_task_oriented", "seed": 1, "episode_success": es([1, 1])})  # no s3_etc seed 1
    d = ablate.category_differences(runs, ["train"])
    a, b = np.array(task, float), np.array(full, float)
    lo, hi = paired_bootstrap(a, b)
    assert d == {"s3_etc_task_oriented": {"train": {"points": round(100 * (a.mean() - b.mean()), 2),
                                                    "ci95_points": [round(100 * lo, 2), round(100 * hi, 2)],
                                                    "pairs": 6}}}
    for r in runs:
        r.update(steps=10, train_s=1.0, eval_s=1.0, success={"train": 0.5}, success_counts={"train": [1, 2]},
                 cka_curve=[])
    acfg = AblationConfig(out=str(tmp_path), variants=["retentive_categories"], seeds=[0, 1], eval_episodes=6,
                          eval_splits=["train"])
    res = ablate._write(tmp_path, acfg, runs, 1.0, {"eval_splits": ["train"]})
    md = (tmp_path / "ablation.md").read_text()
    assert res["category_vs_all"] == d and res["paired_reference"] == "s3_action_only"
    assert res["paired_vs_reference"]["s3_etc_task_oriented"]["train"]["pairs"] == 6
    assert "## Each ETC category alone vs all three (points)" in md
    assert "| s3_etc_task_oriented - s3_etc | +16.7 [" in md and "(6) |" in md
    assert "- s3_etc_<category>: s3_etc with every ETC source restricted" in md


def test_an_evaluation_is_reused_through_a_linked_run_directory(tmp_path, monkeypatch):
    """A reference run linked into another ablation's OUT keeps its evaluation (the paths are compared
    resolved); a different checkpoint or setting is evaluated again."""
    import dataclasses

    from etc_training.recipe import evaluate as evaluate_mod
    from etc_training.recipe.evaluate import EvalConfig

    real = tmp_path / "ref" / "s3_etc" / "seed0"
    (real / "eval").mkdir(parents=True)
    (real / "stage3" / "final").mkdir(parents=True)
    ecfg = EvalConfig(checkpoint=str(real / "stage3" / "final"), out=str(real / "eval"), episodes=50)
    (real / "eval" / "eval.json").write_text(json.dumps(
        {"config": {k: getattr(ecfg, k) for k in ecfg.__dataclass_fields__}, "seconds": 12.0}))
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "s3_etc").symlink_to(real.parent)
    linked = tmp_path / "cat" / "s3_etc" / "seed0"
    calls = []
    monkeypatch.setattr(evaluate_mod, "evaluate", lambda cfg, progress=True: calls.append(cfg) or {"seconds": 1.0})
    via_link = dataclasses.replace(ecfg, checkpoint=str(linked / "stage3" / "final"), out=str(linked / "eval"))
    got = ablate._evaluate_run(via_link, False)
    assert got["reused"] is True and got["seconds"] == 12.0 and not calls
    ablate._evaluate_run(dataclasses.replace(via_link, episodes=49), False)
    other = tmp_path / "other"
    other.mkdir()
    ablate._evaluate_run(dataclasses.replace(via_link, checkpoint=str(other)), False)
    assert [c.episodes for c in calls] == [49, 50]
