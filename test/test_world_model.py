import math

import pytest
import torch
from tensordict import TensorDict

from torchrl_mbdpo.modules import MBDPOWorldModel, WorldModelConfig, resolve_model_size
from torchrl_mbdpo.modules.functional import (
    gaussian_tanh_policy,
    make_bins,
    soft_ce,
    squash_log_std,
    symexp,
    symlog,
    timestep_embedding,
    two_hot,
    two_hot_inv,
)
from torchrl_mbdpo.modules.layers import SimNorm

# Parameter counts (millions) of the official model for mt80 (obs 39, A 6, T 96, 80 tasks): TD-MPC2's modules,
# + the energy net F (the paper's size labels, arXiv 2605.26282), + the score network.
PARAM_TABLE = {
    1: (1.44, 1.67, 1.95),
    5: (5.39, 5.97, 6.60),
    19: (18.97, 20.92, 22.96),
    48: (48.79, 53.57, 58.52),
    317: (317.4, 340.2, 363.5),
}


def _count(*modules):
    return sum(p.numel() for m in modules for p in m.parameters()) / 1e6


@pytest.mark.parametrize("size", sorted(PARAM_TABLE))
def test_parameter_counts_match_spec_table(size):
    with torch.device("meta"):  # shapes only: the 340M model costs no memory or init time
        wm = MBDPOWorldModel(WorldModelConfig.from_size(size, 39, 6, num_tasks=80, task_dim=96))
    core = _count(wm.encoder, wm.dynamics, wm.reward_head, wm.policy, wm.qs, wm.task_emb)
    tdmpc2, with_f, with_score = PARAM_TABLE[size]
    assert core == pytest.approx(tdmpc2, abs=0.01 * tdmpc2)
    assert core + _count(wm.energy) == pytest.approx(with_f, abs=0.01 * with_f)
    assert core + _count(wm.energy, wm.score_net) == pytest.approx(with_score, abs=0.01 * with_score)


def test_paper_size_labels_are_aliases_and_bad_sizes_fail_clearly():
    assert [resolve_model_size(x) for x in (1.7, 6, 21, 54, 340, "5", 19)] == [1, 5, 19, 48, 317, 5, 19]
    with pytest.raises(ValueError, match=r"model_size=7 is not a known size.*\[1, 5, 19, 48, 317\]"):
        resolve_model_size(7)


def _tiny(**kw):
    return MBDPOWorldModel(WorldModelConfig.from_size(1, 5, 2, latent_dim=16, mlp_dim=16, enc_dim=16, **kw))


def test_simnorm_groups_sum_to_one_and_latents_are_simplicial():
    x = SimNorm(8)(torch.randn(3, 32))
    assert torch.allclose(x.view(3, 4, 8).sum(-1), torch.ones(3, 4))
    z = _tiny().encode_obs(torch.randn(4, 5))
    assert torch.allclose(z.view(4, -1, 8).sum(-1), torch.ones(4, 2))


def test_q_ensemble_is_vectorised_and_equals_each_member():
    wm = _tiny(num_q=3).eval()
    z, a = torch.randn(4, 16), torch.rand(4, 2)
    all_heads = wm.q_logits(z, a)
    assert all_heads.shape == (3, 4, 101)
    for i in range(3):
        assert torch.allclose(wm.q_logits(z, a, heads=torch.tensor([i]))[0], all_heads[i], atol=1e-6)
    assert not torch.allclose(all_heads[0], all_heads[1])  # independent initialisation


def test_heads_start_uniform_and_q_init_options():
    wm = _tiny()
    z, a = torch.randn(4, 16), torch.rand(4, 2)
    assert torch.allclose(wm.reward(z, a), wm.reward(z, a)[:, :1].expand(-1, 101))  # zeroed last layer
    assert wm.qs.module.net.params["2", "weight"].abs().sum() == 0
    official = wm.qs.module.net.params["0", "0", "weight"].std().item()
    fixed = _tiny(q_init="trunc_normal").qs.module.net.params["0", "0", "weight"].std().item()
    assert official > 0.05 and fixed == pytest.approx(0.02, rel=0.2)  # kaiming-uniform vs trunc_normal(0.02)
    with pytest.raises(ValueError, match="q_init"):
        _tiny(q_init="xavier")


def test_tensordict_interface_follows_torchrl_world_model():
    wm = _tiny(episodic=True)
    td = wm(TensorDict(observation=torch.randn(4, 5), action=torch.rand(4, 2), batch_size=[4]))
    for key in ["latent", ("next", "latent"), "reward_logits", ("next", "termination_logit")]:
        assert key in td.keys(True)


def _tdmpc2_two_hot(x, num_bins=101, vmin=-10.0, vmax=10.0):
    """TD-MPC2's own implementation (common/math.py), the reference we must match."""
    bin_size = (vmax - vmin) / (num_bins - 1)
    x = torch.clamp(symlog(x), vmin, vmax).squeeze(1)
    bin_idx = torch.floor((x - vmin) / bin_size)
    bin_offset = ((x - vmin) / bin_size - bin_idx).unsqueeze(-1)
    soft = torch.zeros(x.shape[0], num_bins)
    bin_idx = bin_idx.long()
    soft = soft.scatter(1, bin_idx.unsqueeze(1), 1 - bin_offset)
    soft = soft.scatter(1, (bin_idx.unsqueeze(1) + 1) % num_bins, bin_offset)
    return soft


def test_two_hot_matches_tdmpc2_and_round_trips():
    bins = make_bins()
    x = torch.tensor([[-500.0], [-3.2], [0.0], [0.37], [12.0], [1e5]])
    assert torch.allclose(two_hot(x, bins), _tdmpc2_two_hot(x), atol=1e-5)
    inside = x[1:5]
    logits = torch.log(two_hot(inside, bins) + 1e-12)
    assert torch.allclose(two_hot_inv(logits, bins), inside, rtol=1e-3, atol=1e-4)
    assert torch.allclose(symexp(symlog(x)), x, rtol=1e-5)
    ce = soft_ce(torch.zeros(6, 101), x, bins)
    assert ce.shape == (6, 1) and torch.allclose(ce, torch.full((6, 1), math.log(101)), atol=1e-5)


def test_policy_log_std_spans_its_bounds():
    raw = torch.tensor([-30.0, 0.0, 30.0])
    torch.testing.assert_close(squash_log_std(raw, -10, 2), torch.tensor([-10.0, -4.0, 2.0]))  # min, midpoint, max


def test_gaussian_tanh_policy_is_a_tanh_squashed_gaussian():
    """Against ``torch.distributions``: the action is ``tanh`` of a ``N(mu, e^-4)`` sample (raw log-std 0 is the
    midpoint of [-10, 2]); ``log_prob`` is the tanh-squashed density (up to TD-MPC2's 1e-6 inside the log);
    the scaled entropy is the pre-tanh Gaussian log-density times minus the number of action dims."""
    g = torch.Generator().manual_seed(0)
    mu, eps = 0.5 * torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    out = gaussian_tanh_policy(mu, torch.zeros(5, 3), eps, -10, 2)
    std = math.exp(-4.0)
    u = mu + eps * std
    gaussian = torch.distributions.Normal(mu, std)
    squashed = torch.distributions.TransformedDistribution(gaussian, [torch.distributions.TanhTransform()])
    torch.testing.assert_close(out.action, torch.tanh(u))
    torch.testing.assert_close(out.mean, torch.tanh(mu))
    torch.testing.assert_close(out.log_prob, squashed.log_prob(out.action).sum(-1, keepdim=True), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(out.scaled_entropy, -3 * gaussian.log_prob(u).sum(-1, keepdim=True), atol=1e-3, rtol=1e-4)

    # Multi-task mask [1, 1, 0]: the padded dim acts 0 and counts as a standard normal at its mean (TD-MPC2's
    # behaviour); the scale is the number of active dims, 2.
    masked = gaussian_tanh_policy(mu, torch.zeros(5, 3), eps, -10, 2, mask=torch.tensor([1.0, 1.0, 0.0]))
    assert (masked.action[:, 2] == 0).all()
    torch.testing.assert_close(masked.action[:, :2], out.action[:, :2])
    padded = torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor(0.0))
    active = gaussian.log_prob(u)[:, :2].sum(-1, keepdim=True)
    torch.testing.assert_close(masked.scaled_entropy, -2 * (active + padded), atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(masked.log_prob, squashed.log_prob(out.action)[:, :2].sum(-1, keepdim=True) + padded, atol=1e-3, rtol=1e-4)


def test_time_embedding():
    emb = timestep_embedding(torch.tensor(3), 64)
    assert emb.shape == (64,) and emb[0] == pytest.approx(math.sin(3.0)) and emb[32] == pytest.approx(math.cos(3.0))
    # The slowest frequency is 1/10000: the last sine is sin(3e-4).
    assert emb[31] == pytest.approx(math.sin(3e-4), rel=1e-4)


def test_multitask_modules_read_the_task_embedding():
    wm = MBDPOWorldModel(
        WorldModelConfig.from_size(1, 5, 3, latent_dim=16, mlp_dim=16, enc_dim=16, num_tasks=2, task_dim=4, action_dims=[3, 2])
    )
    obs = torch.randn(2, 5)
    z0 = wm.encode_obs(obs, torch.tensor([0, 0]))
    z1 = wm.encode_obs(obs, torch.tensor([1, 1]))
    assert not torch.allclose(z0, z1)
    assert (wm.pi(z0, torch.tensor([1, 1])).action[:, 2] == 0).all()  # action mask of task 1
    with pytest.raises(ValueError, match="multi-task"):
        wm.encode_obs(obs)
    # time-first inputs with a (B, 1) task: each column gets its own task
    zs = torch.stack([z0, z0, z0])
    out = wm.next(zs, torch.zeros(3, 2, 3), torch.tensor([[0], [1]]))
    assert torch.allclose(out[:, 0], wm.next(z0[:1], torch.zeros(1, 3), torch.tensor([0])).expand(3, -1), atol=1e-6)
