"""The recipe with a real (tiny, random-init) PaliGemma-architecture policy on generated data: the three stages
chain (each starts from the previous final weights), losses and CKA are logged, the prompt carries no loss, a
Stage-2 step sums both losses' gradients, EMA weights are exported, and a killed / interrupted run resumes
bit-identically."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")

from etc_training.recipe.config import RecipeError, load_train_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "config/train_tiny.yaml")
FAST = ["run.threads=1", "run.progress=false", "run.log_every=1", "cka.probe_size=4", "run.val_batches=1",
        "stages.stage1.etc_batch=4", "stages.stage2.action_batch=4", "stages.stage3.action_batch=4"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Generated data + one tiny base policy (64 px images, 16 image tokens) shared by the tests."""
    from etc_training.recipe.ablate import build_init_policy
    from etc_training.recipe.data import make_synthetic_data

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("recipe")
    cfg = load_train_config(TINY, ["data.synthetic.episodes=3", "data.synthetic.val_episodes=1",
                                   "data.synthetic.target_episodes=1", "data.synthetic.ood_episodes=1",
                                   "data.synthetic.etc_stride=8", "model.overrides={image_size: 64, patch_size: 16}"])
    eps, etc = make_synthetic_data(root / "data", cfg.data.synthetic)
    cfg.data.episodes, cfg.data.etc = str(eps), str(etc)
    init = build_init_policy(cfg, root / "init")
    base = [f"data.episodes={eps}", f"data.etc={etc}", f"model.init={init}"] + FAST
    return {"root": root, "base": base, "eps": eps, "etc": etc, "init": init}


def _cfg(setup, out, *ov):
    return load_train_config(TINY, setup["base"] + [f"out={out}"] + list(ov))


def _run(setup, out, *ov):
    from etc_training.recipe.stages import run_recipe

    return run_recipe(_cfg(setup, out, *ov), progress=False, log=None)


def _rows(path):
    from etc_training.recipe.metrics import read_metrics

    return read_metrics(path)


def _tensors(path):
    from etc_training.recipe.checkpoint import load_tensors

    return load_tensors(Path(path))[0]


# ---------------------------------------------------------------- the whole recipe
def test_three_stages_chain_log_and_export_ema(setup, tmp_path):
    from PIL import Image

    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(tmp_path / "g.png")
    gen = tmp_path / "selected.jsonl"
    gen.write_text("\n".join(json.dumps({"image": "g.png", "question": f"What is shown {i}?", "answer": "a table"})
                             for i in range(5)) + "\n")
    out = tmp_path / "run"
    s = _run(setup, out, "stages.stage1.steps=4", "stages.stage2.steps=4", "stages.stage3.steps=3",
             "stages.stage2.warmup=2", "cka.every=2", "run.val_every=0", "run.checkpoint_every=0",
             f"data.general=[{gen}]",
             "stages.stage1.etc_sources=[{name: etc, kind: etc, splits: [train], weight: 0.5},"
             " {name: general, kind: general, weight: 0.5}]")
    assert s["status"] == "done" and s["final_policy"] == str(out / "stage3" / "final")
    # each stage starts from the previous stage's final policy
    inits = {n: json.loads(json.dumps(_meta(out / n)))["init"] for n in ("stage1", "stage2", "stage3")}
    assert inits == {"stage1": str(setup["init"]), "stage2": str(out / "stage1" / "final"),
                     "stage3": str(out / "stage2" / "final")}
    r1 = [r for r in _rows(out / "stage1" / "metrics.jsonl") if "lr" in r]
    assert len(r1) == 4 and all("etc_loss" in r and "action_loss" not in r for r in r1)
    assert r1[-1]["counts"] == {"etc": 8, "general": 8, "action": 0}  # Stage 1: ETC + general VLM data, 50:50
    r2 = _rows(out / "stage2" / "metrics.jsonl")
    steps = [r for r in r2 if "lr" in r]
    assert all("etc_loss" in r and "action_loss" in r for r in steps)
    assert steps[-1]["counts"] == {"etc": 4, "action": 16}  # 4 action + round(4 x 0.25) = 1 ETC per step
    assert abs(steps[-1]["loss"] - steps[-1]["action_loss"] - steps[-1]["etc_loss"]) < 1e-4
    assert steps[0]["lr"] < steps[1]["lr"]  # warm-up
    cka = [r for r in r2 if "cka" in r]
    assert [r["step"] for r in cka] == [2, 4] and all(r["cka_reference"] == "stage1" for r in cka)
    assert set(cka[0]["cka"]) == {f"text.{i}" for i in range(4)}  # embeddings + 3 decoder layers
    assert all(0.0 <= v <= 1.0 + 1e-6 for r in cka for v in r["cka"].values())
    r3 = [r for r in _rows(out / "stage3" / "metrics.jsonl") if "lr" in r]
    assert r3[-1]["counts"]["target"] + r3[-1]["counts"]["ood"] == 3
    for f in ("cka.png", "loss.png", "summary.json", "cka_reference.npz", "config.yaml"):
        assert (out / f).is_file(), f
    # the exported policy holds the EMA weights, not the raw ones
    ck = out / "stage3" / "checkpoints" / "step_000003"
    ema, raw = _tensors(ck / "ema.safetensors"), _tensors(ck / "model.safetensors")
    final = _tensors(out / "stage3" / "final" / "model.safetensors")
    k = "model.language_model.layers.0.mlp.up_proj.weight"
    kf = "language_model.model.layers.0.mlp.up_proj.weight"  # transformers' on-disk name
    assert torch.equal(final[kf], ema["backbone." + k]) and not torch.equal(final[kf], raw["backbone." + k])
    from etc_training.models.vla import VLAPolicy

    pol = VLAPolicy.load(out / "stage3" / "final")
    img = np.zeros((120, 160, 3), np.uint8)
    assert pol.predict_chunk(img, np.zeros(7), "put the red cube on the blue plate").shape == (10, 7)
    # running the same command again skips the finished stages; a changed stage config is refused
    again = _run(setup, out, "stages.stage1.steps=4", "stages.stage2.steps=4", "stages.stage3.steps=3",
                 "stages.stage2.warmup=2", "cka.every=2", "run.val_every=0", "run.checkpoint_every=0",
                 f"data.general=[{gen}]",
                 "stages.stage1.etc_sources=[{name: etc, kind: etc, splits: [train], weight: 0.5},"
                 " {name: general, kind: general, weight: 0.5}]")
    assert again["status"] == "done" and all(v.get("status") == "done" for v in again["stages"].values())
    with pytest.raises(RecipeError, match="different"):
        _run(setup, out, "stages.stage1.steps=5")


def _meta(stage_dir: Path) -> dict:
    from etc_training.recipe.checkpoint import latest_checkpoint, load_tensors

    return load_tensors(latest_checkpoint(stage_dir / "checkpoints") / "state.safetensors")[1]


# ---------------------------------------------------------------- resume
STAGE2_ONLY = ["stages.stage1.enabled=false", "stages.stage3.enabled=false", "stages.stage2.steps=6",
               "run.checkpoint_every=2", "cka.every=3", "run.val_every=3", "run.keep_checkpoints=10"]


def _same_checkpoints(a: Path, b: Path, step: int):
    for f in ("model", "optimizer", "ema"):
        ta = _tensors(a / "stage2" / "checkpoints" / f"step_{step:06d}" / f"{f}.safetensors")
        tb = _tensors(b / "stage2" / "checkpoints" / f"step_{step:06d}" / f"{f}.safetensors")
        assert ta.keys() == tb.keys()
        bad = [k for k in ta if not torch.equal(ta[k], tb[k])]
        assert not bad, f"{f}: {bad[:3]} differ"
    fa = _tensors(a / "stage2" / "final" / "model.safetensors")
    fb = _tensors(b / "stage2" / "final" / "model.safetensors")
    assert fa.keys() == fb.keys() and all(torch.equal(fa[k], fb[k]) for k in fa)


def _losses(out: Path):
    return [(r["step"], r["loss"]) for r in _rows(out / "stage2" / "metrics.jsonl") if "lr" in r]


def test_interrupted_and_killed_runs_resume_bit_identically(setup, tmp_path):
    ref = tmp_path / "ref"
    assert _run(setup, ref, *STAGE2_ONLY)["status"] == "done"
    # 1) stop after 3 steps (the checkpoint at step 2 survives, step 3 is lost), then resume
    b = tmp_path / "stopped"
    assert _run(setup, b, *STAGE2_ONLY, "run.stop_after=3")["status"] == "interrupted"
    s = _run(setup, b, *STAGE2_ONLY)
    assert s["status"] == "done" and s["stages"]["stage2"]["resumed"]
    _same_checkpoints(ref, b, 6)
    assert _losses(b) == _losses(ref)  # metrics rows of the lost step were dropped and redone
    assert [r["step"] for r in _rows(b / "stage2" / "metrics.jsonl") if "cka" in r] == [3, 6]
    # 2) SIGKILL a real `etc-vla train` process after its first checkpoint, then resume
    k = tmp_path / "killed"
    cmd = [sys.executable, "-m", "etc_training.cli", "train", "--config", TINY, "--no-progress",
           *setup["base"], f"out={k}", *STAGE2_ONLY]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    latest = k / "stage2" / "checkpoints" / "latest"
    t0 = time.time()
    try:
        while not latest.is_file() and proc.poll() is None and time.time() - t0 < 300:
            time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    assert latest.is_file(), err.decode()[-2000:]
    assert not (k / "stage2" / "stage.json").exists(), "the process finished before it could be killed"
    s = _run(setup, k, *STAGE2_ONLY)
    assert s["status"] == "done" and s["stages"]["stage2"]["resumed"]
    _same_checkpoints(ref, k, 6)
    assert _losses(k) == _losses(ref)


def test_latest_checkpoint_ignores_torn_writes(tmp_path):
    from etc_training.recipe.checkpoint import CKPT_FILES, latest_checkpoint

    d = tmp_path / "checkpoints"
    good = d / "step_000004"
    good.mkdir(parents=True)
    for f in CKPT_FILES:
        (good / f).write_bytes(b"x")
    (d / ".tmp-step_000006-123").mkdir()  # a crash during the next write
    partial = d / "step_000008"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"x")
    assert latest_checkpoint(d) == good
    (d / "latest").write_text("step_000008\n")  # pointer to an incomplete one: fall back to the newest complete
    assert latest_checkpoint(d) == good
    assert latest_checkpoint(tmp_path / "none") is None


# ---------------------------------------------------------------- losses
def test_prompt_tokens_carry_no_loss_and_stage2_sums_gradients(setup):
    from etc_training.models.vla import VLAPolicy
    from etc_training.recipe.config import RunConfig, SourceConfig, StageConfig
    from etc_training.recipe.data import EpisodeStore, RecordImages, StageData, load_language_source
    from etc_training.recipe.distributed import DistInfo
    from etc_training.recipe.stages import RecipeContext
    from etc_training.recipe.trainer import StageTrainer

    torch.manual_seed(0)
    pol = VLAPolicy.load(setup["init"])
    proc = pol.processor
    store = EpisodeStore(8)
    src = load_language_source(SourceConfig(kind="etc", path=str(setup["etc"]), splits=["train"]))
    imgs = RecordImages(store, ["primary"], 1)
    # --- answer-only loss: the model's ETC loss equals cross-entropy over the answer tokens alone
    exs = [proc.build_etc_example(r["prompt"], r["answer"], imgs(r)) for r in src.records[:3]]
    b = proc.collate(exs)
    out = pol(b)
    t = pol.to_torch(b)
    hid = pol.run_backbone(t).hidden_states
    logits = pol.logits(hid).float()
    n_ans = 0
    terms = []
    for i, ex in enumerate(exs):
        n_prefix = int((ex["token_type_ids"] == 0).sum())
        L = len(ex["input_ids"])
        for pos in range(n_prefix, L):  # only target positions are predicted
            terms.append(torch.nn.functional.cross_entropy(logits[i, pos - 1][None], t["input_ids"][i, pos][None]))
            n_ans += 1
    assert int(out["etc_tokens"]) == n_ans
    assert torch.allclose(out["loss"], torch.stack(terms).mean(), atol=1e-5)
    # --- a Stage-2 step: gradient = gradient of the action loss + gradient of the ETC loss
    cfg = load_train_config(TINY, setup["base"])
    ctx = RecipeContext(cfg, DistInfo(), setup["root"] / "ctx")
    ctx.prepare_data()
    data = StageData(proc, ctx.actions(["train"]), [(src, 1.0)], 4, 2, seed=0, images=imgs)
    batches = data.next()
    st = StageConfig(steps=10, action_batch=4, etc_batch=2, grad_clip=0.0, ema_decay=0.0,
                     etc_sources=[SourceConfig()])
    tr = StageTrainer(pol, "stage2", st, data, setup["root"] / "gradcheck", RunConfig(progress=False))
    seen = {}
    tr.opt.step = lambda: seen.update({n: p.grad.clone() for n, p in tr.named.items()})
    tr.train_step(batches)
    sep = {}
    for kind in ("action", "etc"):
        pol.zero_grad(set_to_none=True)
        pol(batches[kind])["loss"].backward()
        for n, p in tr.named.items():
            sep[n] = sep.get(n, 0) + p.grad.clone()
    worst = max(float((seen[n] - sep[n]).abs().max()) for n in seen)
    assert worst < 1e-5
    assert any(float(sep[n].abs().sum()) > 0 for n in sep)
