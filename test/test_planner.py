"""The diffusion planner: its equations on hand-worked cases, the sampler on analytic models, the actor in
TorchRL pipelines."""

import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, set_interaction_type
from torchrl.collectors import Collector
from torchrl.envs import Compose, InitTracker, SerialEnv, StepCounter, TransformedEnv
from torchrl.envs.utils import check_env_specs
from torchrl.testing.mocking_classes import ContinuousActionVecMockEnv

from torchrl_mbdpo import DiffusionActor
from torchrl_mbdpo.modules import EnergyNormalizer, MBDPOWorldModel, PlannerConfig, WorldModelConfig
from torchrl_mbdpo.modules.functional import elite_weighted_mean, warm_start_mean
from torchrl_mbdpo.modules.planning import mc_diffusion_sample, world_model_value

from helpers import PointMassModel, ScriptedModel

PLAN = "_mbdpo_plan"  # DiffusionActor's private warm-start key

SMALL = dict(num_samples=256, num_elites=32, num_pi_trajs=0, steps=10)


def quadratic_value(target):
    return lambda c: -((c - target[:, None]) ** 2).sum((-1, -2))


def test_sampler_lands_on_optimum_and_beats_random():
    target = torch.tensor([[[0.5, -0.3], [0.2, 0.8], [-0.6, 0.1]]])
    x0 = mc_diffusion_sample(torch.zeros(1, 3, 2), quadratic_value(target), None, PlannerConfig(horizon=3, **SMALL))
    assert (x0 - target).abs().max() < 0.1
    random = torch.rand(1, 4096, 3, 2) * 2 - 1
    assert quadratic_value(target)(x0[:, None]).item() > quadratic_value(target)(random).max()


def test_sampler_is_batched_over_environments():
    targets = torch.stack([torch.full((3, 2), v) for v in (-0.7, 0.0, 0.4, 0.9)])
    x0 = mc_diffusion_sample(torch.zeros(4, 3, 2), quadratic_value(targets), None, PlannerConfig(horizon=3, **SMALL))
    assert x0.shape == (4, 3, 2)
    assert (x0 - targets).abs().max() < 0.1


def test_elite_weights_follow_values():
    values = torch.tensor([[0.0, 1.0, 2.0, 10.0]])
    cands = torch.arange(4.0).view(1, 4, 1, 1)
    # Worked by hand: mean 3.25, unbiased std sqrt(62.75 / 3) = 4.57347; logits (V - 3.25) / 4.57347 / 0.5 =
    # (-1.42119, -0.98390, -0.54661, 2.95172); softmax (0.011872, 0.018384, 0.028469, 0.941275); weighted
    # mean 2.899147. (A biased std gives 2.944, exp(0.5 (V - max V)) 2.941, a multiplied temperature 1.979.)
    assert elite_weighted_mean(values, cands, num_elites=0, temperature=0.5).item() == pytest.approx(2.899147, abs=1e-5)
    # Top-2 elites (values 10 and 2) keep the logits z-scored over all four: 2 + sigmoid(2.95172 + 0.54661).
    assert elite_weighted_mean(values, cands, num_elites=2, temperature=0.5).item() == pytest.approx(2.970643, abs=1e-5)
    assert elite_weighted_mean(values, cands, num_elites=1, temperature=0.5).item() == 3.0
    # equal returns: the std falls back to 1 instead of dividing by zero, and every weight is 1/4
    assert elite_weighted_mean(torch.zeros(1, 4), cands, 0, 0.5).item() == pytest.approx(1.5)


def test_return_shaping_termination_cutoff_and_discount_against_hand_worked_values():
    """``world_model_value`` on :class:`helpers.ScriptedModel` (``z' = z + a``, ``r = 2z + a``, ``F = z - a``,
    termination once ``z' > 1.5``, policy ``a = 0.5``, ``Q = z + a + 10``), energy statistics mean 0.5 and std
    0.25 (clip 5), eta 0.1, from ``z_0 = 0``.

    Candidate ``(1, 1, 1)``: latents 0, 1, 2, 3; ``r + eta f`` = 1 + 0.1 clip(-6) = 0.5, 3 + 0.1 (-2) = 2.8,
    5 + 0.1 (2) = 5.2, and ``Q(3, 0.5) = 13.5``. Episodic, ``z_2 = 2`` terminates after the second reward:
    ``G = 0.5 + 0.9 * 2.8 = 3.02``; otherwise ``0.5 + 0.9 * 2.8 + 0.81 * 5.2 + 0.729 * 13.5 = 17.0735``.
    Candidate ``(-1, 0, 0.5)``: latents 0, -1, -1, -0.5 (never terminates); ``-1 + 0.1 (2) = -0.8``,
    ``-2 + 0.1 clip(-6) = -2.5``, ``-1.5 + 0.1 clip(-8) = -2.0``, ``Q = 10``: ``G = 2.62``.
    The second env has gamma 0.5: 1.9 / 4.8875 and ``-0.8 - 1.25 - 0.5 + 1.25 = -1.3``.
    """
    actions = torch.tensor([[1.0, 1.0, 1.0], [-1.0, 0.0, 0.5]]).view(1, 2, 3, 1).expand(2, 2, 3, 1)
    z0 = torch.zeros(2, 1)
    discount = torch.tensor([0.9, 0.5]).view(2, 1, 1)
    norm = EnergyNormalizer(clip=5.0)
    norm.mean.fill_(0.5)
    norm.std.fill_(0.25)
    episodic = world_model_value(ScriptedModel(episodic=True), z0, actions, None, discount, 0.1, norm).squeeze(-1)
    torch.testing.assert_close(episodic, torch.tensor([[3.02, 2.62], [1.9, -1.3]]))
    ongoing = world_model_value(ScriptedModel(episodic=False), z0, actions, None, discount, 0.1, norm).squeeze(-1)
    torch.testing.assert_close(ongoing, torch.tensor([[17.0735, 2.62], [4.8875, -1.3]]))
    # Without the energy term (TD-MPC2's return): 1 + 0.9 * 3 + 0.81 * 5 + 0.729 * 13.5 = 17.5915 and
    # -1 + 0.9 * -2 + 0.81 * -1.5 + 0.729 * 10 = 3.275.
    plain = world_model_value(ScriptedModel(episodic=False), z0[:1], actions[:1], None, 0.9, 0.0, None).squeeze(-1)
    torch.testing.assert_close(plain, torch.tensor([[17.5915, 3.275]]))


def _abar(steps: int, beta0: float = 1e-4, betaT: float = 1e-2) -> list[float]:
    """The linear-beta schedule's cumulative products, by hand."""
    betas = [beta0 + k * (betaT - beta0) / (steps - 1) for k in range(steps)]
    return [math.prod(1 - b for b in betas[: k + 1]) for k in range(steps)]


def test_warm_start_shifts_and_resets():
    prev = torch.arange(12.0).view(2, 3, 2)
    mean = warm_start_mean(prev, torch.tensor([False, True]))
    assert torch.equal(mean[0], torch.tensor([[2.0, 3.0], [4.0, 5.0], [0.0, 0.0]]))
    assert torch.equal(mean[1], torch.zeros(3, 2))


def _point_mass_actor(goal, **planner):
    cfg = PlannerConfig(horizon=3, **{**SMALL, "num_pi_trajs": 8, **planner})
    return DiffusionActor(PointMassModel(goal), cfg, discount=0.99)


def test_actor_finds_best_first_action_for_each_env():
    actor = _point_mass_actor([0.3, -0.4])
    obs = torch.tensor([[0.0, 0.0], [0.5, -0.5], [-0.2, 0.3]])
    td = TensorDict({"observation": obs, "is_init": torch.ones(3, 1, dtype=torch.bool), PLAN: torch.zeros(3, 3, 2)}, batch_size=[3])
    with set_interaction_type(InteractionType.DETERMINISTIC):
        out = actor(td)
    best = torch.tensor([0.3, -0.4]) - obs
    assert (out["action"] - best).abs().max() < 0.1
    assert out["next", PLAN][:, 1:].abs().max() < 0.15  # then stay on the goal


def test_exploration_noise_only_in_random_mode():
    actor = _point_mass_actor([0.3, -0.4], action_noise=0.5)
    td = TensorDict(observation=torch.zeros(64, 2), batch_size=[64])
    with set_interaction_type(InteractionType.DETERMINISTIC):
        det = actor(td.clone())
    with set_interaction_type(InteractionType.RANDOM):
        rnd = actor(td.clone())
    assert (det["action"] - det["next", PLAN][:, 0]).abs().max() == 0
    assert (rnd["action"] - rnd["next", PLAN][:, 0]).abs().mean() > 0.1


def test_warm_start_is_used_unless_episode_starts():
    # One denoising step (proposal std 0.1): the plan moves only a little from its initial mean.
    actor = _point_mass_actor([0.0, 0.0], steps=2, num_pi_trajs=0)
    prev = torch.full((1, 3, 2), 0.8)
    make = lambda init: TensorDict({"observation": torch.zeros(1, 2), PLAN: prev, "is_init": torch.tensor([[init]])}, batch_size=[1])
    with set_interaction_type(InteractionType.DETERMINISTIC):
        warm = actor(make(False))["next", PLAN]
        cold = actor(make(True))["next", PLAN]
    assert (warm[0, :2] - 0.8).abs().max() < 0.15 and warm[0, 2].abs().max() < 0.15
    assert cold.abs().max() < 0.15


def test_plan_is_carried_in_tensordict_through_collector_and_reset():
    wm = MBDPOWorldModel(WorldModelConfig.from_size(1, 7, 7, latent_dim=16, mlp_dim=16, enc_dim=16, num_q=2))
    actor = DiffusionActor(wm, PlannerConfig(num_samples=16, num_elites=4, num_pi_trajs=2, steps=3))

    def make_env():
        return TransformedEnv(ContinuousActionVecMockEnv(), Compose(InitTracker(), StepCounter(4), actor.make_tensordict_primer()))

    env = SerialEnv(2, make_env)
    check_env_specs(env)
    collector = Collector(env, actor, frames_per_batch=24, total_frames=24)
    # The warm start is private: carried between steps, never in the collector's output (nor in a buffer).
    assert PLAN not in next(iter(collector)).keys(True, is_leaf=lambda *_: True)
    collector.shutdown()
    collector = Collector(env, actor, frames_per_batch=24, total_frames=24)
    collector._exclude_private_keys = False  # to look at it here
    data = next(iter(collector))
    collector.shutdown()
    data = data.reshape(2, -1)
    init = data["is_init"].squeeze(-1)
    assert init[:, 0].all() and init.sum() == 6  # episodes of 4 steps in 12-step trajectories
    assert (data[PLAN][init] == 0).all()  # reset at each episode start
    carried = data[PLAN][:, 1:][~init[:, 1:]]
    assert torch.equal(carried, data["next", PLAN][:, :-1][~init[:, 1:]])  # warm start carried forward
    assert data["action"].abs().max() <= 1


def test_score_network_path_follows_the_network_and_not_the_model():
    """With the exact score of a point target ``a*``, ``s(x, tau) = (-x + sqrt(abar_tau) a*) / (1 - abar_tau)``,
    each reverse step maps ``x_tau`` to ``sqrt(abar_{tau-1}) a*``: the plan is ``sqrt(abar_0) a* = sqrt(1 - 1e-4) a*``,
    whatever the world model would prefer (its goal is elsewhere, and it is never rolled out)."""
    target = torch.tensor([[0.5, -0.3], [0.2, 0.8], [-0.6, 0.1]])
    abar = _abar(5)

    def exact_score(x, tau):
        return (-x + math.sqrt(abar[tau]) * target) / (1 - abar[tau])

    actor = _point_mass_actor([0.3, -0.4], score_source="network", steps=5)
    model = actor.world_model
    model._score = exact_score
    td = TensorDict(observation=torch.zeros(4, 2), batch_size=[4])
    with set_interaction_type(InteractionType.DETERMINISTIC):
        out = actor(td)
    torch.testing.assert_close(out["next", PLAN], (math.sqrt(1 - 1e-4) * target).expand(4, 3, 2), atol=1e-5, rtol=0)
    torch.testing.assert_close(out["action"], math.sqrt(1 - 1e-4) * target[0].expand(4, 2), atol=1e-5, rtol=0)
    assert model.score_taus == [4, 3, 2, 1] and model.calls == 0


def test_real_world_model_default_shapes_with_batch_dims():
    wm = MBDPOWorldModel(WorldModelConfig.from_size(1, 5, 2, latent_dim=16, mlp_dim=16, enc_dim=16, num_q=2))
    actor = DiffusionActor(wm, PlannerConfig(num_samples=16, num_elites=4, num_pi_trajs=2, steps=3))
    td = TensorDict(observation=torch.randn(2, 3, 5), batch_size=[2, 3])
    out = actor(td)
    assert out["action"].shape == (2, 3, 2) and out["next", PLAN].shape == (2, 3, 3, 2)
    assert torch.isfinite(out["action"]).all() and out["action"].abs().max() <= 1


def test_large_env_batches_are_planned_in_groups_and_each_env_gets_its_own_plan():
    obs = torch.tensor([[-0.5, 0.2], [0.0, 0.0], [0.3, -0.6], [0.6, 0.1], [0.9, 0.5]])
    best = torch.tensor([0.3, -0.4]) - obs
    for rows in (32, None):  # groups of one env (32 rows / 32 samples), then all five at once
        actor = _point_mass_actor([0.3, -0.4], num_samples=32, num_elites=4)
        actor.max_batch_rows = rows
        action, plan = actor.plan(obs, torch.zeros(5, 3, 2), torch.ones(5, dtype=torch.bool), explore=False)
        assert action.shape == (5, 2) and plan.shape == (5, 3, 2)
        assert (action - best).abs().max() < 0.15
