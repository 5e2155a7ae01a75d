"""SDM one-step distillation: known-answer toy problem (2-D mixture of two Gaussians), the one-call guarantee of the
distilled head (the trap of the method's public config: a "one-step" policy that still ran 10 DDIM steps),
the student checkpoint and the single-pass ONNX graph, and the `etc-vla distill sdm` pipeline on tiny data."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from etc_training.distill.consistency import CDConfig, ConsistencyDistiller
from etc_training.distill.sdm import DistillError, SDMConfig, SDMDistiller, train_denoiser
from etc_training.models.heads import diffusion
from etc_training.models.heads.diffusion import Denoiser, NoiseSchedule, ddim_sample

MODES = torch.tensor([[0.5, 0.5], [-0.5, -0.5]])
STD = 0.08


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def mog(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = torch.randint(0, 2, (n,), generator=g)
    return (MODES[k] + STD * torch.randn(n, 2, generator=g)).view(n, 1, 2)


def mode_mass(x: torch.Tensor) -> tuple[float, float, float]:
    """Fractions of samples near mode +, near mode -, and in between (neither)."""
    d = torch.cdist(x.reshape(-1, 2), MODES)  # (N, 2)
    near = d.min(1).values < 0.25
    pos = float((near & (d.argmin(1) == 0)).float().mean())
    neg = float((near & (d.argmin(1) == 1)).float().mean())
    return pos, neg, 1.0 - pos - neg


@pytest.fixture(scope="module")
def toy():
    """A small x0-prediction denoiser trained on the two-mode mixture (the teacher)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    sch = NoiseSchedule(100)
    den = Denoiser(1, 2, 0, width=32, depth=2, time_dim=16)
    hist = train_denoiser(den, sch, mog(4000, 0), steps=400, batch_size=128, lr=5e-3, log_every=50)
    return den, sch, hist


def test_teacher_training_loss_decreases(toy):
    _, _, hist = toy
    assert hist[-1]["loss"] < 0.8 * hist[0]["loss"]


def test_teacher_ddim10_reproduces_both_modes_and_ddim1_collapses(toy):
    den, sch, _ = toy
    z = torch.randn(2000, 1, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        x10 = ddim_sample(den, sch, z, None, 10, clip_sample=None)
        x1 = ddim_sample(den, sch, z, None, 1, clip_sample=None)
    pos, neg, mid = mode_mass(x10)
    assert pos > 0.35 and neg > 0.35 and mid < 0.15, (pos, neg, mid)
    # one DDIM step from pure noise returns E[x0 | noise] = the mixture mean: between the modes
    pos1, neg1, mid1 = mode_mass(x1)
    assert mid1 > 0.8, (pos1, neg1, mid1)


def test_sdm_generator_covers_both_modes_in_one_call(toy):
    den, sch, _ = toy
    # generator_every=2 (the method: 5) and a high lr keep this test within seconds on a shared 2-core CPU
    cfg = SDMConfig(steps=500, batch_size=128, lr_generator=3e-3, lr_dynamic=3e-3, warmup=50, generator_every=2,
                    log_every=50, seed=0)
    dist = SDMDistiller(den, sch, cfg)
    z = torch.randn(2000, 1, 2, generator=torch.Generator().manual_seed(2))
    before = mode_mass(dist.sample(None, z))
    assert before[2] > 0.8  # G starts as the teacher called once: collapsed onto the mean
    hist = dist.fit(None)
    calls = {"n": 0}
    h = dist.G.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    x = dist.sample(None, z)
    h.remove()
    assert calls["n"] == 1
    pos, neg, mid = mode_mass(x)
    assert pos >= 0.25 and neg >= 0.25 and mid < 0.3, (pos, neg, mid)
    # the generator loss 0.5 * mean(grad^2) goes to 0 as the two scores agree
    assert np.mean([r["loss_G"] for r in hist[-3:]]) < 0.5 * np.mean([r["loss_G"] for r in hist[:2]])
    assert all(np.isfinite(r["loss_D"]) for r in hist)
    assert dist.generator_updates == 500 // 2
    # the frozen teacher never moved
    for p, q in zip(dist.F.parameters(), den.parameters()):
        assert torch.equal(p, q)


def test_dm_gradient_is_zero_when_the_two_teachers_agree(toy):
    den, sch, _ = toy
    dist = SDMDistiller(den, sch, SDMConfig(steps=1, batch_size=8))
    a = torch.randn(8, 1, 2)
    t = torch.full((8,), 49, dtype=torch.long)
    grad, _ = dist.dm_gradient(a, None, t, torch.randn(8, 1, 2))
    assert torch.allclose(grad, torch.zeros_like(grad))  # D == F at the start


def test_consistency_student_runs_one_call(toy):
    den, sch, _ = toy
    cd = ConsistencyDistiller(den, sch, CDConfig(steps=30, batch_size=64, lr=1e-3, warmup=5, log_every=10))
    hist = cd.fit(None, mog(500, 3))
    assert len(hist) == 3 and all(np.isfinite(r["loss_CD"]) for r in hist)
    assert torch.isfinite(cd.sample(None, torch.randn(16, 1, 2))).all()


def test_bad_sdm_config():
    with pytest.raises(DistillError, match="generator_every"):
        SDMConfig(generator_every=0).check()
    with pytest.raises(DistillError, match="lr"):
        SDMConfig(lr_generator=0.0).check()
    with pytest.raises(DistillError, match="t_sampling"):
        SDMConfig(t_sampling="random").check()


# ---------------------------------------------------------------------------------------------- the VLA head
@pytest.fixture(scope="module")
def vla(tmp_path_factory):
    torch.set_num_threads(1)
    from etc_training.etc.synthetic import make_episode, write_dataset
    from etc_training.models.vla import VLAPolicy
    from etc_training.recipe.data import ActionChunkDataset, EpisodeStore

    root = tmp_path_factory.mktemp("sdm") / "episodes"
    write_dataset(root, [make_episode(i, ("pick_place", "push")[i % 2], width=64, height=48) for i in range(2)])
    ds = ActionChunkDataset(EpisodeStore(4), root, ["train"], 10)
    chunks, states = ds.all_chunks()
    pol = VLAPolicy.build("tiny", action_chunks=chunks, states=states, head="diffusion",
                          head_config={"width": 64, "depth": 2, "cond_dim": 64, "n_queries": 2})
    pol.eval()
    return pol, ds, root


def _obs(ds, i):
    it = ds.item(i)
    return {"images": it["images"], "state": it["state"], "instruction": it["instruction"]}


def test_one_step_policy_calls_the_generator_exactly_once_per_chunk(vla, monkeypatch, tmp_path):
    from etc_training.distill.policy import save_student, variant_head
    from etc_training.models.vla import VLAPolicy

    pol, ds, _ = vla
    teacher = pol.action_head
    student = variant_head(pol, "sdm-1", teacher.denoiser.state_dict())
    d = save_student(pol, student, tmp_path / "student", {"method": "sdm"})
    loaded = VLAPolicy.load(d)
    head = loaded.action_head
    assert head.sampler == "onestep" and loaded.meta["distill"]["method"] == "sdm"

    calls = {"n": 0}
    hook = head.denoiser.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))

    def trap(*a, **k):
        raise AssertionError("the DDIM loop was entered by a one-step policy")

    monkeypatch.setattr(diffusion, "ddim_sample", trap)
    try:
        chunk = loaded.predict_chunk(**{"images": _obs(ds, 0)["images"], "state": _obs(ds, 0)["state"],
                                        "instruction": _obs(ds, 0)["instruction"]})
        assert chunk.shape == (10, 7) and np.all(np.isfinite(chunk))
        assert calls["n"] == 1
        chunks, valid = loaded.predict_chunks([_obs(ds, i) for i in (1, 2, 3)])
        assert chunks.shape == (3, 10, 7) and valid.all()
        assert calls["n"] == 2  # one batched call for three chunks
    finally:
        hook.remove()
    monkeypatch.undo()
    # the teacher (DDIM 10) does run the loop: 10 calls
    n10 = {"n": 0}
    h2 = teacher.denoiser.register_forward_hook(lambda *a: n10.__setitem__("n", n10["n"] + 1))
    try:
        pol.predict_chunk(**_obs(ds, 0))
    finally:
        h2.remove()
    assert n10["n"] == 10


def test_one_step_head_exports_as_one_single_pass_graph(vla, tmp_path):
    import onnx

    from etc_training.distill.export import check_head_graph, export_head_graph, head_manifest
    from etc_training.distill.policy import variant_head

    pol, _, _ = vla
    one = variant_head(pol, "sdm-1", pol.action_head.denoiser.state_dict())
    ten = variant_head(pol, "teacher-10")
    p1 = export_head_graph(one, tmp_path / "one.onnx")
    p10 = export_head_graph(ten, tmp_path / "ten.onnx")
    assert check_head_graph(p1, one) < 1e-4
    assert check_head_graph(p10, ten) < 1e-4

    def matmuls(p):
        return sum(n.op_type in ("MatMul", "Gemm") for n in onnx.load(str(p)).graph.node)

    m1, m10 = matmuls(p1), matmuls(p10)
    per_call = (m10 - m1) / 9  # the 10-step graph holds 9 more denoiser passes
    assert per_call >= 5 and m1 < 2 * per_call + 4  # pooler + ONE denoiser pass
    man = head_manifest(one)
    assert man["type"] == "continuous" and man["denoiser_calls_per_chunk"] == 1
    assert (man["horizon"], man["action_dim"]) == (10, 7)


def test_distill_pipeline_on_tiny_data(vla, tmp_path):
    from etc_training.distill.config import DistillConfig, check_distill_config
    from etc_training.distill.pipeline import run_distill
    from etc_training.models.vla import VLAPolicy

    pol, _, root = vla
    ck = pol.save(tmp_path / "teacher")
    cfg = DistillConfig(out=str(tmp_path / "out"), checkpoint=str(ck))
    cfg.data.episodes = str(root)
    cfg.data.max_frames = 12
    cfg.sdm = SDMConfig(steps=10, batch_size=16, warmup=2, log_every=5)
    cfg.eval.enabled = False
    cfg.run.progress = False
    res = run_distill(check_distill_config(cfg), progress=False, log=None)
    out = tmp_path / "out"
    assert (out / "student" / "vla.json").is_file() and (out / "report.md").is_file()
    assert (out / "cache" / "cond_bank.pt").is_file()
    assert res["setup"]["frames"] == 12 and res["setup"]["generator_updates"] == 2
    st = VLAPolicy.load(out / "student")
    assert st.action_head.sampler == "onestep"
    with pytest.raises(DistillError, match="already a one-step"):
        from etc_training.distill.policy import load_teacher

        load_teacher(out / "student")
    cfg.data.episodes = None
    with pytest.raises(DistillError, match="--data"):
        run_distill(cfg, progress=False, log=None)
    cfg.data.episodes = str(root)
    cfg.data.splits = ["nope"]
    with pytest.raises(DistillError, match="no episodes in split"):
        run_distill(cfg, progress=False, log=None)
