"""Scale-out with FSDP (parameter sharding, for models that do not fit one device): `etc-vla train
run.distributed=fsdp` under `torchrun --nproc_per_node 2` (gloo, CPU) trains, keeps one shard per rank, writes full
checkpoints and exports a loadable policy."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.distributed as _dist  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")

pytestmark = pytest.mark.skipif(not (_dist.is_available() and _dist.is_gloo_available() and TORCHRUN.exists()),
                                reason="torch.distributed with gloo and torchrun are required")


def test_fsdp_two_processes_train_shard_and_export(tmp_path):
    from safetensors.torch import load_file

    from etc_training.recipe.checkpoint import load_tensors

    out = tmp_path / "fsdp"
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "etc_training.cli", "train", "--no-progress",
           f"out={out}", "data.synthetic.episodes=2", "data.synthetic.val_episodes=0",
           "data.synthetic.target_episodes=0", "data.synthetic.ood_episodes=0", "data.synthetic.etc_stride=10",
           "data.val_split=''", "model.overrides={image_size: 64, patch_size: 16}", "model.action_tokenizer=bin",
           "stages.stage1.enabled=false", "stages.stage3.enabled=false", "stages.stage2.steps=3",
           "stages.stage2.action_batch=4", "stages.stage2.etc_batch=2", "cka.enabled=false", "run.threads=1",
           "run.distributed=fsdp", "run.log_every=1"]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    d = [json.loads((out / "stage2" / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert all(x["strategy"] == "fsdp" and x["world"] == 2 and x["step"] == 3 for x in d)
    assert d[0]["params_sha256"] != d[1]["params_sha256"]  # each rank holds only its own shard
    rows = [json.loads(x) for x in (out / "stage2" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in rows if "lr" in x]
    assert len(steps) == 3 and all(x["action_loss"] > 0 and x["etc_loss"] > 0 for x in steps)
    assert steps[-1]["counts"] == {"etc": 6, "action": 12}
    # the checkpoint holds the full (gathered) tensors, the export loads as an ordinary policy
    ck = load_tensors(out / "stage2" / "checkpoints" / "step_000003" / "model.safetensors")[0]
    init = load_file(str(out / "init" / "model.safetensors"))
    k = "model.language_model.layers.0.mlp.up_proj.weight"
    assert tuple(ck["backbone." + k].shape) == tuple(init["language_model.model.layers.0.mlp.up_proj.weight"].shape)
    assert not torch.equal(ck["backbone." + k], init["language_model.model.layers.0.mlp.up_proj.weight"])
    from etc_training.models.vla import VLAPolicy

    pol = VLAPolicy.load(out / "stage2" / "final")
    assert pol.num_parameters() > 0
