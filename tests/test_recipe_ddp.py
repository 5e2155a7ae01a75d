"""Scale-out: the same `etc-vla train` command under `torchrun --nproc_per_node 2` with the gloo backend on CPU.
DDP replicas must end every stage with identical weights (and EMA). FSDP: tests/test_recipe_fsdp.py."""
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
SMALL = ["data.synthetic.episodes=2", "data.synthetic.val_episodes=0", "data.synthetic.target_episodes=0",
         "data.synthetic.ood_episodes=0", "data.synthetic.etc_stride=10", "data.val_split=''",
         "model.overrides={image_size: 64, patch_size: 16}", "model.action_tokenizer=bin",
         "stages.stage1.steps=2", "stages.stage1.etc_batch=4", "stages.stage2.steps=3", "stages.stage2.action_batch=4",
         "stages.stage2.etc_batch=2", "stages.stage3.enabled=false", "cka.enabled=false", "run.threads=1",
         "run.checkpoint_every=2", "run.log_every=1"]

pytestmark = pytest.mark.skipif(not (_dist.is_available() and _dist.is_gloo_available() and TORCHRUN.exists()),
                                reason="torch.distributed with gloo and torchrun are required")


def _torchrun(out: Path, *extra: str, timeout: int = 400) -> subprocess.CompletedProcess:
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "etc_training.cli", "train",
           "--no-progress", f"out={out}", *SMALL, *extra]
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    return r


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    r = _torchrun(out)
    return out, r


def test_ddp_two_processes_end_with_identical_weights(ddp_run):
    out, r = ddp_run
    assert '"world": 2' in r.stdout
    for stage in ("stage1", "stage2"):
        digests = [json.loads((out / stage / f"rank{k}.json").read_text()) for k in (0, 1)]
        assert all(d["world"] == 2 and d["strategy"] == "ddp" for d in digests)
        assert digests[0]["step"] == digests[1]["step"] > 0
        assert digests[0]["params_sha256"] == digests[1]["params_sha256"], stage
        assert digests[0]["ema_sha256"] == digests[1]["ema_sha256"], stage
        assert (out / stage / "final" / "vla.json").is_file()
    rows = [json.loads(x) for x in (out / "stage2" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in rows if "lr" in x]
    assert len(steps) == 3 and steps[-1]["counts"] == {"etc": 6, "action": 12}  # global batches, not per rank
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world"] == 2 and summary["stages"]["stage2"]["world"] == 2
