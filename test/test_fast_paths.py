"""The fast formulations compute what the reference ones (``reference_kernels()``) compute."""

import pytest
import torch
import torch.nn.functional as F
from tensordict import TensorDict

from torchrl_mbdpo.modules import DiffusionActor, MBDPOWorldModel, PlannerConfig, WorldModelConfig
from torchrl_mbdpo.modules.layers import Mish, SimNorm, TaskConditioned, mlp, reference_kernels
from torchrl_mbdpo.modules.planning import world_model_value
from torchrl_mbdpo.objectives import MBDPOLoss
from torchrl_mbdpo.trainers.optimization import make_optimizers, update


def test_mish_matches_torch():
    x = torch.linspace(-30, 30, 2 * Mish.FAST_MIN_NUMEL + 1)
    with torch.no_grad():
        fast = Mish()(x)
        with reference_kernels():
            ref = Mish()(x)
        small = x[: Mish.FAST_MIN_NUMEL - 1]  # below the threshold: F.mish itself
        assert torch.equal(Mish()(small), F.mish(small))
    assert not torch.equal(fast, ref)  # the composite formulation really ran
    torch.testing.assert_close(fast, F.mish(x), atol=2e-6, rtol=1e-5)
    assert torch.equal(ref, F.mish(x))
    assert torch.isfinite(fast).all()
    w = torch.randn(3, 5, requires_grad=True)  # with autograd: F.mish and its gradient
    Mish()(w).sum().backward()
    torch.testing.assert_close(w.grad, torch.autograd.grad(F.mish(w).sum(), w)[0])


@pytest.mark.parametrize("shape", [(4, 5, 64), (2, 64)])  # above and below SimNorm.FAST_MIN_NUMEL
def test_simnorm_matches_groupwise_softmax(shape):
    x = torch.randn(*shape, requires_grad=True)
    fast = SimNorm(8)(x)
    with reference_kernels():
        ref = SimNorm(8)(x)
    torch.testing.assert_close(fast, torch.softmax(x.view(*shape[:-1], 8, 8), -1).view(shape))
    torch.testing.assert_close(fast, ref)
    g = torch.randn_like(fast)
    (grad_fast,) = torch.autograd.grad(fast, x, g)
    (grad_ref,) = torch.autograd.grad(ref, x, g)
    torch.testing.assert_close(grad_fast, grad_ref)


@pytest.mark.parametrize("multitask", [False, True])
def test_shared_latent_first_layer_equals_expanded_input(multitask):
    torch.manual_seed(0)
    emb = torch.nn.Embedding(4, 3) if multitask else None
    head = TaskConditioned(mlp(16 + 2 + (3 if multitask else 0), [32, 32], 5), emb)
    z, a = torch.randn(6, 16), torch.randn(6, 10, 2)
    task = [torch.randint(0, 4, (6,))] if multitask else []
    fast = head(z, a, *task)
    expanded = head(z.unsqueeze(1).expand(6, 10, 16), a, *[t.unsqueeze(1).expand(6, 10) for t in task])
    with reference_kernels():
        ref = head(z, a, *task)
    assert fast.shape == (6, 10, 5)
    torch.testing.assert_close(fast, expanded, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ref, expanded)


def _perturbed_world_model(size=1, obs_dim=5, action_dim=2, **kw):
    """A world model whose heads are not zero-initialised, so returns differ between candidates."""
    torch.manual_seed(0)
    cfg = WorldModelConfig.from_size(size, obs_dim, action_dim, latent_dim=64, mlp_dim=64, enc_dim=64, **kw)
    wm = MBDPOWorldModel(cfg)
    with torch.no_grad():
        for p in wm.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return wm.eval()


@pytest.mark.parametrize("multitask", [False, True])
def test_planner_value_and_plan_equal_reference(multitask):
    kw = dict(num_tasks=3, task_dim=4, action_dims=[2, 1, 2], episodic=True) if multitask else {}
    wm = _perturbed_world_model(**kw)
    z0 = wm.encode_obs(torch.randn(3, 5), torch.arange(3) if multitask else None).detach()
    candidates = torch.rand(3, 16, 3, 2) * 2 - 1
    task = torch.arange(3) if multitask else None
    with torch.no_grad():
        torch.manual_seed(1)
        fast = world_model_value(wm, z0, candidates, task, 0.99, 0.01, wm.energy_norm)
        torch.manual_seed(1)
        with reference_kernels():
            ref = world_model_value(wm, z0, candidates, task, 0.99, 0.01, wm.energy_norm)
    assert fast.shape == (3, 16, 1)
    torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)

    actor = DiffusionActor(wm, PlannerConfig(steps=6, num_samples=64, num_elites=8, num_pi_trajs=4))
    obs, prev, init = torch.randn(3, 5), torch.zeros(3, 3, 2), torch.ones(3, dtype=torch.bool)
    torch.manual_seed(2)
    fast_action, fast_plan = actor.plan(obs, prev, init, task)
    torch.manual_seed(2)
    with reference_kernels():
        ref_action, ref_plan = actor.plan(obs, prev, init, task)
    torch.testing.assert_close(fast_plan, ref_plan, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast_action, ref_action, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("multitask", [False, True])
def test_score_fn_with_precomputed_first_layer_equals_score(multitask):
    kw = dict(num_tasks=3, task_dim=4, action_dims=[2, 1, 2]) if multitask else {}
    wm = _perturbed_world_model(**kw)
    task = torch.tensor([0, 2, 1, 2]) if multitask else None
    with torch.no_grad():
        z = wm.encode_obs(torch.randn(4, 5), task)
        x = torch.randn(4, 3, 2)
        score_fn = wm.score_fn(z, 6, task)
        for tau in (5, 1):
            expected = wm.score(z, x, torch.full((), tau), task)
            torch.testing.assert_close(score_fn(x, tau), expected, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(score_fn(x, 5), score_fn(x, 1))  # the step enters the result

    obs, prev, init = torch.randn(4, 5), torch.randn(4, 3, 2).clamp(-1, 1), torch.zeros(4, dtype=torch.bool)
    for steps in (6, 1):  # steps=1: the schedule still has two entries (one reverse step at tau=1)
        actor = DiffusionActor(wm, PlannerConfig(steps=steps, score_source="network"))
        _, fast_plan = actor.plan(obs, prev, init, task, explore=False)
        with reference_kernels():
            _, ref_plan = actor.plan(obs, prev, init, task, explore=False)
        torch.testing.assert_close(fast_plan, ref_plan, atol=1e-5, rtol=1e-5)


def _one_update(wm, batch, reference: bool, precision="fp32"):
    loss = MBDPOLoss(wm, use_score_network=True)
    model_optim, pi_optim = make_optimizers(loss)
    torch.manual_seed(3)
    with reference_kernels(reference):
        info = update(loss, batch, model_optim, pi_optim, precision=precision)
    return info, loss


def test_update_equals_reference():
    B, H, obs_dim, action_dim = 16, 3, 5, 2
    torch.manual_seed(0)
    batch = TensorDict(
        {
            "observation": torch.randn(B, H, obs_dim),
            "action": torch.rand(B, H, action_dim) * 2 - 1,
            ("next", "observation"): torch.randn(B, H, obs_dim),
            ("next", "reward"): torch.rand(B, H, 1),
            ("next", "terminated"): torch.zeros(B, H, 1, dtype=torch.bool),
        },
        batch_size=[B, H],
    )
    fast, fast_loss = _one_update(_perturbed_world_model(), batch, reference=False)
    ref, ref_loss = _one_update(_perturbed_world_model(), batch, reference=True)
    for key in ref.keys():
        torch.testing.assert_close(fast[key], ref[key], atol=1e-4, rtol=1e-4, msg=lambda m: f"{key}: {m}")
    for (name, p_fast), p_ref in zip(fast_loss.world_model.named_parameters(), ref_loss.world_model.parameters()):
        torch.testing.assert_close(p_fast, p_ref, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    # bf16 autocast: the same losses to bf16 accuracy, finite gradients, float32 weights.
    bf16, bf16_loss = _one_update(_perturbed_world_model(), batch, reference=False, precision="bf16")
    assert all(p.dtype == torch.float32 for p in bf16_loss.world_model.parameters())
    for key in ("loss_consistency", "loss_reward", "loss_value", "loss_actor"):
        torch.testing.assert_close(bf16[key], ref[key], atol=0.05, rtol=0.05, msg=lambda m: f"{key}: {m}")
    assert torch.isfinite(bf16["model_grad_norm"]) and bf16["nonfinite_skipped"] == 0


def test_bf16_planner_returns_float32_plans_close_to_fp32():
    wm = _perturbed_world_model()
    obs, prev, init = torch.randn(2, 5), torch.zeros(2, 3, 2), torch.ones(2, dtype=torch.bool)
    cfg = PlannerConfig(steps=6, num_samples=64, num_elites=8, num_pi_trajs=4)
    torch.manual_seed(2)
    _, plan32 = DiffusionActor(wm, cfg).plan(obs, prev, init)
    torch.manual_seed(2)
    _, plan16 = DiffusionActor(wm, cfg, precision="bf16").plan(obs, prev, init)
    assert plan16.dtype == torch.float32
    assert (plan16 - plan32).abs().max() < 0.25
    with pytest.raises(ValueError, match="precision must be one of"):
        DiffusionActor(wm, cfg, precision="fp16")
