"""The continuous diffusion action head: noise schedule and DDIM utilities (checked against an exact denoiser of a
known distribution), the head inside VLAPolicy ("diffusion" and "both"), conditioning on prefix positions
only, save / load, and the recipe's head selection."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from etc_ros.core.errors import ModelError
from etc_training.models.heads.base import PrefixPooler, condition_mask
from etc_training.models.heads.diffusion import DiffusionActionHead, NoiseSchedule, ddim_sample
from etc_training.models.heads.hybrid import HybridActionHead, diffusion_part

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# ---------------------------------------------------------------------------------------------- schedule
def test_schedule_grid_and_noise_levels():
    s = NoiseSchedule(100)
    assert s.ddim_timesteps(10) == [99, 88, 77, 66, 55, 44, 33, 22, 11, 0]
    assert s.ddim_timesteps(1) == [99]  # one step starts from the pure-noise level
    assert s.ddim_timesteps(3) == [99, 50, 0]
    assert s.ddim_timesteps(100) == list(range(99, -1, -1))
    ab = s.alphas_cumprod
    assert torch.all(ab[1:] < ab[:-1]) and ab[0] > 0.99 and ab[-1] < 1e-3
    x0, eps = torch.ones(4, 10, 7), torch.randn(4, 10, 7)
    t = torch.tensor([0, 10, 50, 99])
    x = s.add_noise(x0, eps, t)
    assert torch.allclose(x, ab[t].sqrt().view(-1, 1, 1) * x0 + (1 - ab[t]).sqrt().view(-1, 1, 1) * eps)
    # the score of the exact x0 gives back -eps / sigma
    sc = s.score(x, x0, t)
    assert torch.allclose(sc, -eps / (1 - ab[t]).sqrt().view(-1, 1, 1), atol=1e-4)
    for bad in (0, 101):
        with pytest.raises(ModelError, match="num_inference_steps"):
            s.ddim_timesteps(bad)
    with pytest.raises(ModelError, match="schedule"):
        NoiseSchedule(100, "sigmoid")
    assert NoiseSchedule(100, "linear").alphas_cumprod[-1] < 1e-4


class ExactGaussianDenoiser(torch.nn.Module):
    """E[x0 | x_t] for x0 ~ N(mu, s^2 I) (closed form): the ideal x0-predictor of a known distribution."""

    def __init__(self, schedule: NoiseSchedule, mu: float, s: float, horizon: int = 4, dim: int = 3):
        super().__init__()
        self.schedule, self.mu, self.s = schedule, mu, s
        self.horizon, self.action_dim = horizon, dim
        self.calls = 0

    def forward(self, x_t, t, cond=None):
        self.calls += 1
        a = self.schedule.alpha(t, x_t)
        sg2 = self.schedule.sigma(t, x_t) ** 2
        # x_t = a x0 + sigma eps  ->  posterior mean of x0
        var = self.s ** 2
        return self.mu + a * var / (a * a * var + sg2) * (x_t - a * self.mu)


def test_ddim_reproduces_a_known_gaussian_and_counts_calls():
    s = NoiseSchedule(100)
    den = ExactGaussianDenoiser(s, mu=0.3, s=0.5)
    z = torch.randn(4000, 4, 3, generator=torch.Generator().manual_seed(0))
    x = ddim_sample(den, s, z, None, 10, clip_sample=None)
    assert den.calls == 10
    assert abs(float(x.mean()) - 0.3) < 0.02
    # deterministic DDIM with few steps under-disperses (it steps along posterior means): 10 steps give ~85 % of
    # the true spread, 100 steps ~98 %
    std10 = float(x.std())
    std100 = float(ddim_sample(den, s, z, None, 100, clip_sample=None).std())
    assert 0.75 * 0.5 < std10 < 0.5 and 0.95 * 0.5 < std100 < 0.5 * 1.02 and std100 > std10
    # deterministic DDIM is a map of the noise: the same noise gives the same sample
    assert torch.equal(x, ddim_sample(den, s, z, None, 10, clip_sample=None))
    x1 = ddim_sample(den, s, z, None, 1, clip_sample=None)
    assert abs(float(x1.mean()) - 0.3) < 0.02 and float(x1.std()) < 0.05  # one step: ~ the mean
    xc = ddim_sample(den, s, z * 50, None, 10, clip_sample=0.35)
    assert float(xc.abs().max()) <= 0.35 + 1e-6  # the last step returns the clipped x0 estimate


# ---------------------------------------------------------------------------------------------- pooling
def test_pooler_ignores_masked_positions():
    torch.manual_seed(0)
    p = PrefixPooler(16, cond_dim=8, n_queries=2).eval()
    h = torch.randn(2, 6, 16)
    m = torch.ones(2, 6)
    m[1, :2] = 0  # left padding in row 1
    c = p(h, m)
    h2 = h.clone()
    h2[1, :2] = 1e3  # whatever is under the mask does not matter
    assert torch.allclose(c, p(h2, m), atol=1e-5)
    assert torch.allclose(p(h[1:, 2:], torch.ones(1, 4)), c[1:], atol=1e-5)  # = the unpadded row
    cm = condition_mask(torch.tensor([[0, 1, 1, 1]]), torch.tensor([[0, 0, 0, 1]]))
    assert cm.tolist() == [[0.0, 1.0, 1.0, 0.0]]


# ---------------------------------------------------------------------------------------------- in the VLA
@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(64, 10, 7)) * 0.01
    raw[..., 6] = rng.integers(0, 2, size=(64, 1))
    states = rng.normal(size=(64, 7)) * 0.3
    imgs = [(rng.random((48, 64, 3)) * 255).astype(np.uint8) for _ in range(3)]
    return raw, states, imgs


SMALL = {"width": 64, "depth": 2, "cond_dim": 64, "n_queries": 2}


@pytest.fixture(scope="module")
def policies(data):
    torch.set_num_threads(1)
    from etc_training.models.vla import VLAPolicy

    raw, states, _ = data
    diff = VLAPolicy.build("tiny", action_chunks=raw, states=states, head="diffusion", head_config=SMALL)
    both = VLAPolicy.build("tiny", action_chunks=raw, states=states, head="both",
                           head_config={"diffusion": SMALL, "token_weight": 1.0})
    return diff, both


def test_diffusion_head_trains_with_the_backbone(policies, data):
    pol, _ = policies
    raw, states, imgs = data
    P = pol.processor
    assert P.config.action_format == "continuous" and pol.action_head.name == "diffusion"
    b = P.collate([P.build_action_example(imgs[i], states[i], "put the red block in the bowl", raw[i])
                   for i in range(3)])
    pol.train()
    torch.manual_seed(0)
    out = pol(b)
    assert set(out) >= {"loss", "action_loss"} and torch.isfinite(out["loss"])
    out["loss"].backward()
    head = pol.action_head
    assert float(head.denoiser.outp.weight.grad.abs().sum()) > 0
    # FiLM layers start at zero (the condition has no effect at init); after one head update the gradient
    # reaches the pooler and the backbone: the backbone is trained through the head
    saved = {k: v.clone() for k, v in head.state_dict().items()}
    torch.optim.SGD(head.parameters(), lr=0.1).step()
    pol.zero_grad(set_to_none=True)
    pol(b)["loss"].backward()
    assert float(head.pooler.queries.grad.abs().sum()) > 0
    emb = pol.backbone.get_input_embeddings().weight
    assert emb.grad is not None and float(emb.grad.abs().sum()) > 0
    head.load_state_dict(saved)
    pol.zero_grad(set_to_none=True)
    pol.eval()
    with pytest.raises(ModelError, match="actions"):
        head.loss(pol.run_backbone(pol.to_torch(b)), {"attention_mask": b["attention_mask"]})


def test_predict_is_reproducible_and_survives_save_load(policies, data, tmp_path):
    from etc_training.models.vla import VLAPolicy

    pol, _ = policies
    raw, states, imgs = data
    pol.action_head.reset_noise()
    a = pol.predict_chunk(imgs[0], states[0], "push the blue cube")
    assert a.shape == (10, 7) and np.all(np.isfinite(a))
    action_norm = pol.processor.norm_stats["action"]
    lo, hi = action_norm.unnormalize(-np.ones(7)), action_norm.unnormalize(np.ones(7))
    assert np.all(a >= lo - 1e-6) and np.all(a <= hi + 1e-6)  # clipped to the normalized range
    d = pol.save(tmp_path / "ckpt")
    back = VLAPolicy.load(d)
    assert isinstance(back.action_head, DiffusionActionHead)
    assert back.action_head.config_dict() == pol.action_head.config_dict()
    back.action_head.reset_noise()
    assert np.allclose(back.predict_chunk(imgs[0], states[0], "push the blue cube"), a, atol=1e-6)
    chunks, valid = back.predict_chunks([{"images": imgs[i], "state": states[i], "instruction": "go"}
                                         for i in range(3)])
    assert chunks.shape == (3, 10, 7) and valid.all()


def test_both_head_conditions_on_the_prefix_only(policies, data):
    _, pol = policies
    raw, states, imgs = data
    P = pol.processor
    assert P.config.action_format == "tokens" and isinstance(pol.action_head, HybridActionHead)
    ex = P.build_action_example(imgs[0], states[0], "pick up the cube", raw[0])
    pr = P.build_inference_prompt(imgs[0], states[0], "pick up the cube")
    head = diffusion_part(pol.action_head)
    with torch.no_grad():
        tb = pol.to_torch(P.collate([ex]))
        c_train = head.condition_from(pol.run_backbone(tb), tb)
        ib = pol.to_torch(P.collate([pr], padding_side="left"))
        c_inf = head.condition_from(pol.run_backbone(ib), ib)
    # the action tokens of the training target never leak into the condition
    assert torch.allclose(c_train, c_inf, atol=1e-4)
    from etc_training.models.heads.base import lm_loss

    b2 = P.collate([ex, P.build_action_example(imgs[1], states[1], "go", raw[1])])
    with torch.no_grad():
        out = pol(b2)
        t2 = pol.to_torch(b2)
        tok, _, _ = lm_loss(pol.run_backbone(t2), t2["labels"])
    assert "action_accuracy" in out
    assert float(out["loss"]) > float(tok) + 1e-4  # tokens + diffusion: both losses are in the sum
    chunk = pol.predict_chunk(imgs[0], states[0], "pick up the cube")
    assert chunk.shape == (10, 7)


def test_bad_head_configs(data):
    with pytest.raises(ModelError, match="sampler"):
        DiffusionActionHead(None, 16, sampler="euler")
    with pytest.raises(ModelError, match="num_inference_steps"):
        DiffusionActionHead(None, 16, num_inference_steps=0)
    with pytest.raises(ModelError, match="noise_repeats"):
        DiffusionActionHead(None, 16, noise_repeats=0)
    with pytest.raises(ModelError, match="predict_with"):
        HybridActionHead(None, 16, predict_with="both")
    from etc_training.models.heads.token import TokenActionHead

    with pytest.raises(ModelError, match="not a diffusion head"):
        diffusion_part(TokenActionHead.__new__(TokenActionHead))
    from etc_training.models.heads.factory import make_action_head

    with pytest.raises(ModelError, match="bad config"):
        make_action_head("diffusion", None, 16, {"nope": 1})


def test_recipe_selects_the_head_kind():
    from etc_training.recipe.config import load_train_config

    for kind in ("tokens", "diffusion", "both"):
        cfg = load_train_config(None, [f"model.head={kind}", "model.head_config={num_inference_steps: 10}"])
        assert cfg.model.head == kind
