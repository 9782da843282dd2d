"""Tests for torchrl_mbdpo.envs: the env interface MBDPO relies on, TD-MPC2 task parity and input errors."""

import argparse
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import gymnasium
import numpy as np
import pytest
import torch
from dm_control import suite
from torchrl.data import Bounded
from torchrl.envs import GymEnv
from torchrl.envs.utils import check_env_specs, step_mdp

from torchrl_mbdpo.data.tdmpc2_dataset import DatasetInfo
from torchrl_mbdpo.envs import TaskSpec, available_tasks, make_env, spec_of, task_spec

CUSTOM_TASKS = [
    "walker-walk-backwards",
    "walker-run-backwards",
    "cheetah-run-backwards",
    "cheetah-run-front",
    "cheetah-run-back",
    "cheetah-jump",
    "hopper-hop-backwards",
    "reacher-three-easy",
    "reacher-three-hard",
    "cup-spin",
    "pendulum-spin",
]


class UnboundedActionEnv(gymnasium.Env):
    """A continuous env whose action space has no finite bounds."""

    observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(3, np.float32), {}

    def step(self, action):
        return np.zeros(3, np.float32), 0.0, False, False, {}


def _raw_dmc(domain, task, seed):
    """The same task straight from dm_control (custom tasks are registered by importing torchrl_mbdpo.envs)."""
    return suite.load(domain, task, task_kwargs={"random": seed})


def _assert_mbdpo_interface(env):
    action_spec = env.action_spec
    assert isinstance(action_spec, Bounded) and action_spec.dtype == torch.float32
    assert (action_spec.space.low == -1).all() and (action_spec.space.high == 1).all()
    obs_spec = env.observation_spec["observation"]
    assert obs_spec.dtype == torch.float32 and len(obs_spec.shape) == len(env.batch_size) + 1
    assert env.full_reward_spec["reward"].shape == (*env.batch_size, 1)
    assert env.full_reward_spec["reward"].dtype == torch.float32
    assert {"done", "terminated", "truncated"} <= set(env.full_done_spec.keys())
    assert {"step_count", "is_init", "episode_reward"} <= set(env.observation_spec.keys())


@pytest.mark.parametrize(
    "task", ["cheetah-run", "cartpole-swingup", "walker-walk", "dog-run", "humanoid-walk", "gym:Pendulum-v1", *CUSTOM_TASKS]
)
def test_env_specs(task):
    env = make_env(task, seed=0)
    check_env_specs(env)
    _assert_mbdpo_interface(env)
    assert env.task_spec == task_spec(task)
    rewards = env.rollout(10)["next", "reward"]
    if not task.startswith("gym:"):  # dm_control rewards lie in [0, 1] per physics step
        assert ((rewards >= 0) & (rewards <= env.task_spec.action_repeat)).all()


def test_batched_env_specs():
    env = make_env("cartpole-swingup", seed=0, num_envs=2)
    check_env_specs(env)
    _assert_mbdpo_interface(env)
    assert env.batch_size == (2,)
    obs = env.reset()["observation"]
    assert not torch.allclose(obs[0], obs[1]), "sub-envs must get different seeds (seed + i)"


def test_user_envs():
    """EnvBase instances and zero-arg factories get the same interface; the TimeLimit sets the episode length."""
    for task in (GymEnv("Pendulum-v1"), lambda: gymnasium.make("Pendulum-v1")):
        env = make_env(task)
        check_env_specs(env)
        _assert_mbdpo_interface(env)
        assert env.task_spec == TaskSpec("gym:Pendulum-v1", 200, 1, episodic=True) == spec_of(env)


def test_action_rescaled_to_env_bounds():
    """quadruped's actuators go up to 1.1: the policy's [-1, 1] must map onto the full range."""
    env = make_env("quadruped-walk")
    physics = env.base_env._env.physics
    high = physics.model.actuator_ctrlrange[:, 1]
    assert (high > 1).any()
    td = env.reset()
    env.step(td.set("action", torch.ones(env.action_spec.shape)))
    np.testing.assert_allclose(physics.data.ctrl, high, rtol=1e-6)


def test_full_episode_truncates_at_episode_length():
    env = make_env("cartpole-swingup", seed=0)
    torch.manual_seed(0)
    rollout = env.rollout(1000, break_when_any_done=True)
    assert rollout.shape == (500,)
    truncated, terminated = rollout["next", "truncated"].squeeze(-1), rollout["next", "terminated"].squeeze(-1)
    assert truncated[-1] and not truncated[:-1].any()
    assert not terminated.any()
    assert rollout["next", "step_count"][-1].item() == 500


def test_reward_is_summed_over_action_repeat():
    seed = 3
    env = make_env("cheetah-run", seed=seed)
    raw = _raw_dmc("cheetah", "run", seed)
    raw.reset()  # make_env's set_seed has already played the seed's first episode reset
    time_step = raw.reset()
    td = env.reset()
    np.testing.assert_allclose(td["observation"], np.concatenate(list(time_step.observation.values())), rtol=1e-6)
    torch.manual_seed(0)
    for _ in range(5):
        action = env.action_spec.rand()
        td = env.step(td.set("action", action))
        raw_reward = 0.0
        for _ in range(2):
            time_step = raw.step(action.double().numpy())
            raw_reward += time_step.reward
        assert td["next", "reward"].item() == pytest.approx(raw_reward, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(td["next", "observation"], np.concatenate(list(time_step.observation.values())), rtol=1e-5, atol=1e-6)
        td = step_mdp(td)


def test_seeding():
    def rollout(seed):
        torch.manual_seed(0)
        return make_env("cheetah-run", seed=seed).rollout(20)

    first, again, other = rollout(1), rollout(1), rollout(2)
    assert (first == again).all()
    assert not torch.allclose(first["observation"][0], other["observation"][0])


def test_task_names():
    tasks = available_tasks()
    assert set(CUSTOM_TASKS) <= set(tasks)
    for name in [
        "cup-catch",
        "cartpole-swingup-sparse",
        "finger-turn-hard",
        "humanoid-walk",
        "dog-run",
        "point_mass-easy",
        "acrobot-swingup",
        "fish-swim",
        "quadruped-walk",
    ]:
        assert name in tasks
    assert task_spec("ball_in_cup-catch").name == "cup-catch"
    assert task_spec("walker_run_backwards").name == "walker-run-backwards"
    spec = task_spec("cheetah-run")
    assert (spec.episode_length, spec.action_repeat, spec.episodic, spec.discount) == (500, 2, False, 0.99)
    assert TaskSpec("x", 50, 1).discount == 0.95 and TaskSpec("x", 10_000, 1).discount == 0.995


@pytest.mark.parametrize(
    "episode_length, expected",
    [
        (500, 0.99),  # L/5 = 100: 99/100 (DMControl)
        (100, 0.95),  # 20: 19/20 (Meta-World, ManiSkill, MyoSuite)
        (200, 0.975),  # 40: 39/40 (Pendulum)
        (300, 59 / 60),
        (1000, 0.995),  # 200: 199/200
        (50, 0.95),  # 10: 9/10, clipped up to 0.95
        (10_000, 0.995),  # 2000: 0.9995, clipped down to 0.995
    ],
)
def test_task_discounts_follow_tdmpc2s_heuristic(episode_length, expected):
    """``gamma = clip((L/5 - 1) / (L/5), 0.95, 0.995)`` for ``L``-step episodes, worked per length, on the
    paths that use it: a task's spec (online runs) and a dataset's per-task discounts (offline runs)."""
    assert TaskSpec("x", episode_length, 1).discount == pytest.approx(expected)
    info = DatasetInfo("mt30", ["x"], [1], [1], [episode_length], 1, 1, episode_length + 1)
    assert info.discounts().tolist() == pytest.approx([expected])


def test_bad_inputs():
    with pytest.raises(ValueError, match="Did you mean 'cheetah-run'.*available_tasks"):
        make_env("cheetah-runn")
    with pytest.raises(ValueError, match="Unknown Gymnasium id"):
        make_env("gym:NoSuchEnv-v0")
    with pytest.raises(ValueError, match="MBDPO needs a continuous Box action space"):
        make_env("gym:CartPole-v1")
    with pytest.raises(ValueError, match="unbounded actions.*bounded action space"):
        make_env(UnboundedActionEnv)
    with pytest.raises(ValueError, match="cannot be copied"):
        make_env(GymEnv("Pendulum-v1"), num_envs=2)


def _reward_with_velocity(env, joint, velocity):
    with env.physics.reset_context():
        env.physics.named.data.qvel[joint] = velocity
    return env.task.get_reward(env.physics)


@pytest.mark.parametrize(
    "domain, task, joint",
    [
        ("cheetah", "run_backwards", "rootx"),
        ("walker", "walk_backwards", "rootx"),
        ("walker", "run_backwards", "rootx"),
    ],
)
def test_backwards_tasks_reward_moving_backwards(domain, task, joint):
    env = _raw_dmc(domain, task, seed=0)
    env.reset()
    backwards, forwards = _reward_with_velocity(env, joint, -10.0), _reward_with_velocity(env, joint, 10.0)
    assert backwards > 0.1 and backwards > 3 * forwards
    if domain == "cheetah":
        assert backwards == pytest.approx(1.0) and forwards == pytest.approx(0.0)


def test_spin_rewards():
    pendulum = _raw_dmc("pendulum", "spin", seed=0)
    pendulum.reset()
    assert _reward_with_velocity(pendulum, "hinge", -10.0) == pytest.approx(1.0)
    assert _reward_with_velocity(pendulum, "hinge", 0.0) == pytest.approx(0.0)
    cup = _raw_dmc("ball_in_cup", "spin", seed=0)
    cup.reset()
    rewards = [cup.step(np.random.default_rng(i).uniform(-1, 1, 2)).reward for i in range(50)]
    assert all(0.0 <= r <= 1.0 for r in rewards)
    with cup.physics.reset_context():  # ball far from the cup and fast: full reward
        cup.physics.named.data.qpos[["ball_x", "ball_z"]] = [0.0, -0.2]
        cup.physics.named.data.qvel[["ball_x", "ball_z"]] = [8.0, 0.0]
    assert cup.task.get_reward(cup.physics) == pytest.approx(1.0)


def test_three_link_reacher_model():
    env = _raw_dmc("reacher", "three_easy", seed=0)
    assert env.action_spec().shape == (3,)
    assert list(env.reset().observation) == ["position", "to_target", "velocity"]


if __name__ == "__main__":
    args, unknown = argparse.ArgumentParser().parse_known_args()
    pytest.main([__file__, "--capture", "no", "--exitfirst"] + unknown)
