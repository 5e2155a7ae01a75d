"""The continuous head as ONE single-pass ONNX graph: the "head" role of a policy bundle (etc_ros/policy/bundle.py).

    inputs   hidden_states   float32 (B, L, E)   the language model's last hidden states over the prefix
             condition_mask  float32 (B, L)      attention_mask * (token_type_ids == 0)
             noise           float32 (B, H, D)   x_T ~ N(0, I)
    output   actions         float32 (B, H, D)   normalized chunk (unnormalized by the processor's stats)

The graph holds the prefix pooler and the sampler: for a one-step head (SDM / CD student) ONE denoiser pass;
for a DDIM head the loop is unrolled (N denoiser passes inside one graph). `PolicyRuntime`
(etc_ros/policy/runtime.py, GraphPolicy.continuous) calls it once per chunk.

    path = export_head_graph(head, "bundle/fp32/head.onnx")            # head: DiffusionActionHead
    manifest_head = head_manifest(head)                                # the bundle manifest's "head" entry
    err = check_head_graph(path, head)                                 # max |ORT - torch| on random inputs
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from etc_training.distill.sdm import DistillError
from etc_training.models.heads.diffusion import DiffusionActionHead

INPUT_NAMES = ("hidden_states", "condition_mask", "noise")
OUTPUT_NAMES = ("actions",)


class HeadGraph(nn.Module):
    """(hidden_states, condition_mask, noise) -> actions with the head's sampler (or the one given)."""

    def __init__(self, head: DiffusionActionHead, sampler: str | None = None, num_inference_steps: int | None = None):
        super().__init__()
        self.head = head
        self.sampler = sampler or head.sampler
        self.steps = int(num_inference_steps or head.num_inference_steps)

    def forward(self, hidden_states: torch.Tensor, condition_mask: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        cond = self.head.pooler(hidden_states, condition_mask)
        return self.head.sample(cond, noise, self.sampler, self.steps)


class SamplerGraph(nn.Module):
    """(cond, noise) -> actions: the sampler alone (no pooler), for measuring what the distillation changes."""

    def __init__(self, head: DiffusionActionHead, sampler: str | None = None, num_inference_steps: int | None = None):
        super().__init__()
        self.head = head
        self.sampler = sampler or head.sampler
        self.steps = int(num_inference_steps or head.num_inference_steps)

    def forward(self, cond: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.head.sample(cond, noise, self.sampler, self.steps)


def export_sampler_graph(head: DiffusionActionHead, path: str | Path, opset: int = 18) -> Path:
    """The sampler alone as ONNX (inputs cond (B, C), noise (B, H, D); output actions), TorchScript exporter."""
    import warnings

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cond = torch.randn(2, head.denoiser.cond_dim)
    noise = torch.randn(2, head.horizon, head.action_dim)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(SamplerGraph(head).eval(), (cond, noise), str(path), input_names=["cond", "noise"],
                          output_names=["actions"], opset_version=int(opset), dynamo=False,
                          dynamic_axes={"cond": {0: "batch"}, "noise": {0: "batch"}, "actions": {0: "batch"}})
    return path


def denoiser_calls(head: DiffusionActionHead, sampler: str | None = None, steps: int | None = None) -> int:
    return 1 if (sampler or head.sampler) == "onestep" else int(steps or head.num_inference_steps)


def head_manifest(head: DiffusionActionHead, sampler: str | None = None, steps: int | None = None) -> dict:
    """What the bundle manifest's "head" entry needs for a continuous head (GraphPolicy reads horizon,
    action_dim and noise_seed)."""
    s = sampler or head.sampler
    return {
        "type": "continuous",
        "kind": "diffusion",
        "sampler": s,
        "num_inference_steps": denoiser_calls(head, s, steps),
        "denoiser_calls_per_chunk": denoiser_calls(head, s, steps),
        "horizon": int(head.horizon),
        "action_dim": int(head.action_dim),
        "hidden_size": int(head.hidden_size),
        "noise_seed": 0 if head.noise_seed is None else int(head.noise_seed),
        "clip_sample": head.clip_sample,
        "inputs": list(INPUT_NAMES),
        "outputs": list(OUTPUT_NAMES),
        "condition_mask": "attention_mask * (token_type_ids == 0)",
    }


def _example_inputs(head: DiffusionActionHead, batch: int = 2, length: int = 12, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    hid = torch.randn(batch, length, head.hidden_size, generator=g)
    mask = torch.ones(batch, length)
    mask[0, :3] = 0.0  # left padding in one row
    noise = torch.randn(batch, head.horizon, head.action_dim, generator=g)
    return hid, mask, noise


def export_head_graph(head: DiffusionActionHead, path: str | Path, sampler: str | None = None,
                      num_inference_steps: int | None = None, opset: int = 18, dynamo: bool = False) -> Path:
    """Export the head (pooler + sampler) to one ONNX file with dynamic batch and sequence length.
    dynamo=False uses the TorchScript exporter (about 30x faster to export this small graph here; same
    numerics); dynamo=True the torch.export-based one (needs onnxscript). If the TorchScript exporter is
    unavailable the dynamo exporter is used."""
    if not isinstance(head, DiffusionActionHead):
        raise DistillError(f"export_head_graph needs a DiffusionActionHead, got {type(head).__name__}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    graph = HeadGraph(head, sampler, num_inference_steps).eval()
    args = _example_inputs(head)
    import warnings

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        if not dynamo:
            try:
                torch.onnx.export(graph, args, str(path), input_names=list(INPUT_NAMES),
                                  output_names=list(OUTPUT_NAMES), opset_version=int(opset), dynamo=False,
                                  dynamic_axes={"hidden_states": {0: "batch", 1: "seq"},
                                                "condition_mask": {0: "batch", 1: "seq"}, "noise": {0: "batch"},
                                                "actions": {0: "batch"}})
                return path
            except (TypeError, RuntimeError, ImportError):  # exporter removed in this torch: use dynamo
                pass
        batch = torch.export.Dim("batch", min=1, max=256)
        seq = torch.export.Dim("seq", min=2, max=8192)
        dyn = {"hidden_states": {0: batch, 1: seq}, "condition_mask": {0: batch, 1: seq}, "noise": {0: batch}}
        prog = torch.onnx.export(graph, args, input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
                                 dynamic_shapes=dyn, opset_version=int(opset), dynamo=True, external_data=False,
                                 verbose=False)
        prog.save(str(path))
    return path


def ort_session(path: str | Path, threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = max(1, int(threads))
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@torch.no_grad()
def check_head_graph(path: str | Path, head: DiffusionActionHead, sampler: str | None = None,
                     num_inference_steps: int | None = None, batch: int = 3, length: int = 17) -> float:
    """max |ORT(graph) - torch(head)| on random inputs of a shape other than the export example."""
    hid, mask, noise = _example_inputs(head, batch, length, seed=1)
    ref = HeadGraph(head, sampler, num_inference_steps).eval()(hid, mask, noise).numpy()
    sess = ort_session(path)
    out = sess.run(None, {"hidden_states": hid.numpy(), "condition_mask": mask.numpy(), "noise": noise.numpy()})[0]
    return float(np.max(np.abs(out - ref)))


def time_head_graph(path: str | Path, head: DiffusionActionHead, length: int = 64, runs: int = 50,
                    threads: int = 1) -> dict:
    """Median / p90 latency (ms) of one ORT call of the head graph at batch 1."""
    hid, mask, noise = _example_inputs(head, 1, length, seed=2)
    sess = ort_session(path, threads)
    feeds = {"hidden_states": hid.numpy(), "condition_mask": mask.numpy(), "noise": noise.numpy()}
    for _ in range(5):
        sess.run(None, feeds)
    ts = []
    for _ in range(int(runs)):
        t0 = time.perf_counter()
        sess.run(None, feeds)
        ts.append(1000 * (time.perf_counter() - t0))
    return latency_stats(ts)


def latency_stats(ms: Any) -> dict:
    a = np.asarray(list(ms), dtype=float)
    return {"median_ms": round(float(np.median(a)), 4), "p90_ms": round(float(np.percentile(a, 90)), 4),
            "mean_ms": round(float(a.mean()), 4), "runs": int(a.size)}
