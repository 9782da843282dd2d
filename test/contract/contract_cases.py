"""The contract suite's settings and runner: every console command at tiny settings, run as its console script
runs it (a subprocess of ``contract_hook.py``, optionally with SIGTERM sent in a chosen phase).

Importing this module registers ``gym:ShortPendulum-v1``: Gymnasium's Pendulum with 20-step episodes (the real
dynamics; only the time limit is shorter), so that a run meets every phase in a fraction of a second of simulation."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import tempfile
from pathlib import Path

import gymnasium

gymnasium.register("ShortPendulum-v1", entry_point="gymnasium.envs.classic_control.pendulum:PendulumEnv", max_episode_steps=20)

HOOK = Path(__file__).with_name("contract_hook.py")

TINY_MODEL = ["model_size=1", "model.latent_dim=16", "model.mlp_dim=32", "model.enc_dim=32", "batch_size=16"]
TINY_PLANNER = ["planner.steps=2", "planner.num_samples=8", "planner.num_elites=2", "planner.num_pi_trajs=2"]
QUIET = ["progress=false", "threads=1"]
# Pendulum with 20-step episodes (contract_hook.py): random actions to 10, the first episode ends at 20 (the seed
# updates, then an evaluation), training to 30, the final evaluation.
ONLINE = [
    "task=gym:ShortPendulum-v1",
    "steps=30",
    "seed_steps=10",
    "pretrain_updates=5",
    "eval_freq=20",
    "eval_episodes=1",
    "checkpoint_freq=20",
    *TINY_MODEL,
    *TINY_PLANNER,
    *QUIET,
]
OFFLINE = [
    "mode=offline",
    "task=[cartpole-balance]",
    "steps=20",
    "eval_freq=20",
    "eval_episodes=1",
    "checkpoint_freq=10",
    *TINY_MODEL,
    *TINY_PLANNER,
    *QUIET,
]
# `mbdpo-dmo train` (the simulator as the global model): 16 random steps, 2 envs x horizon 4 per iteration to 64.
DMO_SIM = [
    "train",
    "task=gym:ShortPendulum-v1",
    "steps=64",
    "eval_freq=40",
    "eval_episodes=1",
    "checkpoint_freq=32",
    "horizon=4",
    "num_envs=2",
    "seed_steps=16",
    "pretrain_updates=5",
    "critic_updates=1",
    "local_model_updates=1",
    *TINY_MODEL,
    *QUIET,
]
FINETUNE = ["task=cartpole-swingup", "source_task=cartpole-balance", "steps=30", "eval_freq=100", "eval_episodes=1", *TINY_PLANNER, *QUIET]
# TorchRL's own TD-MPC2 recipe (sota-implementations/mbdpo_trainer/train.py), tiny
RECIPE_TINY = [
    "collector.total_frames=300",
    "collector.frames_per_batch=50",
    "collector.init_random_frames=100",
    "trainer.seed_pretrain_steps=20",
    "trainer.optim_steps_per_batch=10",
    "trainer.batch_size=32",
    "trainer.progress_bar=false",
    "trainer.diffusion_steps=3",
    "models.world_model.latent_dim=32",
    "models.world_model.mlp_dim=64",
    "models.world_model.encoder_dim=64",
    "models.policy_prior.latent_dim=32",
    "models.policy_prior.mlp_dim=64",
    "models.q_ensemble.latent_dim=32",
    "models.q_ensemble.mlp_dim=64",
    "models.planner.num_samples=32",
    "models.planner.num_elites=4",
    "models.planner.num_pi_trajs=4",
]
PLAY = ["episodes=4", "image_size=64", "episode_length=12", "progress=false"]
WORLD_MODEL = [
    "updates=4",
    "batch_size=2",
    "held_out=1",
    "held_out_windows=2",
    "eval_freq=2",
    "checkpoint_freq=2",
    "context=3",
    "channels=[8,16]",
    "norm_groups=4",
    "frames_steps=2",
    *QUIET,
]
REWARD = [
    "updates=4",
    "batch_size=8",
    "held_out=1",
    "held_out_pairs=16",
    "eval_freq=2",
    "checkpoint_freq=2",
    "channels=[8,8]",
    "hidden=16",
    *QUIET,
]
POLICY = [
    "iterations=2",
    "num_envs=2",
    "horizon=2",
    "episode_steps=4",
    "latent_dim=32",
    "mlp_dim=32",
    "enc_dim=32",
    "pretrain_updates=1",
    "critic_updates=1",
    "local_model_updates=1",
    "batch_size=4",
    "eval_freq=1",
    "eval_episodes=1",
    "eval_steps=3",
    "checkpoint_freq=1",
    *QUIET,
]
PPO = [
    "iterations=2",
    "num_envs=2",
    "rollout_steps=2",
    "episode_steps=4",
    "hidden=16",
    "ppo_epochs=1",
    "minibatch_size=2",
    "eval_freq=1",
    "eval_episodes=1",
    "eval_steps=3",
    "checkpoint_freq=1",
    *QUIET,
]


# What a command's process imports first (torch, torchrl, the trainers): imported once, by a fork server whose
# children then run one command each (a fresh process, its own files and signals, without 4 s of imports).
PRELOAD = [
    "contract_hook",
    "torchrl_mbdpo.cli",
    "torchrl_mbdpo.trainers.commands",
    "torchrl_mbdpo.trainers.trainer",
    "torchrl_mbdpo.trainers.offline",
    "torchrl_mbdpo.dmo.trainer",
    "torchrl_mbdpo.dmo.commands",
    "torchrl_mbdpo.dmo.world_model_training",
    "torchrl_mbdpo.dmo.reward",
    "torchrl_mbdpo.dmo.policy_training",
    "torchrl_mbdpo.dmo.ppo",
]
_SERVER = None


def _child(cwd: str, command: str, args: list, phase: str | None, out: str, err: str) -> None:
    import contract_hook

    os.chdir(cwd)
    os.environ.update({"MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"})
    for fd, path in ((1, out), (2, err)):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
    contract_hook.run_command(command, args, phase)


def run(cwd, command: str, *args: str, phase: str | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """``command args...`` (a console script's name) in a new process in ``cwd``; ``phase``: SIGTERM when a run
    enters it. Returns what ``subprocess.run`` would."""
    global _SERVER
    if _SERVER is None:
        _SERVER = multiprocessing.get_context("forkserver")
        _SERVER.set_forkserver_preload(PRELOAD)
    with tempfile.TemporaryDirectory() as tmp:
        out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
        proc = _SERVER.Process(target=_child, args=(str(cwd), command, [str(a) for a in args], phase, out, err))
        proc.start()
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired([command, *args], timeout)
        with open(out) as o, open(err) as e:
            return subprocess.CompletedProcess([command, *args], proc.exitcode, o.read(), e.read())


def explain(out: subprocess.CompletedProcess) -> str:
    return f"exit {out.returncode}\n--- stdout\n{out.stdout[-3000:]}\n--- stderr\n{out.stderr[-3000:]}"
