import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, set_interaction_type
from torchrl.collectors import Collector
from torchrl.envs import Compose, InitTracker, SerialEnv, StepCounter, TransformedEnv
from torchrl.envs.utils import check_env_specs
from torchrl.testing.mocking_classes import ContinuousActionVecMockEnv

from analytic import PointMassModel
from torchrl_mbdpo import DiffusionActor
from torchrl_mbdpo.modules import MBDPOWorldModel, PlannerConfig, WorldModelConfig
from torchrl_mbdpo.modules.functional import elite_weighted_mean, warm_start_mean
from torchrl_mbdpo.modules.planning import mc_diffusion_sample

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
    assert elite_weighted_mean(values, cands, num_elites=1, temperature=0.5).item() == 3.0
    all_w = elite_weighted_mean(values, cands, num_elites=0, temperature=0.5).item()
    assert 2.0 < all_w < 3.0
    # equal returns: the std falls back to 1 instead of dividing by zero
    assert elite_weighted_mean(torch.zeros(1, 4), cands, 0, 0.5).item() == pytest.approx(1.5)


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


def test_score_network_only_path_does_not_roll_out_the_model():
    actor = _point_mass_actor([0.3, -0.4], score_source="network")
    model = actor.world_model
    td = TensorDict(observation=torch.zeros(5, 2), batch_size=[5])
    out = actor(td)
    assert out["action"].shape == (5, 2) and model.calls == 0


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
