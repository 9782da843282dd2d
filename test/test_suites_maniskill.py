"""The ManiSkill suite on the real simulator (ManiSkill3, PhysX CPU, Vulkan on Mesa lavapipe)."""

import csv
import math

import gymnasium
import numpy as np
import pytest
import torch
from torchrl.data import Bounded
from torchrl.envs.utils import check_env_specs

from torchrl_mbdpo import DiffusionActor
from torchrl_mbdpo.envs import make_env, task_spec
from torchrl_mbdpo.envs.maniskill import ManiSkillEnv, check_maniskill_available
from torchrl_mbdpo.envs.suite import SuiteUnavailableError
from torchrl_mbdpo.modules import MBDPOWorldModel, PlannerConfig, WorldModelConfig
from torchrl_mbdpo.trainers.config import ModelOverrides, TrainConfig
from torchrl_mbdpo.trainers.trainer import make_trainer

try:
    check_maniskill_available()
except SuiteUnavailableError as err:
    pytest.skip(f"ManiSkill3 cannot run on this machine: {err}", allow_module_level=True)

# ManiSkill 3.0.1 calls np.isnan on the torch action of every control step (NumPy 2 deprecation).
pytestmark = pytest.mark.filterwarnings("ignore:__array_wrap__ must accept context:DeprecationWarning")

TINY_PLANNER = PlannerConfig(steps=2, num_samples=8, num_elites=2, num_pi_trajs=2)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from a second thread, and on a busy machine OpenMP's thread sync made
    the planner about 10x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _fixed_actions(seed: int, length: int, action_dim: int = 4):
    """A policy replaying one seeded action sequence, indexed by the env's step count."""
    actions = torch.rand(length, action_dim, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return lambda td: td.set("action", actions[int(td["step_count"])])


@pytest.mark.parametrize("task", ["pick-cube", "stack-cube"])
def test_env_specs_and_mbdpo_interface(task):
    env = make_env(task, seed=0)
    check_env_specs(env)
    assert isinstance(env.action_spec, Bounded) and env.action_spec.shape == (4,)  # pd_ee_delta_pos + gripper
    assert (env.action_spec.space.low == -1).all() and (env.action_spec.space.high == 1).all()
    obs = env.observation_spec["observation"]
    assert obs.dtype == torch.float32 and len(obs.shape) == 1
    success = env.observation_spec["success"]
    assert success.dtype == torch.bool and success.shape == (1,)
    assert env.task_spec == task_spec(task)
    assert (env.task_spec.episode_length, env.task_spec.action_repeat) == (100, 2)
    assert env.task_spec.episodic and env.task_spec.reports_success
    env.close()


def test_planner_rollout_truncates_at_100_steps_and_reports_success():
    env = make_env("pick-cube", seed=0, num_envs=2)
    obs_dim, action_dim = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
    world_model = MBDPOWorldModel(WorldModelConfig.from_size(1, obs_dim, action_dim, latent_dim=16, mlp_dim=16, enc_dim=16, episodic=True))
    actor = DiffusionActor(world_model, TINY_PLANNER, discount=env.task_spec.discount)
    env.append_transform(actor.make_tensordict_primer())
    rollout = env.rollout(101, actor, break_when_any_done=False)
    assert rollout["next", "success"].dtype == torch.bool and rollout["next", "success"].shape == (2, 101, 1)
    for episode in rollout.unbind(0):
        first_done = int(episode["next", "done"].squeeze(-1).float().argmax())
        if episode["next", "success"][first_done]:  # ended early: ManiSkill terminates on success
            assert episode["next", "terminated"][first_done] and not episode["next", "truncated"][first_done]
        else:
            assert first_done == 99 and episode["next", "truncated"][99] and not episode["next", "terminated"][99]
        assert episode["step_count"][first_done + 1] == 0  # the next episode starts after a reset
    env.close()


def test_lift_cube_is_solved_by_a_scripted_grasp_and_terminates_on_success():
    """Hand-written grasp-and-lift on the custom lift-cube task: reach above the cube, descend, close, lift."""
    env = make_env("lift-cube", seed=0)
    td = env.reset()
    for step in range(100):
        obs = td["observation"]
        tcp_to_cube, cube_to_goal = obs[36:39], obs[39:42]  # the last two entries of PickCube-v1's state
        if step < 15:
            move, gripper = tcp_to_cube + torch.tensor([0.0, 0.0, 0.05]), 1.0
        elif step < 25:
            move, gripper = tcp_to_cube, 1.0
        elif step < 32:
            move, gripper = torch.zeros(3), -1.0
        else:
            move, gripper = cube_to_goal / 2, -1.0  # slower, so the arm comes to rest at the goal
        action = torch.cat([(move / 0.05).clamp(-1, 1), torch.tensor([gripper])])  # 1 = 0.1 m per control step
        td = env.step(td.set("action", action))["next"]
        if td["done"]:
            break
    assert td["success"] and td["terminated"] and not td["truncated"]
    assert step < 99 and td["episode_reward"] > 0
    env.close()


def test_set_seed_replays_episodes():
    env = make_env("stack-cube", seed=0)
    rollouts = []
    for seed in (5, 5, 6):
        env.set_seed(seed)
        rollouts.append(env.rollout(15, _fixed_actions(0, 15)))
    same, again, other = rollouts
    assert torch.equal(same["observation"], again["observation"])
    assert torch.equal(same["next", "reward"], again["next", "reward"])
    assert not torch.equal(same["observation"][0], other["observation"][0])  # another initial cube layout
    env.close()


class _TerminatingStub:
    """The ManiSkill3 env API (batched torch outputs) with reward 1 per control step and termination at the 3rd."""

    single_observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    single_action_space = gymnasium.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, seed=None):
        self.control_steps = 0
        return torch.zeros(1, 3), {"success": torch.tensor([False])}

    def step(self, action):
        self.control_steps += 1
        done = torch.tensor([self.control_steps == 3])
        obs = torch.full((1, 3), float(self.control_steps))
        return obs, torch.tensor([1.0]), done, torch.tensor([False]), {"success": done}

    def close(self):
        pass


def test_action_repeat_sums_rewards_and_stops_at_termination():
    stub = _TerminatingStub()
    env = ManiSkillEnv(lambda: stub, action_repeat=2)
    td = env.reset()
    first = env.step(td.set("action", torch.zeros(2)))["next"]
    assert first["reward"].item() == 2.0 and not first["done"] and stub.control_steps == 2
    second = env.step(first.set("action", torch.zeros(2)))["next"]
    assert second["reward"].item() == 1.0 and stub.control_steps == 3  # the repeat stops at termination
    assert second["terminated"] and second["done"] and second["success"] and not second["truncated"]


def test_tiny_training_run_logs_success_rate(tmp_path):
    cfg = TrainConfig(
        task="pick-cube",
        steps=200,
        seed=1,
        model_size=1,
        num_envs=1,
        eval_freq=200,
        eval_episodes=1,
        checkpoint_freq=200,
        batch_size=16,
        seed_steps=100,
        pretrain_updates=10,
        progress=False,
        work_dir=str(tmp_path / "run"),
        model=ModelOverrides(latent_dim=16, mlp_dim=32, enc_dim=32),
        planner=TINY_PLANNER,
    )
    trainer = make_trainer(cfg)
    assert trainer.world_model.cfg.episodic  # from the task spec
    trainer.train()
    rows = list(csv.DictReader(open(tmp_path / "run" / "eval.csv")))
    assert [int(r["step"]) for r in rows] == [0, 200]
    assert all(float(r["episode_success"]) in (0.0, 1.0) for r in rows)  # one episode each: a number, not NaN
    assert all(math.isfinite(float(r["episode_reward"])) for r in rows)


@pytest.mark.parametrize("task, asset", [("pick-ycb", "ycb"), ("turn-faucet", "partnet_mobility_faucet")])
def test_missing_assets_fail_with_the_download_command(task, asset, monkeypatch):
    from mani_skill.utils import assets

    # Whatever this machine has downloaded: the error must come before ManiSkill's (y|n) stdin prompt.
    monkeypatch.setattr(assets, "is_data_source_downloaded", lambda source_id: False)
    with pytest.raises(SuiteUnavailableError, match=f"python -m mani_skill.utils.download_asset {asset}"):
        make_env(task, seed=0)
