"""`etc-vla ablate`: the paper's comparison at this scale — the same data, model initialisation and step budget,
several seeds:

    action_only      no Stage 1, no ETC anywhere (actions only in Stages 2 and 3)
    etc_stage2       no Stage 1; ETC co-training in Stage 2 (and the configured Stage-3 ETC mix)
    three_stage      the full recipe: Distribution Bridging + Objective Bridging + Retentive Adaptation
    three_stage_ood  three_stage + OOD ETC in Stage 3: ETC of scenes whose actions the policy never trains on
                     (`ood_etc_source`: an ETC directory's ood* splits), a share `ood_etc_share` of the Stage-3
                     ETC batch (the paper's 0.9 : 0.1); refused when there is no such ETC
    etc_<category>   three_stage with every ETC source restricted to one category (scene_grounding, task_oriented,
                     action_planning): each category alone against all three (Fig. 3b); same ETC batch sizes
    db_action_only   (optional) Stage 1, then action-only Stages 2/3: with three_stage, the CKA-drift pair of Fig. 3a

Retentive Adaptation alone (`retentive`): Stage 3 only, every variant from the same trained policy (model.init,
e.g. the working recipe's stage2/final), the same Stage-3 steps; the paired reference is s3_action_only:

    s3_action_only   Stage 3 on actions (+ the config's grounding questions), no ETC
    s3_etc           Stage 3 with the configured target-scene ETC
    s3_etc_ood       s3_etc + OOD ETC (as three_stage_ood)
    s3_etc_<category>  s3_etc with the ETC restricted to one category: each category alone against all three
                     (s3_etc) and none (s3_action_only), Fig. 3b in the retentive form (`retentive_categories`)

EmbodiedMidtrain downstream in the same retentive form (`midtrain`: s3_action_only + the three below): mid-training
of the same trained policy's VLM on a selection of general VLM data (Stage 1 with the config's Stage-1 batch and
schedule, one "general" source: `midtrain_selections`/<method>.jsonl as `etc-vla midtrain report` writes them, no
action data), then exactly s3_action_only's Stage 3 (the fine-tuning); s3_action_only is the no-mid-training
reference:

    mt_learned       mid-training on the learned proximity estimator's top K
    mt_random        ... on K random pool candidates
    mt_distance      ... on the feature-distance baseline's top K

`eval_checkpoints` (steps of Stage 3) adds success vs fine-tuning step: the policy entering Stage 3 (step 0: the
mid-trained model, or model.init), the exported Stage-3 checkpoints and the final policy, on the first evaluation
split, the same scenes for every variant (EmbodiedMidtrain Fig. 3), next to the CKA drift at the same steps.

budget "stages" (default, as in the paper): every variant makes the same Stage-2 and Stage-3 steps; Stage 1 is
extra. budget "total": variants without Stage 1 add its steps to Stage 2, so all make the same number of optimizer
steps. For each run: held-out action loss / decoded-chunk MSE (val data), ETC answer quality (held-out ETC),
closed-loop success in the MuJoCo world (train + OOD splits; a split the task family cannot make, e.g. ood_combo
for pick_up, is skipped and listed), the last CKA to the reference model and the run time. Runs are ordered
pathway variants first, then the category variants, seeds inside; a finished run is resumed (its training is
skipped, its evaluation reused when the evaluation settings are unchanged), so the command can be rerun after an
interruption. Writes OUT/ablation.md (mean ± std over seeds; closed-loop success pooled over seeds with a 95 %
Wilson interval), OUT/ablation.json, OUT/ablation.png, OUT/cka_ablation.png.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from etc_training.etc.mixture import CATEGORIES
from etc_training.recipe.config import RecipeError, SourceConfig, TrainConfig, check_config

CATEGORY_VARIANTS = tuple(f"etc_{c}" for c in CATEGORIES)
PATHWAY_VARIANTS = ("action_only", "etc_stage2", "three_stage", "three_stage_ood")
# Retentive Adaptation alone: Stage 3 from one trained policy (model.init), Stages 1-2 off; the same steps
RETENTIVE_VARIANTS = ("s3_action_only", "s3_etc", "s3_etc_ood")
RETENTIVE_CATEGORY_VARIANTS = tuple(f"s3_etc_{c}" for c in CATEGORIES)
# EmbodiedMidtrain downstream: Stage 1 on a general-data selection (mt_<method>: selection/<method>.jsonl), then
# s3_action_only's Stage 3
MIDTRAIN_VARIANTS = ("mt_learned", "mt_random", "mt_distance")
VARIANTS = ("action_only", "etc_stage2", "three_stage", "db_action_only", "three_stage_ood") + CATEGORY_VARIANTS + \
    RETENTIVE_VARIANTS + RETENTIVE_CATEGORY_VARIANTS + MIDTRAIN_VARIANTS
OOD_VARIANTS = ("three_stage_ood", "s3_etc_ood")  # the variants that add the OOD ETC source to Stage 3
DEFAULT_VARIANTS = ("action_only", "etc_stage2", "three_stage")
VARIANT_GROUPS = {"pathway": PATHWAY_VARIANTS, "categories": CATEGORY_VARIANTS,  # --variants shorthands
                  "retentive": RETENTIVE_VARIANTS, "midtrain": ("s3_action_only",) + MIDTRAIN_VARIANTS,
                  "retentive_categories": ("s3_action_only", "s3_etc") + RETENTIVE_CATEGORY_VARIANTS}
# the all-three-categories reference of each family of category variants (Fig. 3b)
CATEGORY_REFERENCE = {**{v: "three_stage" for v in CATEGORY_VARIANTS},
                      **{v: "s3_etc" for v in RETENTIVE_CATEGORY_VARIANTS}}
OOD_PREFIX = "ood"  # ETC splits named ood* are OOD scenes (etc-vla sim collect --split ood_color, synthetic "ood")


@dataclass
class AblationConfig:
    out: str = "runs/ablate"
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    budget: str = "stages"  # stages | total
    eval_episodes: int = 2  # closed-loop episodes per split and run (0 = skip)
    eval_splits: list[str] = field(default_factory=lambda: ["train", "ood_color"])  # ["all"] = every sim split
    eval_workers: int = 2
    etc_samples: int = 12
    action_samples: int = 32
    max_steps: int = 0
    families: list[str] = field(default_factory=list)  # closed-loop task families (empty = the sim's mix)
    # three_stage_ood: the OOD ETC source (scenes whose actions no variant trains on)
    ood_etc: str | None = None  # its ETC directory (None = data.etc)
    ood_etc_splits: list[str] = field(default_factory=list)  # empty = every ood* split of that ETC
    ood_etc_share: float = 0.1  # its share of the Stage-3 ETC batch (the other sources keep their proportions)
    # held-out metrics (None = the recipe's data.etc / data.episodes and data.val_split)
    etc_eval: str | None = None
    etc_eval_splits: list[str] = field(default_factory=lambda: ["val"])  # offline ETC eval, skipped when absent
    val_data: str | None = None
    val_split: str | None = None
    # mt_<method>: the directory of the mid-training selections (<method>.jsonl, `etc-vla midtrain report`)
    midtrain_selections: str | None = None
    # success vs fine-tuning step: Stage-3 steps whose exported checkpoints are evaluated (with step 0 and the final
    # policy) on the first evaluation split; each a multiple of run.checkpoint_every, below the Stage-3 steps
    eval_checkpoints: list[int] = field(default_factory=list)


def expand_variants(names: list[str]) -> list[str]:
    """Variant names with the shorthands `pathway` and `categories` expanded, duplicates dropped, order kept."""
    out: list[str] = []
    for n in names:
        for v in VARIANT_GROUPS.get(n, (n,)):
            if v not in out:
                out.append(v)
    return out


def variant_category(variant: str) -> str | None:
    """The ETC category of a category variant (etc_<category>, s3_etc_<category>), else None."""
    if variant in CATEGORY_VARIANTS:
        return variant[len("etc_"):]
    return variant[len("s3_etc_"):] if variant in RETENTIVE_CATEGORY_VARIANTS else None


def variant_config(base: TrainConfig, variant: str, budget: str = "stages", ood_source: SourceConfig | None = None,
                   ood_share: float = 0.1, midtrain_selections: str | None = None) -> TrainConfig:
    """The training configuration of one ablation variant (a modified deep copy of `base`). three_stage_ood needs
    `ood_source` (see ood_etc_source), added to Stage 3 with `ood_share` of its ETC batch; mt_<method> needs
    `midtrain_selections` (the directory holding <method>.jsonl)."""
    if variant not in VARIANTS:
        raise RecipeError(f"unknown ablation variant {variant!r}; choose from {list(VARIANTS)}")
    if budget not in ("stages", "total"):
        raise RecipeError(f"budget must be 'stages' or 'total', got {budget!r}")
    if variant in MIDTRAIN_VARIANTS:
        cfg = variant_config(base, "s3_action_only")
        s1 = cfg.stages.stage1
        if not midtrain_selections:
            raise RecipeError(f"{variant}: no mid-training selections; pass the directory `etc-vla midtrain report` "
                              "wrote them to (OUT/selection, --midtrain-selections)")
        sel = Path(midtrain_selections) / f"{variant[len('mt_'):]}.jsonl"
        if not sel.is_file():
            raise RecipeError(f"{variant}: selection file not found: {sel} (select.methods of the midtrain config "
                              "names the selections written)")
        if s1.resolved_etc_batch() <= 0:
            raise RecipeError(f"{variant}: Stage 1 has no batch to mid-train with (set stages.stage1.etc_batch)")
        s1.enabled = True
        s1.action_batch = s1.grounding_batch = 0
        s1.etc_batch = s1.resolved_etc_batch()
        s1.etc_sources = [SourceConfig(name="midtrain", kind="general", path=str(sel))]
        return check_config(cfg)
    if variant in RETENTIVE_CATEGORY_VARIANTS:
        cfg = variant_config(base, "s3_etc")
        _restrict_category(cfg, str(variant_category(variant)), variant)
        return check_config(cfg)
    cfg = copy.deepcopy(base)
    s1, s2, s3 = cfg.stages.stage1, cfg.stages.stage2, cfg.stages.stage3
    if variant in RETENTIVE_VARIANTS:
        if not cfg.model.init:
            raise RecipeError(f"{variant}: the retentive variants adapt one trained policy in Stage 3; set model.init "
                              "to it (e.g. a working recipe's stage2/final)")
        s1.enabled = s2.enabled = False
        s3.enabled = True
        if variant == "s3_action_only":
            s3.etc_batch = 0
            s3.etc_ratio = 0.0
        elif s3.resolved_etc_batch() <= 0 or not s3.etc_sources:
            raise RecipeError(f"{variant}: Stage 3 has no ETC (set stages.stage3.etc_ratio and etc_sources)")
        if variant == "s3_etc_ood":
            _add_ood_source(cfg, ood_source, ood_share)
        return check_config(cfg)
    if variant in ("action_only", "etc_stage2"):
        if budget == "total" and s1.enabled:
            s2.steps += s1.steps
        s1.enabled = False
    else:
        s1.enabled = True
    if variant in ("action_only", "db_action_only"):
        for s in (s2, s3):
            s.etc_batch = 0
            s.etc_ratio = 0.0
    if variant == "three_stage_ood":
        _add_ood_source(cfg, ood_source, ood_share)
    cat = variant_category(variant)
    if cat is not None:
        _restrict_category(cfg, cat, variant)
    return check_config(cfg)


def _etc_path(cfg: TrainConfig, src: SourceConfig) -> str | None:
    p = src.path or cfg.data.etc
    return str(Path(p).resolve()) if p else None


def _add_ood_source(cfg: TrainConfig, ood: SourceConfig | None, share: float) -> None:
    s3 = cfg.stages.stage3
    if ood is None or not ood.splits:
        raise RecipeError("three_stage_ood needs an OOD ETC source (ETC of scenes whose actions the policy never "
                          "trains on); run_ablation resolves it from the data (ood_etc_source, --ood-etc)")
    if not 0.0 < float(share) < 1.0:
        raise RecipeError(f"the OOD ETC share of the Stage-3 ETC batch must be in (0, 1), got {share}")
    if not s3.enabled or s3.resolved_etc_batch() <= 0:
        raise RecipeError("three_stage_ood: Stage 3 has no ETC batch to mix OOD ETC into (set stages.stage3.etc_ratio "
                          "or etc_batch and an etc_sources entry)")
    kept = [s for s in s3.etc_sources if s.weight > 0]
    for s in kept:
        if s.kind == "etc" and _etc_path(cfg, s) == _etc_path(cfg, ood) and (not s.splits or
                                                                              set(s.splits) & set(ood.splits)):
            raise RecipeError(f"three_stage_ood: Stage 3's ETC source {s.name!r} already draws from the OOD split(s) "
                              f"{sorted(set(s.splits or ood.splits) & set(ood.splits))}, so three_stage is the OOD "
                              "pathway already: give Stage 3 only target-scene ETC in the ablation's config")
    src = copy.deepcopy(ood)
    names = {s.name for s in s3.etc_sources}
    while src.name in names:
        src.name += "_"
    src.weight = float(share) / (1.0 - float(share)) * sum(s.weight for s in kept)
    s3.etc_sources.append(src)


def _restrict_category(cfg: TrainConfig, cat: str, variant: str) -> None:
    from etc_training.etc.mixture import GROUP_CATEGORY

    n = 0
    for name, s in cfg.stages.items():
        for j, src in enumerate(s.etc_sources):
            if src.kind != "etc":
                continue  # general VLM data has no ETC category: kept as configured
            where = f"{variant}: stages.{name}.etc_sources[{j}] ({src.name!r})"
            if src.categories and cat not in src.categories:
                raise RecipeError(f"{where} is limited to the categories {src.categories}")
            if src.groups and sum(v for g, v in src.groups.items() if GROUP_CATEGORY.get(g) == cat) <= 0:
                raise RecipeError(f"{where}: its group weights {src.groups} give the category no weight")
            src.categories = [cat]
            n += 1
    if n == 0:
        raise RecipeError(f"{variant}: the config has no ETC source to restrict to the category")


def etc_split_counts(path: str | Path) -> dict[str, int]:
    """Number of ETC records per split of an ETC directory (its index) or of ETC JSONL file(s)."""
    p = Path(path)
    if (p / "index.json").is_file():
        from etc_training.etc.store import load_index

        out: dict[str, int] = {}
        for f in load_index(p)["files"]:
            out[str(f["split"])] = out.get(str(f["split"]), 0) + int(f.get("count", 0))
        return out
    from etc_training.recipe.data import read_jsonl

    out = {}
    for r in read_jsonl(p, "etc"):
        out[str(r["split"])] = out.get(str(r["split"]), 0) + 1
    return out


def _same_dataset(etc_dir: str, episodes: str | None) -> bool:
    """Whether the ETC directory was built from the episode dataset `episodes` (True when unknown)."""
    p = Path(etc_dir)
    if not episodes or not (p / "index.json").is_file():
        return True
    from etc_training.etc.store import load_index, resolve_dataset

    idx = load_index(p)
    ref = idx.get("dataset_abs") or idx.get("dataset")
    if not ref:
        return True
    return resolve_dataset(str(ref), p) == Path(episodes).resolve()


def ood_etc_source(base: TrainConfig, acfg: AblationConfig) -> SourceConfig:
    """The Stage-3 OOD ETC source of three_stage_ood: the ood* splits (or acfg.ood_etc_splits) of acfg.ood_etc
    (default data.etc). Refused when that ETC has no such split, or when its scenes' actions are trained on (a split
    that some stage's action_splits name, in the same episode dataset)."""
    path = acfg.ood_etc or base.data.etc
    if not path:
        raise RecipeError("three_stage_ood: no ETC to take OOD ETC from (data.etc is not set and no --ood-etc)")
    if not Path(path).exists():
        raise RecipeError(f"three_stage_ood: OOD ETC not found: {path}")
    counts = {k: v for k, v in etc_split_counts(path).items() if v > 0}
    if acfg.ood_etc_splits:
        splits = list(acfg.ood_etc_splits)
        missing = [s for s in splits if s not in counts]
        if missing:
            raise RecipeError(f"three_stage_ood: {path} has no ETC in split(s) {missing} (splits present: "
                              f"{sorted(counts)})")
    else:
        splits = sorted(s for s in counts if s.startswith(OOD_PREFIX))
    if not splits:
        raise RecipeError(f"three_stage_ood: {path} has no OOD ETC split (splits present: {sorted(counts)}); build "
                          "ETC from OOD-split scenes whose actions the policy never trains on (etc-vla sim collect "
                          "--split ood_color ..., then etc-vla etc build) and pass it with --ood-etc, or name its "
                          "splits with --ood-etc-splits")
    if _same_dataset(path, base.data.episodes):
        trained = sorted({sp for _, s in base.stages.items() if s.action_batch > 0 for sp in s.action_splits})
        both = sorted(set(splits) & set(trained))
        if both:
            raise RecipeError(f"three_stage_ood: the policy trains on the actions of split(s) {both}, so their ETC "
                              "is not OOD ETC")
    same_as_data = bool(base.data.etc) and Path(path).resolve() == Path(base.data.etc).resolve()
    return SourceConfig(name="ood", kind="etc", path=None if same_as_data else str(path), splits=splits)


def eval_splits(acfg: AblationConfig) -> tuple[list[str], dict[str, str]]:
    """(splits evaluated, {split: why skipped}): acfg.eval_splits (["all"] = every sim split), without the splits
    the closed-loop task families cannot make (ood_combo needs a place target: not pick_up), as
    `etc-vla analyze attention` skips them."""
    from etc_training.sim.config import FAMILIES
    from etc_training.sim.splits import SPLITS
    from etc_training.sim.tasks import TaskError, sample_episode

    fam_bad = [f for f in acfg.families if f not in FAMILIES]
    if fam_bad:
        raise RecipeError(f"unknown task family(ies) {fam_bad}; choose from {list(FAMILIES)}")
    splits = list(SPLITS) if list(acfg.eval_splits) == ["all"] else list(acfg.eval_splits)
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise RecipeError(f"unknown sim split(s) {bad}; choose from {list(SPLITS)} (or 'all')")
    keep, skipped = [], {}
    for s in splits:
        try:
            for f in acfg.families or [None]:
                sample_episode(0, s, family=f)
        except TaskError as e:
            skipped[s] = str(e)
            continue
        keep.append(s)
    return keep, skipped


def _mean_std(vals: list) -> tuple[float | None, float | None]:
    v = [float(x) for x in vals if x is not None and np.isfinite(x)]
    if not v:
        return None, None
    return float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def _run_order(variants: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """Pathway (and other) variants for every seed first, then the category variants for every seed."""
    first = [v for v in variants if v not in CATEGORY_REFERENCE]
    cats = [v for v in variants if v in CATEGORY_REFERENCE]
    return [(v, s) for group in (first, cats) for s in seeds for v in group]


def _jsonable(d: dict) -> dict:
    return json.loads(json.dumps(d, default=str))


_EVAL_PATHS = ("checkpoint", "out", "etc", "data")


def _eval_key(cfg: dict) -> dict:
    """An evaluation's settings with its paths resolved: a run directory reached through a link (an ablation
    that reuses another's reference runs) is the same run."""
    return {k: str(Path(v).resolve()) if k in _EVAL_PATHS and isinstance(v, str) and v else v for k, v in cfg.items()}


def _evaluate_run(ecfg, progress: bool) -> dict:
    """evaluate(ecfg), or the run's earlier evaluation when it was made with the same settings (paths compared
    resolved)."""
    from etc_training.recipe.evaluate import evaluate

    prev = Path(ecfg.out) / "eval.json"
    if prev.is_file():
        try:
            old = json.loads(prev.read_text())
        except json.JSONDecodeError:
            old = {}
        if isinstance(old.get("config"), dict) and _eval_key(old["config"]) == \
                _eval_key(_jsonable({k: getattr(ecfg, k) for k in ecfg.__dataclass_fields__})):
            old["reused"] = True
            return old
    return evaluate(ecfg, progress=progress)


def _etc_summary(cfg: TrainConfig) -> dict:
    """Per enabled stage: its ETC batch and sources (what the variant's ETC is)."""
    return {n: {"etc_batch": st.resolved_etc_batch(),
                "sources": [{"name": s.name, "path": s.path, "splits": list(s.splits), "categories": list(s.categories),
                             "weight": round(float(s.weight), 4)} for s in st.etc_sources]}
            for n, st in cfg.stages.items() if st.enabled}


def run_ablation(base: TrainConfig, acfg: AblationConfig, progress: bool = True,
                 log=print) -> dict:
    from etc_training.recipe.distributed import set_threads
    from etc_training.recipe.evaluate import EvalConfig
    from etc_training.recipe.metrics import read_metrics
    from etc_training.recipe.stages import _quiet_transformers, run_recipe

    say = log or (lambda s: None)
    _quiet_transformers()
    set_threads(base.run.threads)
    out = Path(acfg.out)
    acfg = copy.deepcopy(acfg)
    acfg.variants = expand_variants(list(acfg.variants))
    if not acfg.variants or not acfg.seeds:
        raise RecipeError("the ablation needs at least one variant and one seed")
    bad = [v for v in acfg.variants if v not in VARIANTS]
    if bad:
        raise RecipeError(f"unknown ablation variant(s) {bad}; choose from {list(VARIANTS)} (or the groups "
                          f"{list(VARIANT_GROUPS)})")
    splits, skipped = eval_splits(acfg) if acfg.eval_episodes > 0 else ([], {})
    for s, why in skipped.items():
        say(f"[ablate] split {s} skipped: {why}")
    out.mkdir(parents=True, exist_ok=True)
    base = copy.deepcopy(base)
    # same data for every run: generate it once (or use the configured dataset)
    if base.data.episodes is None:
        from etc_training.recipe.data import make_synthetic_data

        eps, etc = make_synthetic_data(out / "data", base.data.synthetic)
        base.data.episodes, base.data.etc = str(eps), str(etc)
    ood = ood_etc_source(base, acfg) if set(OOD_VARIANTS) & set(acfg.variants) else None
    # every variant's configuration is checked before the first (long) training starts
    for v in acfg.variants:
        checkpoint_steps(variant_config(base, v, acfg.budget, ood, acfg.ood_etc_share, acfg.midtrain_selections),
                         acfg.eval_checkpoints)
    etc_eval = acfg.etc_eval or base.data.etc
    etc_eval_splits = [s for s in acfg.etc_eval_splits if etc_eval and etc_split_counts(etc_eval).get(s)]
    if etc_eval and not etc_eval_splits:
        say(f"[ablate] no ETC in split(s) {acfg.etc_eval_splits} of {etc_eval}: offline ETC quality skipped")
    meta = {"eval_splits": splits, "skipped_splits": skipped,
            "ood_etc": None if ood is None else {"path": ood.path or base.data.etc, "splits": ood.splits,
                                                 "share": acfg.ood_etc_share}}
    t0 = time.perf_counter()
    runs: list[dict] = []
    for v, seed in _run_order(acfg.variants, [int(s) for s in acfg.seeds]):
        # the same initial model for every variant of this seed: built once (kept on disk)
        init_dir = out / f"init_seed{seed}"
        seed_cfg = copy.deepcopy(base)
        seed_cfg.seed = int(seed)
        if not seed_cfg.model.init:
            seed_cfg.model.init = str(build_init_policy(seed_cfg, init_dir))
        cfg = variant_config(seed_cfg, v, acfg.budget, ood, acfg.ood_etc_share, acfg.midtrain_selections)
        cfg.out = str(out / v / f"seed{seed}")
        if acfg.eval_checkpoints:
            cfg.run.export_checkpoints = True
        say(f"[ablate] {v} seed {seed} -> {cfg.out}")
        tr = time.perf_counter()
        summ = run_recipe(cfg, progress=progress, log=None)
        if summ.get("status") != "done":
            raise RecipeError(f"{cfg.out}: training did not finish ({summ.get('status')})")
        walls = [r.get("wall_s") for r in (summ.get("stages") or {}).values()]
        train_s = sum(walls) if walls and all(isinstance(w, (int, float)) for w in walls) else \
            time.perf_counter() - tr
        te = time.perf_counter()
        ecfg = EvalConfig(checkpoint=summ["final_policy"], out=str(Path(cfg.out) / "eval"), splits=list(splits),
                          episodes=acfg.eval_episodes if splits else 0, workers=acfg.eval_workers,
                          seed=1000 + int(seed), max_steps=acfg.max_steps, families=list(acfg.families),
                          etc=etc_eval if etc_eval_splits else None, etc_splits=etc_eval_splits or ["val"],
                          etc_samples=acfg.etc_samples, data=acfg.val_data or base.data.episodes,
                          data_split=acfg.val_split or base.data.val_split, action_samples=acfg.action_samples,
                          cameras=list(base.data.cameras) or ["primary"])
        ev = _evaluate_run(ecfg, progress)
        eval_s = float(ev.get("seconds") or (time.perf_counter() - te))
        cka_rows = [r for n in ("stage2", "stage3") for r in read_metrics(Path(cfg.out) / n / "metrics.jsonl")
                    if isinstance(r.get("cka"), dict)]
        cl = (ev.get("closed_loop") or {}).get("per_split", {})
        runs.append({
            "variant": v, "seed": int(seed), "out": cfg.out, "train_s": round(train_s, 1), "eval_s": round(eval_s, 1),
            "steps": sum(s.steps for _, s in cfg.stages.items() if s.enabled),
            "etc_sources": _etc_summary(cfg),
            "val_action_loss": (ev.get("actions") or {}).get("action_loss"),
            "val_action_accuracy": (ev.get("actions") or {}).get("action_accuracy"),
            "val_chunk_mse": (ev.get("actions") or {}).get("chunk_mse_norm"),
            "etc_parse_rate": ((ev.get("etc") or {}).get("summary") or {}).get("parse_rate"),
            "etc_point_error_px": ((ev.get("etc") or {}).get("summary") or {}).get("point_error_px"),
            "success": {s: d["success_rate"] for s, d in cl.items()},
            "success_counts": {s: [int(d["successes"]), int(d["episodes"])] for s, d in cl.items()},
            "episode_success": episode_outcomes(ev),
            "failure_mode": {s: d.get("failure_mode") for s, d in cl.items()},
            "cka_final": cka_rows[-1]["cka_mean"] if cka_rows else None,
            "cka_reference": cka_rows[-1].get("cka_reference") if cka_rows else None,
            "cka_curve": [(r["global_step"], r["cka_mean"]) for r in cka_rows],
        })
        if acfg.eval_checkpoints and splits:
            runs[-1]["curve"] = _checkpoint_curve(cfg, acfg, splits[0], ecfg, ev, cka_rows, progress)
        _write(out, acfg, runs, time.perf_counter() - t0, meta)
    res = _write(out, acfg, runs, time.perf_counter() - t0, meta)
    say(f"[ablate] done in {res['seconds']} s: {out / 'ablation.md'}")
    return res


def checkpoint_steps(cfg: TrainConfig, steps: list[int]) -> list[int]:
    """The Stage-3 steps of success vs fine-tuning step, checked against the variant's configuration."""
    s3 = cfg.stages.stage3
    if not steps:
        return []
    if not s3.enabled:
        raise RecipeError("eval_checkpoints: the variant has no Stage 3 to take checkpoints from")
    every = cfg.run.checkpoint_every
    bad = [int(k) for k in steps if not (0 < int(k) < s3.steps) or every <= 0 or int(k) % every]
    if bad:
        raise RecipeError(f"eval_checkpoints {bad}: each must be a multiple of run.checkpoint_every ({every}) in "
                          f"(0, {s3.steps}) (0 and the final step are always evaluated)")
    return sorted({int(k) for k in steps})


def _stage3_start(cfg: TrainConfig) -> tuple[str, int]:
    """(the policy Stage 3 starts from, the optimizer steps made before Stage 3)."""
    before = [(n, st) for n, st in cfg.stages.items() if st.enabled and n != "stage3"]
    start = str(Path(cfg.out) / before[-1][0] / "final") if before else str(cfg.model.init)
    return start, sum(st.steps for _, st in before)


def _checkpoint_curve(cfg: TrainConfig, acfg: AblationConfig, split: str, ecfg, final_ev: dict, cka_rows: list[dict],
                      progress: bool) -> list[dict]:
    """Success on `split` at Stage-3 step 0, at each eval_checkpoints step and at the end (the run's evaluation),
    the same scenes as the final evaluation, with the CKA drift measured at that step (None where none was)."""
    import dataclasses

    start, offset = _stage3_start(cfg)
    cka_at = {int(r["global_step"]) - offset: float(r["cka_mean"]) for r in cka_rows}
    final_step = cfg.stages.stage3.steps
    curve = []
    for step in [0] + checkpoint_steps(cfg, acfg.eval_checkpoints) + [final_step]:
        if step == final_step:
            ev = final_ev
        else:
            policy = start if step == 0 else str(Path(cfg.out) / "stage3" / "policies" / f"step_{step:06d}")
            ev = _evaluate_run(dataclasses.replace(ecfg, checkpoint=policy, splits=[split], etc=None, data=None,
                                                   videos=0, out=str(Path(cfg.out) / "eval_steps" / f"step_{step}")),
                               progress)
        d = ((ev.get("closed_loop") or {}).get("per_split") or {})[split]
        curve.append({"step": step, "split": split, "successes": int(d["successes"]), "episodes": int(d["episodes"]),
                      "rate": d["success_rate"], "episode_success": episode_outcomes(ev).get(split, {}),
                      "cka": cka_at.get(step, 1.0 if step == 0 else None)})
    return curve


def build_init_policy(cfg: TrainConfig, init_dir: Path) -> Path:
    """The starting policy of one seed (what run_recipe would build as out/init)."""
    from etc_training.recipe.distributed import DistInfo
    from etc_training.recipe.stages import RecipeContext

    if (init_dir / "vla.json").is_file():
        return init_dir
    c = copy.deepcopy(cfg)
    for _, s in c.stages.items():  # norm stats / FAST over every action split any variant uses
        s.enabled = True
    ctx = RecipeContext(c, DistInfo(), init_dir.parent / (init_dir.name + "_work"))
    ctx.prepare_data()
    built = ctx.base_policy_dir()
    import shutil

    if init_dir.exists():
        shutil.rmtree(init_dir)
    shutil.move(str(built), str(init_dir))
    shutil.rmtree(ctx.out, ignore_errors=True)
    return init_dir


def pooled_success(runs: list[dict], split: str) -> dict | None:
    """Closed-loop success on `split` pooled over the runs (seeds): successes, episodes, rate and the 95 % Wilson
    interval; None when no run recorded its counts."""
    from etc_training.recipe.evaluate import wilson_interval

    counts = [r["success_counts"][split] for r in runs if split in (r.get("success_counts") or {})]
    if not counts:
        return None
    k, n = sum(int(c[0]) for c in counts), sum(int(c[1]) for c in counts)
    lo, hi = wilson_interval(k, n)
    return {"successes": k, "episodes": n, "rate": k / n if n else None, "ci95": [round(lo, 4), round(hi, 4)],
            "seeds": len(counts)}


def episode_outcomes(ev: dict) -> dict[str, dict[str, bool]]:
    """{split: {scene seed: success}} of one run's closed-loop evaluation (the pairing key across variants)."""
    out: dict[str, dict[str, bool]] = {}
    for e in (ev.get("closed_loop") or {}).get("episodes") or []:
        out.setdefault(str(e["split"]), {})[str(e["seed"])] = bool(e["success"])
    return out


def paired_differences(runs: list[dict], splits: list[str], reference: str = "action_only") -> dict:
    """Per variant other than `reference` and split: success minus the reference's on the same scenes of the same
    training seed (same initial model, same scene seeds), pooled over seeds, with a paired-bootstrap 95 % interval
    in points. {} without the reference or per-episode outcomes."""
    from etc_training.recipe.evaluate import paired_bootstrap

    ref = {r["seed"]: r.get("episode_success") or {} for r in runs if r["variant"] == reference}
    out: dict[str, dict] = {}
    for v in dict.fromkeys(r["variant"] for r in runs if r["variant"] != reference):
        for s in splits:
            a, b = [], []
            for r in runs:
                if r["variant"] != v or r["seed"] not in ref:
                    continue
                mine, theirs = (r.get("episode_success") or {}).get(s) or {}, ref[r["seed"]].get(s) or {}
                for scene in sorted(set(mine) & set(theirs)):
                    a.append(float(mine[scene]))
                    b.append(float(theirs[scene]))
            if a:
                lo, hi = paired_bootstrap(np.array(a), np.array(b))
                out.setdefault(v, {})[s] = {"points": round(100 * (float(np.mean(a)) - float(np.mean(b))), 2),
                                            "ci95_points": [round(100 * lo, 2), round(100 * hi, 2)], "pairs": len(a)}
    return out


def category_differences(runs: list[dict], splits: list[str]) -> dict:
    """Per category variant that ran beside its all-three reference (CATEGORY_REFERENCE): its paired difference
    to that reference, as paired_differences."""
    out: dict[str, dict] = {}
    for v in dict.fromkeys(r["variant"] for r in runs if r["variant"] in CATEGORY_REFERENCE):
        ref = CATEGORY_REFERENCE[v]
        d = paired_differences([r for r in runs if r["variant"] in (v, ref)], splits, ref)
        if v in d:
            out[v] = d[v]
    return out


def _paired_cell(p: dict | None) -> str:
    if not p:
        return "-"
    return f"{p['points']:+.1f} [{p['ci95_points'][0]:+.1f}, {p['ci95_points'][1]:+.1f}] ({p['pairs']})"


def _table(acfg: AblationConfig, runs: list[dict], splits: list[str] | None = None) -> tuple[list[str], list[dict]]:
    if splits is None:
        splits = list(acfg.eval_splits)
    splits = splits if acfg.eval_episodes > 0 else []
    rows = []
    for v in expand_variants(list(acfg.variants)):
        rs = [r for r in runs if r["variant"] == v]
        if not rs:
            continue
        row: dict[str, Any] = {"variant": v, "seeds": len(rs), "steps": rs[0]["steps"]}
        for k in ("val_action_loss", "val_action_accuracy", "val_chunk_mse", "etc_parse_rate", "etc_point_error_px",
                  "cka_final"):
            row[k] = _mean_std([r.get(k) for r in rs])
        for s in splits:
            row[f"success:{s}"] = _mean_std([r["success"].get(s) for r in rs])
            row[f"pooled:{s}"] = pooled_success(rs, s)
        row["train_min"] = _mean_std([r["train_s"] / 60 if r.get("train_s") is not None else None for r in rs])
        row["eval_min"] = _mean_std([r["eval_s"] / 60 if r.get("eval_s") is not None else None for r in rs])
        rows.append(row)
    return splits, rows


def _cell(ms, nd=3) -> str:
    m, s = ms
    if m is None:
        return "-"
    return f"{m:.{nd}f} ± {s:.{nd}f}"


def _pooled_cell(p: dict | None) -> str:
    if not p or not p["episodes"]:
        return "-"
    lo, hi = p["ci95"]
    return f"{p['rate']:.2f} [{lo:.2f}, {hi:.2f}] ({p['successes']}/{p['episodes']})"


def _write(out: Path, acfg: AblationConfig, runs: list[dict], seconds: float, meta: dict | None = None) -> dict:
    from etc_ros.core.io import atomic_write_json, atomic_write_text

    meta = dict(meta or {})
    splits, rows = _table(acfg, runs, meta.get("eval_splits"))
    seeds = sorted({r["seed"] for r in runs})
    head = ["variant", "seeds", "steps", "val action loss ↓", "val chunk MSE ↓", "val token acc ↑",
            "ETC parse rate ↑", "ETC point err px ↓", "final CKA ↑"] + [f"success {s} ↑" for s in splits] + \
           ["train min / run", "eval min / run"]
    md = ["# ETC ablation", "",
          f"Same data, same initial model per seed, budget `{acfg.budget}`; mean ± std over seeds "
          f"{seeds}. CKA: mean linear CKA over decoder layers to the reference "
          "(Stage-1 model when the variant has Stage 1, else its starting model).", "",
          "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"], str(r["seeds"]), str(r["steps"]), _cell(r["val_action_loss"]), _cell(r["val_chunk_mse"]),
                 _cell(r["val_action_accuracy"]), _cell(r["etc_parse_rate"]), _cell(r["etc_point_error_px"], 1),
                 _cell(r["cka_final"])] + [_cell(r[f"success:{s}"], 2) for s in splits] + \
                [_cell(r["train_min"], 1), _cell(r["eval_min"], 1)]
        md.append("| " + " | ".join(cells) + " |")
    if splits:
        fam = ", ".join(acfg.families) if acfg.families else "the sim's task mix"
        md += ["", "## Closed-loop success per split, pooled over seeds", "",
               f"{acfg.eval_episodes} seeded scenes per split and run ({fam}; scene i of a run with training seed s is "
               "`reset(seed=(1000 + s) * 100000 + i)`, the same scenes for every variant). Pooled: successes / "
               "episodes over the seeds with the 95 % Wilson interval; then mean ± std of the per-seed rates.", "",
               "| variant | " + " | ".join(splits) + " |", "|" + "---|" * (len(splits) + 1)]
        for r in rows:
            md.append("| " + " | ".join([r["variant"]] + [f"{_pooled_cell(r[f'pooled:{s}'])}; "
                                                          f"{_cell(r[f'success:{s}'], 2)}" for s in splits]) + " |")
    ref = next((v for v in ("action_only", "s3_action_only") if any(r["variant"] == v for r in runs)), None)
    paired = paired_differences(runs, splits, ref) if splits and ref else {}
    if paired:
        md += ["", f"## Paired difference vs {ref} (points)", "",
               f"Success minus {ref}'s on the same scenes of the same training seed (same initial model), pooled "
               "over seeds; 95 % paired-bootstrap interval; pairs = scenes x seeds.", "",
               "| variant | " + " | ".join(splits) + " |", "|" + "---|" * (len(splits) + 1)]
        for v, per in paired.items():
            md.append("| " + " | ".join([v] + [_paired_cell(per.get(s)) for s in splits]) + " |")
    by_cat = category_differences(runs, splits) if splits else {}
    if by_cat:
        md += ["", "## Each ETC category alone vs all three (points)", "",
               "Success of a category variant minus its all-three reference's (three_stage for etc_<category>, "
               "s3_etc for s3_etc_<category>) on the same scenes of the same training seed, pooled over seeds; 95 % "
               "paired-bootstrap interval.", "",
               "| variant | " + " | ".join(splits) + " |", "|" + "---|" * (len(splits) + 1)]
        for v, per in by_cat.items():
            md.append("| " + " | ".join([f"{v} - {CATEGORY_REFERENCE[v]}"] + [_paired_cell(per.get(s))
                                                                              for s in splits]) + " |")
    misses = [(r["variant"], s, (fm or {}).get("median_horizontal_miss_m"))
              for r in runs for s, fm in (r.get("failure_mode") or {}).items()]
    if any(m[2] is not None for m in misses):
        md += ["", "## Failure mode: median horizontal miss at the first gripper close (mm), mean over seeds", "",
               "| variant | " + " | ".join(splits) + " |", "|" + "---|" * (len(splits) + 1)]
        for v in dict.fromkeys(r["variant"] for r in runs):
            cells = []
            for s in splits:
                vals = [m[2] for m in misses if m[0] == v and m[1] == s and m[2] is not None]
                cells.append(f"{1000 * float(np.mean(vals)):.0f}" if vals else "-")
            md.append("| " + " | ".join([v] + cells) + " |")
    curves = step_curves(runs, ref)
    if curves:
        steps = sorted({int(k) for c in curves.values() for k in c})
        split = next(c["split"] for r in runs for c in r.get("curve") or [])
        md += ["", f"## Success vs fine-tuning step ({split}), pooled over seeds", "",
               "Stage-3 step 0 = the policy entering the fine-tuning (mid-trained, or the shared start); the same "
               "scenes at every step. Cell: pooled success [95 % Wilson]; mean CKA to the variant's CKA reference at "
               "that step (its Stage-1 model when it has Stage 1, e.g. the mid-trained one; else its starting policy)"
               + (f"; then the paired difference vs {ref} on the same scenes in points [95 % paired bootstrap]."
                  if ref else "."), "",
               "| variant | " + " | ".join(f"step {k}" for k in steps) + " |", "|" + "---|" * (len(steps) + 1)]
        for v, per in curves.items():
            cells = []
            for k in steps:
                c = per.get(k)
                if not c:
                    cells.append("-")
                    continue
                cell = f"{c['rate']:.2f} [{c['ci95'][0]:.2f}, {c['ci95'][1]:.2f}]"
                cell += f"; CKA {c['cka']:.3f}" if c.get("cka") is not None else ""
                if c.get("paired"):
                    pd = c["paired"]
                    cell += f"; {pd['points']:+.1f} [{pd['ci95_points'][0]:+.1f}, {pd['ci95_points'][1]:+.1f}]"
                cells.append(cell)
            md.append("| " + " | ".join([v] + cells) + " |")
    notes = []
    names = expand_variants(list(acfg.variants))
    for s, why in (meta.get("skipped_splits") or {}).items():
        notes.append(f"- split `{s}` not evaluated: {why}")
    if meta.get("ood_etc"):
        o = meta["ood_etc"]
        notes.append(f"- three_stage_ood / s3_etc_ood: Stage-3 OOD ETC from `{o['path']}` splits {o['splits']} "
                     f"(scenes whose actions no variant trains on), {o['share']:.0%} of the Stage-3 ETC batch")
    if any(v in MIDTRAIN_VARIANTS for v in names):
        notes.append(f"- mt_<method>: Stage 1 mid-training on `{acfg.midtrain_selections}`/<method>.jsonl (general VLM "
                     "data, no actions), then s3_action_only's Stage 3; s3_action_only is the no-mid-training "
                     "reference")
    if any(v in CATEGORY_VARIANTS for v in names):
        notes.append("- etc_<category>: three_stage with every ETC source restricted to that category (same ETC batch "
                     "sizes); three_stage is the all-three reference (Fig. 3b)")
    if any(v in RETENTIVE_CATEGORY_VARIANTS for v in names):
        notes.append("- s3_etc_<category>: s3_etc with every ETC source restricted to that category (same ETC batch "
                     "sizes); s3_etc is the all-three reference, s3_action_only the no-ETC one (Fig. 3b)")
    if notes:
        md += [""] + notes
    md += ["", f"Per run: `ablation.json`. Plots: `ablation.png`, `cka_ablation.png`. Total {seconds:.0f} s.", ""]
    atomic_write_text(out / "ablation.md", "\n".join(md))
    res = {"config": {k: getattr(acfg, k) for k in acfg.__dataclass_fields__}, "runs": runs,
           "table": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()} for r in rows],
           "paired_reference": ref, "paired_vs_reference": paired, "category_vs_all": by_cat, "step_curves": curves,
           "seconds": round(seconds, 1), **meta}
    atomic_write_json(out / "ablation.json", res)
    try:
        _plot(out, acfg, rows, runs, splits)
        if curves:
            _plot_curves(out, curves)
    except Exception as e:  # noqa: BLE001 - plots must not lose the table
        res["plot_error"] = str(e)
    return res


def step_curves(runs: list[dict], reference: str | None = None) -> dict[str, dict[int, dict]]:
    """{variant: {Stage-3 step: pooled success over seeds (rate, Wilson ci95), mean CKA, and the paired difference
    vs `reference` at the same step on the same scenes}} of the runs that carry a checkpoint curve."""
    from etc_training.recipe.evaluate import paired_bootstrap, wilson_interval

    ref = {r["seed"]: {c["step"]: c for c in r.get("curve") or []} for r in runs if r["variant"] == reference}
    out: dict[str, dict[int, dict]] = {}
    for v in dict.fromkeys(r["variant"] for r in runs if r.get("curve")):
        rs = [r for r in runs if r["variant"] == v and r.get("curve")]
        for step in sorted({c["step"] for r in rs for c in r["curve"]}):
            cs = [(r["seed"], c) for r in rs for c in r["curve"] if c["step"] == step]
            k, n = sum(c["successes"] for _, c in cs), sum(c["episodes"] for _, c in cs)
            lo, hi = wilson_interval(k, n)
            ckas = [c["cka"] for _, c in cs if c.get("cka") is not None]
            cell: dict[str, Any] = {"successes": k, "episodes": n, "rate": k / n if n else None,
                                    "ci95": [round(lo, 4), round(hi, 4)], "seeds": len(cs),
                                    "cka": float(np.mean(ckas)) if ckas else None}
            a, b = [], []
            for seed, c in cs:
                theirs = (ref.get(seed) or {}).get(step)
                if v == reference or not theirs:
                    continue
                for scene in sorted(set(c["episode_success"]) & set(theirs["episode_success"])):
                    a.append(float(c["episode_success"][scene]))
                    b.append(float(theirs["episode_success"][scene]))
            if a:
                plo, phi = paired_bootstrap(np.array(a), np.array(b))
                cell["paired"] = {"points": round(100 * (float(np.mean(a)) - float(np.mean(b))), 2),
                                  "ci95_points": [round(100 * plo, 2), round(100 * phi, 2)], "pairs": len(a)}
            out.setdefault(v, {})[int(step)] = cell
    return out


def _plot_curves(out: Path, curves: dict[str, dict[int, dict]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for v, per in curves.items():
        steps = sorted(per)
        rate = np.array([per[k]["rate"] or 0.0 for k in steps])
        lo = np.array([per[k]["ci95"][0] for k in steps])
        hi = np.array([per[k]["ci95"][1] for k in steps])
        line = axes[0].plot(steps, rate, marker="o", ms=4, label=v)[0]
        axes[0].fill_between(steps, lo, hi, alpha=0.12, color=line.get_color())
        ck = [(k, per[k]["cka"]) for k in steps if per[k].get("cka") is not None]
        if ck:
            axes[1].plot([c[1] for c in ck], [per[c[0]]["rate"] or 0.0 for c in ck], marker="o", ms=4, label=v,
                         color=line.get_color())
    axes[0].set_xlabel("fine-tuning step (Stage 3)")
    axes[0].set_ylabel("closed-loop success (pooled, Wilson 95 %)")
    axes[0].set_title("Success vs fine-tuning step (cf. EmbodiedMidtrain Fig. 3)", fontsize=9)
    axes[1].set_xlabel("mean linear CKA to the reference")
    axes[1].set_ylabel("closed-loop success")
    axes[1].set_title("Representation drift vs success, same checkpoints", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "success_vs_step.png", dpi=110)
    plt.close(fig)


def _plot(out: Path, acfg: AblationConfig, rows: list[dict], runs: list[dict], splits: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [("val_action_loss", "val action loss"), ("val_chunk_mse", "val chunk MSE (norm.)")] + \
              [(f"success:{s}", f"success {s}") for s in splits]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4))
    axes = np.atleast_1d(axes)
    names = [r["variant"] for r in rows]
    palette = ["#999999", "#4C72B0", "#DD8452", "#55A868", "#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C"]
    colors = [palette[i % len(palette)] for i in range(len(rows))]
    for ax, (k, label) in zip(axes, metrics):
        if k.startswith("success:") and all(r.get("pooled:" + k[8:]) for r in rows):
            # closed-loop success: pooled rate with its Wilson interval
            ps = [r["pooled:" + k[8:]] for r in rows]
            m = [p["rate"] or 0.0 for p in ps]
            err = np.array([[max(0.0, mi - p["ci95"][0]) for mi, p in zip(m, ps)],
                            [max(0.0, p["ci95"][1] - mi) for mi, p in zip(m, ps)]])
        else:
            m = [r[k][0] if r[k][0] is not None else 0.0 for r in rows]
            err = [r[k][1] or 0.0 for r in rows]
        ax.bar(range(len(rows)), m, yerr=err, capsize=3, color=colors)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(label + (" (pooled, Wilson 95 %)" if k.startswith("success:") and isinstance(err, np.ndarray)
                              else ""), fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "ablation.png", dpi=110)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    plotted = 0
    for v in expand_variants(list(acfg.variants)):
        curves = [r["cka_curve"] for r in runs if r["variant"] == v and r["cka_curve"]]
        if not curves:
            continue
        plotted += 1
        n = min(len(c) for c in curves)
        xs = [c[0] for c in curves[0][:n]]
        ys = np.mean([[c[1] for c in cur[:n]] for cur in curves], axis=0)
        ax.plot(xs, ys, marker="o", ms=3, label=v)
    ax.set_xlabel("optimizer step (stages 2-3)")
    ax.set_ylabel("mean linear CKA to reference")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(fontsize=8)
    ax.set_title("Representation drift (cf. paper Fig. 3a)")
    fig.tight_layout()
    fig.savefig(out / "cka_ablation.png", dpi=110)
    plt.close(fig)


def load_results(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
