"""The three-stage ETC recipe, run in order from one command; each stage initialises from the previous one.

    from etc_training.recipe.config import load_train_config
    from etc_training.recipe.stages import run_recipe
    summary = run_recipe(load_train_config("config/train_tiny.yaml", ["out=runs/tiny"]))

Output directory:
    config.yaml              the resolved configuration of the last invocation
    data/                    generated synthetic episodes + ETC (when data.episodes is null)
    init/                    the starting policy (built from the preset, norm stats + FAST fitted on the actions)
    stage1/ stage2/ stage3/  checkpoints/, metrics.jsonl, final/ (VLAPolicy dir, EMA weights), stage.json
    cka_reference.npz        probe-set features of the reference (Stage-1) model
    cka.png, loss.png        drift and loss curves; summary.json (per-stage times, samples/s, final policy)

Re-running the same command on the same `out` resumes: finished stages are skipped (their configuration digest
must match), an unfinished stage continues from its latest checkpoint, bit-identically.

run_recipe's steps: _start_process (threads, process group, seeds) -> _prepare_out (resume=never, digest check,
config.yaml) -> RecipeContext.prepare_data -> base_policy_dir (out/init, recipe/init_policy.py) -> _cka_probe ->
per enabled stage: _skip_done_stage or _train_stage (a StageChain carries the previous policy, step offset,
digest and CKA reference from one stage to the next) -> _finish (plots, summary.json).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from etc_ros.core.config import to_dict
from etc_ros.core.io import atomic_write_json
from etc_training.recipe.config import RecipeError, StageConfig, TrainConfig, check_config
from etc_training.recipe.data import (
    ActionChunkDataset,
    EpisodeStore,
    LanguageSource,
    RecordImages,
    StageData,
    load_language_source,
    make_synthetic_data,
)

STAGE_FILE = "stage.json"


class RecipeContext:
    """Everything the stages share: resolved data paths, the episode store, datasets by split set, the base
    policy directory, the CKA probe and reference."""

    def __init__(self, cfg: TrainConfig, dist, out: Path):
        self.cfg = cfg
        self.dist = dist
        self.out = out
        frame_size = 0
        if cfg.data.frame_cache:
            from etc_training.models.presets import get_preset

            frame_size = int(get_preset(cfg.model.preset, **cfg.model.overrides).image_size)
        self.store = EpisodeStore(cfg.data.cache_episodes, frame_size=frame_size)
        self._actions: dict[tuple[str, ...], ActionChunkDataset] = {}
        self._sources: dict[str, LanguageSource] = {}
        self.episodes: Path | None = None
        self.etc: str | None = None
        self.general: list[str] = list(cfg.data.general)
        self.processor = None
        self.probe = None
        self.cameras: list[str] = list(cfg.data.cameras)

    # -------------------------------------------------------------- data
    def prepare_data(self) -> None:
        from etc_training.recipe.distributed import barrier

        d = self.cfg.data
        if d.episodes is None:
            syn_dir = self.out / "data"
            if self.dist.is_main:
                make_synthetic_data(syn_dir, d.synthetic, progress=False)
            barrier(self.dist)
            self.episodes = syn_dir / "episodes"
            self.etc = d.etc or str(syn_dir / "etc")
        else:
            self.episodes = Path(d.episodes)
            self.etc = d.etc
        reader = self.store.reader(self.episodes)
        if not self.cameras:
            self.cameras = list(reader.cameras)[:1]

    def horizon(self) -> int:
        from etc_training.models.presets import get_preset

        return int(get_preset(self.cfg.model.preset, **self.cfg.model.overrides).horizon)

    def actions(self, splits) -> ActionChunkDataset:
        key = tuple(sorted(splits))
        if key not in self._actions:
            d = self.cfg.data
            ds = ActionChunkDataset(self.store, self.episodes, list(key), self.horizon(), self.cameras,
                                    early_frames=d.early_frames, early_factor=d.early_factor)
            if len(ds) == 0:
                have = sorted({str(self.store.reader(self.episodes).episode_meta(i)["split"])
                               for i in self.store.reader(self.episodes).episodes()})
                raise RecipeError(f"{self.episodes}: no episodes in split(s) {list(key)} (splits present: {have})")
            self._actions[key] = ds
        return self._actions[key]

    def has_split(self, split: str) -> bool:
        r = self.store.reader(self.episodes)
        return bool(r.episodes(split))

    def source(self, src) -> LanguageSource:
        key = json.dumps(to_dict(src), sort_keys=True)
        if key not in self._sources:
            self._sources[key] = load_language_source(src, self.etc, self.general)
        return self._sources[key]

    def images(self) -> RecordImages:
        return RecordImages(self.store, self.cameras, len(self.cameras))

    # -------------------------------------------------------------- base policy
    def action_splits_used(self) -> list[str]:
        out: list[str] = []
        for _, s in self.cfg.stages.items():
            if s.enabled and s.action_batch > 0:
                out += [x for x in s.action_splits if x not in out]
        return out or ["train"]

    def fit_actions(self) -> tuple[np.ndarray, np.ndarray]:
        """(action chunks, states) of every action split the enabled stages use: what the initial policy's
        normalization and action tokenizer are fitted on."""
        chunks, states = [], []
        for sp in self.action_splits_used():
            if self.has_split(sp):
                c, s = self.actions([sp]).all_chunks()
                chunks.append(c)
                states.append(s)
        if not chunks:
            raise RecipeError(f"no action data in splits {self.action_splits_used()} to fit the normalization")
        return np.concatenate(chunks), np.concatenate(states)

    def base_policy_dir(self) -> Path:
        """model.init when given; else out/init, built once (rank 0) on fit_actions() when not there yet."""
        from etc_training.recipe.distributed import barrier
        from etc_training.recipe.init_policy import build_initial_policy, checked_init_dir

        if self.cfg.model.init:
            return checked_init_dir(self.cfg.model.init)
        d = self.out / "init"
        if self.dist.is_main and not (d / "vla.json").is_file():
            chunks, states = self.fit_actions()
            build_initial_policy(self.cfg.model, self.cfg.seed, len(self.cameras), chunks, states, d)
        barrier(self.dist)
        return d


def _stage_digest(cfg: TrainConfig, name: str, prev_digest: str) -> str:
    from etc_training.recipe.checkpoint import config_hash

    st = to_dict(getattr(cfg.stages, name))
    for k in ("export_ema",):
        st.pop(k, None)
    return config_hash({"prev": prev_digest, "stage": st, "seed": cfg.seed})


def _base_digest(cfg: TrainConfig) -> str:
    from etc_training.recipe.checkpoint import config_hash

    data = to_dict(cfg.data)
    data.pop("cache_episodes", None)
    return config_hash({"model": to_dict(cfg.model), "data": data, "seed": cfg.seed})


def _load_policy(path: Path, device):
    from etc_training.models.vla import VLAPolicy

    return VLAPolicy.load(path, device=device)


def _val_batches(ctx: RecipeContext, processor, n_batches: int, batch: int) -> list[dict]:
    vs = ctx.cfg.data.val_split
    if not vs or not ctx.has_split(vs) or n_batches <= 0:
        return []
    ds = ctx.actions([vs])
    n = min(len(ds), n_batches * batch)
    idx = np.linspace(0, len(ds) - 1, n).round().astype(int)
    exs = [ds.example(processor, int(i)) for i in idx]
    return [processor.collate(exs[k:k + batch]) for k in range(0, len(exs), batch)]


def _val_hook(batches: list[dict]) -> Callable:
    def fn(step, policy):
        import torch

        if not batches:
            return {}
        tot, acc, n = 0.0, 0.0, 0
        with torch.no_grad():
            for b in batches:
                out = policy(b)
                k = len(b["input_ids"])
                tot += float(out["loss"]) * k
                acc += float(out.get("action_accuracy", 0.0)) * k
                n += k
        return {"val": {"action_loss": tot / n, "action_accuracy": acc / n}}

    return fn


def _cka_hook(probe, ref: dict, layers: str, ref_name: str) -> Callable:
    from etc_training.recipe.cka import cka_by_layer, extract_features

    def fn(step, policy):
        vals = cka_by_layer(extract_features(policy, probe, layers), ref)
        return {"cka": vals, "cka_mean": float(np.mean(list(vals.values()))), "cka_reference": ref_name}

    return fn


def reference_features(ctx: RecipeContext, ref_dir: Path, cache: Path, device) -> dict:
    from etc_training.recipe.cka import extract_features, load_features, save_features
    from etc_training.recipe.distributed import barrier

    if ctx.dist.is_main and not cache.is_file():
        pol = _load_policy(ref_dir, device)
        feats = extract_features(pol, ctx.probe, ctx.cfg.cka.layers)
        save_features(cache, feats, {"reference": str(ref_dir), "layers": ctx.cfg.cka.layers})
        del pol
    barrier(ctx.dist)
    return load_features(cache)[0]


def run_recipe(cfg: TrainConfig, progress: bool = True, log: Callable[[str], None] | None = print) -> dict:
    """Run every enabled stage in order (resuming what a previous invocation left). Returns the summary."""
    from etc_training.recipe.distributed import teardown_distributed

    cfg = check_config(cfg)
    if not progress:
        cfg.run.progress = False
    dist = _start_process(cfg)
    say = (lambda s: None) if (log is None or not dist.is_main) else log
    out = Path(cfg.out)
    t_start = time.perf_counter()
    base = _base_digest(cfg)
    _prepare_out(cfg, out, base, dist)
    ctx = RecipeContext(cfg, dist, out)
    ctx.prepare_data()
    say(f"[train] data: episodes {ctx.episodes}, ETC {ctx.etc}, cameras {ctx.cameras}")
    chain = StageChain(prev=ctx.base_policy_dir(), digest=base)
    if dist.is_main:
        atomic_write_json(out / "init_digest.json", {"digest": base})
    ctx.probe = _cka_probe(ctx, chain.prev)
    stage_results: dict[str, Any] = {}
    summary: dict[str, Any] = {"out": str(out), "status": "done", "stages": stage_results}
    for name, scfg in cfg.stages.items():
        if not scfg.enabled:
            continue
        chain.digest = _stage_digest(cfg, name, chain.digest)
        res = _skip_done_stage(ctx, name, scfg, chain, say)
        if res is None:
            res = _train_stage(ctx, name, scfg, chain, say)
            if res["status"] != "done":
                stage_results[name] = res
                summary["status"] = "interrupted"
                break
        stage_results[name] = res
    _finish(ctx, summary, chain.prev, t_start, say)
    teardown_distributed(dist)
    return summary


# ---------------------------------------------------------------------------------------------- run_recipe's steps
def _start_process(cfg: TrainConfig):
    """Threads, quiet transformers, the torchrun process group (when launched by torchrun), seeds."""
    from etc_training.recipe.distributed import seed_everything, set_threads, setup_distributed

    set_threads(cfg.run.threads)
    _quiet_transformers()
    dist = setup_distributed(cfg.run)
    seed_everything(cfg.seed)
    return dist


def _prepare_out(cfg: TrainConfig, out: Path, base_digest: str, dist) -> None:
    """Rank 0: create `out`; with run.resume=never remove what an earlier run left; refuse an `out` whose initial
    policy was built from another model/data configuration; write config.yaml. Every rank waits for it."""
    from etc_ros.core.config import save_config
    from etc_training.recipe.distributed import barrier

    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        if cfg.run.resume == "never":
            import shutil

            for n, _ in cfg.stages.items():
                shutil.rmtree(out / n, ignore_errors=True)
            shutil.rmtree(out / "init", ignore_errors=True)
            for f in ("cka_reference.npz", "summary.json"):
                (out / f).unlink(missing_ok=True)
        meta_p = out / "init_digest.json"
        if meta_p.is_file() and (out / "init").exists():
            old = json.loads(meta_p.read_text()).get("digest")
            if old != base_digest:
                raise RecipeError(f"{out} holds a run with a different model/data configuration; use a new "
                                  f"`out` or run.resume=never to start over")
        save_config(cfg, out / "config.yaml")
    barrier(dist)


def _cka_probe(ctx: RecipeContext, init: Path):
    """The fixed CKA probe set (val split when present), or None when no stage after Stage 1 measures drift."""
    from etc_ros.core.processor import VLAProcessor

    cfg = ctx.cfg
    processor = VLAProcessor.load(init)  # the probe only needs the processor, not the weights
    probe_split = cfg.data.val_split if (cfg.data.val_split and ctx.has_split(cfg.data.val_split)) else None
    if not (cfg.cka.enabled and any(s.enabled for n, s in cfg.stages.items() if n != "stage1")):
        return None
    from etc_training.recipe.cka import build_probe

    src = ctx.actions([probe_split]) if probe_split else ctx.actions(ctx.action_splits_used()[:1])
    return build_probe(processor, src, cfg.cka.probe_size)


@dataclass
class StageChain:
    """What one stage hands the next: its final policy, the optimizer steps so far, the configuration digest
    chain, and the CKA reference features (Stage 1's final model, else the first measured stage's start)."""

    prev: Path  # the policy the next stage starts from
    digest: str  # of the model/data configuration and every stage so far
    offset: int = 0  # optimizer steps of the stages before (global_step = offset + step)
    ref_feats: dict | None = None
    ref_name: str | None = None

    def passed(self, ctx: RecipeContext, name: str, scfg: StageConfig, final: Path) -> None:
        """Stage `name` ended with the policy `final`."""
        self.prev = final
        self.offset += scfg.steps
        if name == "stage1" and ctx.probe is not None:
            self.ref_feats = reference_features(ctx, final, ctx.out / "cka_reference.npz", ctx.dist.device)
            self.ref_name = "stage1"


def _skip_done_stage(ctx: RecipeContext, name: str, scfg: StageConfig, chain: StageChain,
                     say: Callable[[str], None]) -> dict | None:
    """The stage's record when an earlier invocation finished it with this configuration (then the chain moves
    past it); None when it still has to be trained."""
    sdir = ctx.out / name
    final = sdir / "final"
    marker = sdir / STAGE_FILE
    if not (marker.is_file() and (final / "vla.json").is_file()):
        return None
    info = json.loads(marker.read_text())
    if info.get("digest") != chain.digest:
        raise RecipeError(f"{sdir} was trained with a different configuration (this stage or an earlier "
                          f"one changed); use a new `out` or run.resume=never")
    say(f"[train] {name}: already done ({info.get('steps')} steps), skipping")
    chain.passed(ctx, name, scfg, final)
    return info


def _train_stage(ctx: RecipeContext, name: str, scfg: StageConfig, chain: StageChain,
                 say: Callable[[str], None]) -> dict:
    """Trains (or resumes) one stage from chain.prev. When it finishes: exports final/ (EMA weights), writes
    stage.json and moves the chain past it. Returns the trainer's result (status "interrupted" on
    run.stop_after)."""
    from etc_training.recipe.distributed import barrier, seed_everything
    from etc_training.recipe.metrics import peak_rss_mb
    from etc_training.recipe.trainer import StageTrainer

    cfg, dist = ctx.cfg, ctx.dist
    sdir = ctx.out / name
    final = sdir / "final"
    if ctx.probe is not None and name != "stage1" and chain.ref_feats is None:
        # no Stage 1 in this run: drift is measured against the stage's starting model
        chain.ref_feats = reference_features(ctx, chain.prev, ctx.out / f"cka_reference_{name}_init.npz",
                                             dist.device)
        chain.ref_name = "init"
    say(f"[train] {name}: {scfg.steps} steps, action batch {scfg.action_batch}, ETC batch "
        f"{scfg.resolved_etc_batch()} from {[s.name for s in scfg.etc_sources]} (init {chain.prev})")
    t0 = time.perf_counter()
    seed_everything(cfg.seed + {"stage1": 1, "stage2": 2, "stage3": 3}[name])
    policy = _load_policy(chain.prev, dist.device)
    data = _stage_data(ctx, name, scfg, policy.processor, cfg.seed)
    hooks = _stage_hooks(ctx, name, scfg, chain, policy.processor)
    trainer = StageTrainer(policy, name, scfg, data, sdir, cfg.run, dist, seed=cfg.seed, global_offset=chain.offset,
                           hooks=hooks, init_path=chain.prev, config_digest=chain.digest)
    res = trainer.fit()
    if res["status"] != "done":
        say(f"[train] {name}: stopped at step {res['step']}/{scfg.steps} (run.stop_after)")
        return res
    init_dir = chain.prev
    trainer.export(final, policy_loader=lambda: _load_policy(init_dir, "cpu"))
    res.update(wall_s=round(time.perf_counter() - t0, 2), digest=chain.digest, final=str(final),
               peak_rss_mb=round(peak_rss_mb(), 1), world=dist.world,
               sources={s.name: s.weight for s in scfg.etc_sources},
               action_batch=scfg.action_batch, etc_batch=scfg.resolved_etc_batch())
    if dist.is_main:
        atomic_write_json(sdir / STAGE_FILE, res)
    say(f"[train] {name}: done in {res['wall_s']} s ({res['samples_per_s']} samples/s) -> {final}")
    chain.passed(ctx, name, scfg, final)
    del trainer, policy
    barrier(dist)
    return res


def _stage_hooks(ctx: RecipeContext, name: str, scfg: StageConfig, chain: StageChain, processor) -> list:
    """The trainer's periodic measurements: CKA drift to the reference (stages after Stage 1) and the held-out
    action loss (when the val split has data)."""
    cfg = ctx.cfg
    hooks = []
    if ctx.probe is not None and name != "stage1" and chain.ref_feats is not None:
        hooks.append((cfg.cka.every, _cka_hook(ctx.probe, chain.ref_feats, cfg.cka.layers, chain.ref_name)))
    vb = _val_batches(ctx, processor, cfg.run.val_batches, max(1, scfg.action_batch or 8))
    if vb:
        hooks.append((cfg.run.val_every, _val_hook(vb)))
    return hooks


def _finish(ctx: RecipeContext, summary: dict, final_policy: Path, t_start: float,
            say: Callable[[str], None]) -> None:
    """Completes the summary; rank 0 of a finished run writes the plots and summary.json."""
    from etc_training.recipe.distributed import barrier
    from etc_training.recipe.metrics import read_metrics

    cfg, dist, out = ctx.cfg, ctx.dist, ctx.out
    summary["final_policy"] = str(final_policy)
    summary["seconds"] = round(time.perf_counter() - t_start, 2)
    summary["world"] = dist.world
    if dist.is_main and summary["status"] == "done":
        rows = {n: read_metrics(out / n / "metrics.jsonl") for n, s in cfg.stages.items() if s.enabled}
        try:
            plots = write_plots(out, rows)
            summary["plots"] = [str(p) for p in plots]
        except Exception as e:  # noqa: BLE001 - a plot must not fail a finished run
            summary["plot_error"] = str(e)
        atomic_write_json(out / "summary.json", summary)
        say(f"[train] recipe done in {summary['seconds']} s; final policy {final_policy}")
    barrier(dist)


def _quiet_transformers() -> None:
    """Our own progress bars only: transformers' per-load/save bars would interleave with them."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass


def _stage_data(ctx: RecipeContext, name: str, scfg: StageConfig, processor, seed: int) -> StageData:
    actions = ctx.actions(scfg.action_splits) if scfg.action_batch > 0 else None
    eb = scfg.resolved_etc_batch()
    sources, groups = [], []
    if eb > 0:
        for src in scfg.etc_sources:
            if src.weight <= 0:
                continue
            sources.append((ctx.source(src), float(src.weight)))
            groups.append(dict(src.groups) or None)
    sseed = int(np.random.default_rng([seed, {"stage1": 1, "stage2": 2, "stage3": 3}[name]]).integers(2**31))
    return StageData(processor, actions, sources, scfg.action_batch, eb, sseed, images=ctx.images(),
                     etc_groups=groups, augment_shift=ctx.cfg.data.augment_shift,
                     grounding_batch=scfg.grounding_batch if scfg.action_batch > 0 else 0)


def write_plots(out: Path, rows_by_stage: dict[str, list[dict]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from etc_training.recipe.cka import plot_cka

    paths = []
    cka_rows = {n: r for n, r in rows_by_stage.items() if n != "stage1"}
    if any(isinstance(x.get("cka"), dict) for r in cka_rows.values() for x in r):
        merged = [x for n in sorted(cka_rows) for x in cka_rows[n]]
        paths.append(plot_cka({"this run": merged}, out / "cka.png"))
    fig, ax = plt.subplots(figsize=(7, 4))
    for n, rs in rows_by_stage.items():
        for k in ("action_loss", "etc_loss"):
            xy = [(r["global_step"], r[k]) for r in rs if k in r and "lr" in r]
            if xy:
                ax.plot(*zip(*xy), label=f"{n} {k}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = out / "loss.png"
    fig.savefig(p, dpi=100)
    plt.close(fig)
    paths.append(p)
    return paths
