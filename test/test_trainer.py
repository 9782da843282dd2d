"""A real (tiny) online run: DMControl/Gymnasium env, TorchRL Collector, replay buffer, Trainer, files."""
import csv
import os
import subprocess
import sys

import pytest
import torch
from tensordict import TensorDict

from torchrl_mbdpo.data import EpisodeWriter, make_replay_buffer
from torchrl_mbdpo.trainers.checkpoint import CheckpointError
from torchrl_mbdpo.trainers.config import ModelOverrides, TrainConfig
from torchrl_mbdpo.trainers.agent import load_agent
from torchrl_mbdpo.trainers.trainer import make_trainer
from torchrl_mbdpo.modules import PlannerConfig

TINY_ARGS = [
    "model_size=1", "model.latent_dim=16", "model.mlp_dim=32", "model.enc_dim=32", "batch_size=16",
    "planner.steps=2", "planner.num_samples=8", "planner.num_elites=2", "planner.num_pi_trajs=2",
]


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    cfg = TrainConfig(
        task="gym:Pendulum-v1", steps=600, seed=3, model_size=1, num_envs=2, eval_freq=300, eval_episodes=2,
        checkpoint_freq=300, batch_size=16, seed_steps=200, pretrain_updates=10, progress=False,
        work_dir=str(tmp_path / "run"), model=ModelOverrides(latent_dim=16, mlp_dim=32, enc_dim=32),
        planner=PlannerConfig(steps=2, num_samples=8, num_elites=2, num_pi_trajs=2),
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def test_short_training_run_writes_curve_checkpoint_and_learns_something(tmp_path):
    trainer = make_trainer(tiny_config(tmp_path))
    before = {k: v.clone() for k, v in trainer.world_model.state_dict().items()}
    target_before = trainer.loss_module.target_qvalue_params.clone()
    trainer.train()
    run = tmp_path / "run"
    rows = list(csv.DictReader(open(run / "eval.csv")))
    assert [int(r["step"]) for r in rows] == [0, 300, 600]
    assert all(float(r["episode_reward"]) < 0 for r in rows)  # Pendulum returns are negative
    assert (run / "eval.png").stat().st_size > 1000
    assert len(trainer.replay_buffer) == 400  # two complete 200-step episodes per env
    changed = [k for k, v in trainer.world_model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("dynamics" in k for k in changed) and any("policy" in k for k in changed)
    assert (trainer.loss_module.target_qvalue_params != target_before).any()
    state, cfg, world_model, actor = load_agent(run / "checkpoints" / "latest.pt")
    assert state["step"] == 600 and cfg.task == "gym:Pendulum-v1"
    for k, v in world_model.state_dict().items():
        assert torch.equal(v, trainer.world_model.state_dict()[k])


def test_checkpoint_of_another_config_is_refused(tmp_path):
    trainer = make_trainer(tiny_config(tmp_path, steps=2, seed_steps=2, eval_freq=10, checkpoint_freq=10))
    path = trainer.save_checkpoint()
    other = tiny_config(tmp_path, model=ModelOverrides(latent_dim=32, mlp_dim=32, enc_dim=32))
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
            steps.append(TensorDict({
                "observation": torch.tensor([100.0 * traj[env] + t[env]]),
                ("next", "done"): torch.tensor([done]),
                ("next", "terminated"): torch.tensor([False]),
            }, []))
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


def _cli(*args, cwd):
    env = {**os.environ, "MUJOCO_GL": "egl"}
    return subprocess.run([sys.executable, "-c", "from torchrl_mbdpo.cli import {}; {}()".format(*args[:1] * 2), *args[1:]],
                          cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_command_line_train_then_eval_on_dmcontrol(tmp_path):
    work = tmp_path / "cli"
    out = _cli("train_main", "task=cartpole-swingup", "steps=40", "seed_steps=20", "pretrain_updates=0",
               "eval_freq=40", "eval_episodes=1", "checkpoint_freq=40", f"work_dir={work}", *TINY_ARGS, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "final eval at step 40" in out.stdout
    header = open(work / "eval.csv").readline().strip().split(",")
    assert header[:2] == ["step", "episode_reward"]
    assert (work / "eval.png").exists() and (work / "checkpoints" / "latest.pt").exists()
    out = _cli("eval_main", f"checkpoint={work / 'checkpoints' / 'latest.pt'}", "eval_episodes=1", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mean_return=" in out.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["task=cheetah-rn"], "cheetah-run"),
        (["model_size=7"], "model_size=7 is not a known size"),
        (["task=gym:CartPole-v1"], "continuous Box action space"),
        (["planner.score_source=magic"], "score_source"),
    ],
)
def test_command_line_bad_input_gets_one_clear_error(tmp_path, args, message):
    out = _cli("train_main", "steps=10", f"work_dir={tmp_path / 'x'}", *args, cwd=tmp_path)
    assert out.returncode != 0
    assert message in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "x" / "eval.csv").exists()


def test_eval_of_missing_checkpoint_says_how_to_fix(tmp_path):
    out = _cli("eval_main", f"checkpoint={tmp_path / 'nope.pt'}", cwd=tmp_path)
    assert out.returncode == 2 and "No checkpoint at" in out.stderr
