"""SDM / continuous-head benchmark (no trained checkpoint needed: a random-init tiny policy):

- head latency, batch 1: the 10-step DDIM teacher vs one denoiser call (torch eager and the single-pass ONNX
  graph in ONNX Runtime), interleaved so both see the same background load; speed-up = teacher-10 / one-step;
- end-to-end predict_chunk latency (preprocessing + tiny backbone + head) for both;
- SDM iteration throughput on cached conditions (iterations/s at batch 128);
- the 2-D two-mode toy: mode coverage of teacher-10, teacher-1 and the SDM generator (known answer: 50 / 50).

    etc-vla bench sdm --out runs/bench [--quick]
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from etc_ros.core import spec as robot_spec


def _toy(quick: bool) -> dict:
    import torch

    from etc_training.distill.sdm import SDMConfig, SDMDistiller, train_denoiser
    from etc_training.models.heads.diffusion import Denoiser, NoiseSchedule, ddim_sample

    modes = torch.tensor([[0.5, 0.5], [-0.5, -0.5]])
    g = torch.Generator().manual_seed(0)
    k = torch.randint(0, 2, (4000,), generator=g)
    data = (modes[k] + 0.08 * torch.randn(4000, 2, generator=g)).view(-1, 1, 2)
    torch.manual_seed(0)
    sch = NoiseSchedule(100)
    den = Denoiser(1, 2, 0, width=64 if quick else 128, depth=2, time_dim=32)
    t0 = time.perf_counter()
    train_denoiser(den, sch, data, steps=400 if quick else 1500, batch_size=256, lr=2e-3)
    t_teacher = time.perf_counter() - t0
    z = torch.randn(4000, 1, 2, generator=torch.Generator().manual_seed(1))

    def mass(x):
        d = torch.cdist(x.reshape(-1, 2), modes)
        near = d.min(1).values < 0.25
        return {"mode_a": round(float((near & (d.argmin(1) == 0)).float().mean()), 4),
                "mode_b": round(float((near & (d.argmin(1) == 1)).float().mean()), 4),
                "between": round(float((~near).float().mean()), 4)}

    with torch.no_grad():
        out = {"teacher-10": mass(ddim_sample(den, sch, z, None, 10, None)),
               "teacher-1": mass(ddim_sample(den, sch, z, None, 1, None))}
    steps = 500 if quick else 2000
    dist = SDMDistiller(den, sch, SDMConfig(steps=steps, batch_size=256, lr_generator=1e-3, lr_dynamic=1e-3,
                                            warmup=steps // 10, generator_every=5 if not quick else 2))
    t0 = time.perf_counter()
    dist.fit(None)
    out["sdm-1"] = mass(dist.sample(None, z))
    out["teacher_train_s"] = round(t_teacher, 2)
    out["sdm_s"] = round(time.perf_counter() - t0, 2)
    out["sdm_iterations"] = steps
    return out


def run(out_dir: Path, quick: bool = False) -> dict:
    import numpy as np
    import torch

    from etc_training.distill.export import _example_inputs, export_head_graph, ort_session
    from etc_training.distill.policy import condition_batch, variant_head
    from etc_training.distill.report import head_latency, interleaved_timing, policy_latency
    from etc_training.distill.sdm import SDMConfig, SDMDistiller
    from etc_training.models.vla import VLAPolicy

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    runs = 20 if quick else 100
    res: dict = {"quick": quick, "cpu_count": os.cpu_count(), "threads": 1,
                 "load_avg_start": [round(v, 2) for v in os.getloadavg()]}
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(64, robot_spec.CHUNK_HORIZON, robot_spec.ACTION_DIM)) * 0.01
    raw[..., -1] = rng.integers(0, 2, size=(64, 1))
    states = rng.normal(size=(64, robot_spec.STATE_DIM)) * 0.3
    pol = VLAPolicy.build("tiny", action_chunks=raw, states=states, head="diffusion").eval()
    img = (rng.random((robot_spec.IMAGE_SIZE, robot_spec.IMAGE_SIZE, 3)) * 255).astype(np.uint8)
    obs = {"images": img, "state": states[0], "instruction": "put the red block in the bowl"}
    heads = {"teacher-10": variant_head(pol, "teacher-10"), "teacher-1": variant_head(pol, "teacher-1"),
             "one-step": variant_head(pol, "sdm-1", pol.action_head.denoiser.state_dict())}
    prompt = pol.processor.build_inference_prompt(img, states[0], obs["instruction"])
    cond = condition_batch(pol, [prompt])
    res["head_torch"] = head_latency(heads, cond, runs)
    res["policy_torch"] = policy_latency(pol, {k: heads[k] for k in ("teacher-10", "one-step")}, obs,
                                         max(5, runs // 4))
    fns, info = {}, {}
    L = len(prompt["input_ids"])
    for name in ("teacher-10", "one-step"):
        p = export_head_graph(heads[name], out_dir / f"head_{name}.onnx")
        hid, mask, noise = _example_inputs(heads[name], 1, L, seed=2)
        sess = ort_session(p)
        feeds = {"hidden_states": hid.numpy(), "condition_mask": mask.numpy(), "noise": noise.numpy()}
        fns[name] = lambda s=sess, f=feeds: s.run(None, f)
        info[name] = {"bytes": p.stat().st_size}
    res["head_onnx"] = interleaved_timing(fns, runs, warmup=5)
    for k in info:
        res["head_onnx"][k].update(info[k])
    sp = {}
    for kind in ("head_torch", "head_onnx", "policy_torch"):
        r = res[kind]
        sp[kind] = round(r["teacher-10"]["median_ms"] / r["one-step"]["median_ms"], 2)
        sp[kind + "_min"] = round(r["teacher-10"]["min_ms"] / r["one-step"]["min_ms"], 2)
    res["speedup_teacher10_over_onestep"] = sp
    # SDM iteration throughput on cached conditions
    head = pol.action_head
    bank = torch.randn(512, cond.shape[1])
    n_it = 50 if quick else 200
    dist = SDMDistiller(head.denoiser, head.schedule, SDMConfig(steps=n_it, batch_size=128, warmup=10))
    t0 = time.perf_counter()
    dist.fit(bank)
    res["sdm_iterations_per_s"] = round(n_it / (time.perf_counter() - t0), 2)
    res["toy_two_modes"] = _toy(quick)
    res["load_avg_end"] = [round(v, 2) for v in os.getloadavg()]
    return res
