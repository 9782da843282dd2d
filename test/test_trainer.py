"""A real (tiny) online run: DMControl/Gymnasium env, TorchRL Collector, replay buffer, Trainer, files."""

import copy
import csv
import math

import pytest
import torch
from tensordict import TensorDict

from torchrl_mbdpo.data import EpisodeWriter, make_replay_buffer
from torchrl_mbdpo.envs import make_env
from torchrl_mbdpo.modules.functional import soft_ce
from torchrl_mbdpo.trainers.agent import load_agent
from torchrl_mbdpo.trainers.checkpoint import CheckpointError
from torchrl_mbdpo.trainers.config import ModelOverrides
from torchrl_mbdpo.trainers.evaluation import evaluate, evaluation_seeds
from torchrl_mbdpo.trainers.trainer import make_trainer


def heldout_transitions(task: str, seed: int, slices: int = 64, horizon: int = 3) -> TensorDict:
    """``[slices, horizon]`` transitions of a random-action episode on a fresh env (seeded apart from any
    training run's), in the layout the loss reads."""
    env = make_env(task, seed=seed)
    steps = env.rollout(slices * horizon, break_when_any_done=False)  # random actions (the env's action spec)
    return steps[: slices * horizon].reshape(slices, horizon)


@torch.no_grad()
def reward_ce(world_model, batch) -> float:
    """One-step reward prediction loss of a world model, ``mean CE(R(enc(o), a), two_hot(r))``: log(101) = 4.62
    for the zero-initialised reward head, whatever the rewards."""
    world_model.eval()
    z = world_model.encode_obs(batch["observation"])
    return soft_ce(world_model.reward(z, batch["action"]), batch["next", "reward"], world_model.bins).mean().item()


def test_short_training_run_writes_curve_checkpoint_and_learns_something(tmp_path, tiny_config):
    cfg = tiny_config()
    trainer = make_trainer(cfg)
    untrained = copy.deepcopy(trainer.world_model)
    target_before = trainer.loss_module.target_qvalue_params.clone()
    trainer.train()
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "eval.csv")))
    assert [int(r["step"]) for r in rows] == [0, 300, 600]
    assert (run / "eval.png").stat().st_size > 1000
    assert len(trainer.replay_buffer) == 400  # two complete 200-step episodes per env
    assert (trainer.loss_module.target_qvalue_params != target_before).any()
    state, saved_cfg, world_model, actor = load_agent(run / "checkpoints" / "latest.pt")
    assert state["step"] == 600 and saved_cfg.task == "gym:Pendulum-v1"
    for k, v in world_model.state_dict().items():
        assert torch.equal(v, trainer.world_model.state_dict()[k])

    # Learning signal: the reward prediction on held-out Pendulum transitions, from log(101) at init to well
    # below it (a run whose updates never reach the reward head, or whose buffer holds wrong rewards, stays
    # at or above it).
    heldout = heldout_transitions(cfg.task, seed=12345)
    before, after = reward_ce(untrained, heldout), reward_ce(world_model, heldout)
    assert before == pytest.approx(math.log(101), abs=1e-3)
    assert after < 0.8 * before, (before, after)

    # eval.csv's last row is what the checkpointed agent scores under the evaluation protocol: the eval env
    # of evaluation_seeds(seed, 0).env, reseeded with evaluation_seeds(seed, step) (torch and env), deterministic
    # episodes, the mean over eval_episodes.
    seeds = evaluation_seeds(cfg.seed, 600)
    eval_env = make_env(cfg.task, seed=evaluation_seeds(cfg.seed, 0).env, num_envs=min(cfg.num_envs, cfg.eval_episodes))
    eval_env.append_transform(actor.make_tensordict_primer())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seeds.torch)
        eval_env.set_seed(seeds.env)
        returns = evaluate(eval_env, actor, cfg.eval_episodes, 200)
    assert float(rows[-1]["episode_reward"]) == pytest.approx(sum(returns) / len(returns), rel=1e-5)


def test_checkpoint_of_another_config_is_refused(tiny_config):
    trainer = make_trainer(tiny_config(steps=2, seed_steps=2, eval_freq=10, checkpoint_freq=10))
    path = trainer.save_checkpoint()
    other = tiny_config(model=ModelOverrides(latent_dim=32, mlp_dim=32, enc_dim=32))
    with pytest.raises(CheckpointError, match="latent_dim: checkpoint has 16, requested 32"):
        load_agent(path, other)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_agent(path)


def test_episode_writer_keeps_episodes_contiguous_and_slices_inside_them():
    rb = make_replay_buffer(horizon=3, batch_size=64, capacity=1000)
    writer = EpisodeWriter(rb)
    # two envs, collected one step at a time (their steps interleave in time), episodes of 5 and 7 steps
    t = [0, 0]
    traj = [0, 1]
    for _ in range(40):
        steps = []
        for env, length in enumerate((5, 7)):
            done = t[env] == length - 1
            steps.append(
                TensorDict(
                    {
                        "observation": torch.tensor([100.0 * traj[env] + t[env]]),
                        ("next", "done"): torch.tensor([done]),
                        ("next", "terminated"): torch.tensor([False]),
                    },
                    [],
                )
            )
            t[env] += 1
            if done:
                t[env] = 0
                traj[env] += 2
        writer(torch.stack(steps).unsqueeze(1))  # [num_envs, T=1]
    assert len(rb) == 8 * 5 + 5 * 7  # complete episodes only
    sample = rb.sample().reshape(64, 3)
    obs = sample["observation"].squeeze(-1)
    assert (sample["episode"] == sample["episode"][:, :1]).all()  # never crosses episodes
    assert torch.equal(obs[:, 1:] - obs[:, :-1], torch.ones(64, 2))  # consecutive steps of one episode
    env0_last = (obs % 100 == 4) & ((obs // 100) % 2 == 0)  # env 0: 5-step episodes, even ids
    env1_last = (obs % 100 == 6) & ((obs // 100) % 2 == 1)  # env 1: 7-step episodes, odd ids
    assert (env0_last | env1_last).any()  # the last step of an episode is sampled too


def test_compile_true_compiles_the_planner_and_the_update(tiny_config):
    trainer = make_trainer(tiny_config(compile=True, compile_mode="max-autotune-no-cudagraphs"))
    assert trainer.planner.compile_options.mode == "max-autotune-no-cudagraphs"
    assert trainer.optimization_stepper.compile_options is trainer.planner.compile_options
    eager = make_trainer(tiny_config(root=None, work_dir=str(trainer.run.work_dir) + "-eager"))
    assert eager.planner.compile_options is None and eager.optimization_stepper.compile_options is None
