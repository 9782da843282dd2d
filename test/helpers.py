"""Test helpers shared by several test modules (imported as ``helpers``; ``conftest.py`` puts this folder
on ``sys.path`` and wraps the path-dependent ones as fixtures). No test module imports another.

- analytic models with the tensor API of ``MBDPOWorldModel`` (:class:`PointMassModel`, :class:`ScriptedModel`),
  whose returns a test can work out by hand;
- tiny world models, losses and ``[B, H]`` slice batches for the objective tests;
- Q heads set to known constants (:func:`set_constant_q_heads`);
- a tiny online training config and a command-line runner.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from types import SimpleNamespace

import torch
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from torchrl_mbdpo.modules import PlannerConfig
from torchrl_mbdpo.modules.functional import PolicySample
from torchrl_mbdpo.modules.world_model import MBDPOWorldModel, WorldModelConfig
from torchrl_mbdpo.objectives import MBDPOLoss
from torchrl_mbdpo.trainers.config import ModelOverrides, TrainConfig


# ------------------------------------------------------------------------------------------ analytic models
def _align(z, a):
    # As the world model's heads: a latent (*B, L) broadcasts over candidates (*B, N, A).
    return z.unsqueeze(-2) if z.ndim < a.ndim else z


class PointMassModel(torch.nn.Module):
    """Point mass in ``R^A``: ``z' = z + a``, reward ``-|z' - goal|^2``, no energy, terminal value 0. From
    ``z`` with ``|goal - z|_inf <= 1`` the best sequence is ``a_0 = goal - z`` then zeros, with return 0.

    ``score(x, tau) -> s`` (optional) is the amortised score the ``score_fn`` of the planner's network path
    returns (default: zero); the ``tau`` values it is called with are recorded in ``score_taus``.
    """

    def __init__(self, goal, horizon=3, score=None):
        super().__init__()
        self.register_buffer("goal", torch.as_tensor(goal, dtype=torch.float32))
        A = self.goal.numel()
        self.cfg = SimpleNamespace(horizon=horizon, action_dim=A, multitask=False)
        self.done_head = None
        self.energy_norm = torch.nn.Identity()
        self.calls = 0
        self._score = score
        self.score_taus: list[int] = []

    def encode_obs(self, obs, task=None):
        return obs

    def next(self, z, a, task=None):
        self.calls += 1
        return _align(z, a) + a

    def reward(self, z, a, task=None):
        return -((_align(z, a) + a - self.goal) ** 2).sum(-1, keepdim=True)

    def decode_reward(self, r):
        return r

    def energy_logit(self, z, a, task=None):
        return torch.zeros(*a.shape[:-1], 1)

    def q_value(self, z, a, task=None, reduce="avg"):
        return torch.zeros(*z.shape[:-1], 1)

    def pi(self, z, task=None, eps=None):
        a = torch.rand_like(z) * 2 - 1
        return PolicySample(a, a, torch.zeros(*z.shape[:-1], 1), torch.zeros(*z.shape[:-1], 1))

    def action_mask(self, task):
        return None

    def score_fn(self, z, num_taus, task=None):
        def score(x, tau):
            self.score_taus.append(int(tau))
            return torch.zeros_like(x) if self._score is None else self._score(x, int(tau))

        return score


class ScriptedModel:
    """A one-dimensional latent model whose energy-shaped return is worked out by hand in the tests:

    ``z' = z + a``; reward ``r(z, a) = 2 z + a``; energy logit ``F(z, a) = z - a``; termination logit
    ``10 (z' - 1.5)`` of the next latent (fires once ``z' > 1.5``; only with ``episodic=True``); the policy
    always proposes ``a = 0.5``; terminal value ``Q(z, a) = z + a + 10``.
    """

    def __init__(self, episodic: bool):
        self.done_head = object() if episodic else None
        self.cfg = SimpleNamespace(multitask=False, action_dim=1)

    def reward(self, z, a, task=None):
        return 2 * _align(z, a) + a

    def decode_reward(self, r):
        return r

    def energy_logit(self, z, a, task=None):
        return _align(z, a) - a

    def next(self, z, a, task=None):
        return _align(z, a) + a

    def termination(self, z, task=None):
        return 10 * (z - 1.5)

    def pi(self, z, task=None):
        a = torch.full_like(z, 0.5)
        return PolicySample(a, a, torch.zeros_like(z), torch.zeros_like(z))

    def q_value(self, z, a, task=None, reduce="avg"):
        return z + a + 10


# ------------------------------------------------------------------------------------------ Q heads
def bin_value(index: int, num_bins: int = 101, vmin: float = -10.0, vmax: float = 10.0) -> float:
    """The value ``symexp(bin)`` of bin ``index`` of the symlog support, by hand: ``sign(b) (e^|b| - 1)``."""
    b = vmin + index * (vmax - vmin) / (num_bins - 1)
    return math.copysign(math.expm1(abs(b)), b)


def set_constant_q_heads(params, bin_indices) -> list[float]:
    """Make head ``k`` of stacked Q-ensemble parameters (``q_params`` or ``target_q_params``) output
    ``bin_value(bin_indices[k])`` for every input: zero last-layer weights and a last-layer bias that puts all
    the softmax mass (up to ``e^-40``) on that bin. Returns the head values."""
    last = str(max(int(k) for k in params.keys() if k.isdigit()))
    with torch.no_grad():
        params[last, "weight"].zero_()
        bias = params[last, "bias"]
        bias.zero_()
        for head, index in enumerate(bin_indices):
            bias[head, index] = 40.0
    return [bin_value(i, bias.shape[-1]) for i in bin_indices]


# ------------------------------------------------------------------------------------------ losses and batches
OBS_DIM, ACTION_DIM, B, H = 5, 2, 16, 3
LOSS_TERMS = ("loss_consistency", "loss_reward", "loss_value", "loss_termination", "loss_energy", "loss_score")


def make_world_model(seed: int = 0, **overrides) -> MBDPOWorldModel:
    """A tiny world model (latent 32, 5 Q heads unless ``num_q`` says otherwise)."""
    torch.manual_seed(seed)
    arch = {**dict(latent_dim=32, mlp_dim=32, enc_dim=32, num_q=5), **overrides}
    cfg = WorldModelConfig.from_size(1, OBS_DIM, ACTION_DIM, **arch)
    return MBDPOWorldModel(cfg)


def make_loss(seed: int = 0, wm_kwargs: dict | None = None, loss_cls=MBDPOLoss, **loss_kwargs):
    """A tiny loss with its target updater (which also silences TorchRL's missing-updater warning)."""
    loss = loss_cls(make_world_model(seed, **(wm_kwargs or {})), **loss_kwargs)
    return loss, SoftUpdate(loss, tau=0.01)


def make_batch(seed: int = 1, batch: int = B, horizon: int = H, keys: dict | None = None, task: bool = False) -> TensorDict:
    """``[B, H]`` slices in TorchRL's layout (time last), with truncated/done set at slice ends as
    ``SliceSampler`` does; a few true terminations. ``task=True``: tasks 0/1 per slice."""
    g = torch.Generator().manual_seed(seed)
    keys = {
        "observation": "observation",
        "action": "action",
        "next_observation": ("next", "observation"),
        "reward": ("next", "reward"),
        "terminated": ("next", "terminated"),
        **(keys or {}),
    }
    terminated = torch.zeros(batch, horizon, 1, dtype=torch.bool)
    terminated[::4, -1] = True
    slice_end = torch.zeros(batch, horizon, 1, dtype=torch.bool)
    slice_end[:, -1] = True
    td = TensorDict(batch_size=[batch, horizon])
    td.set(keys["observation"], torch.randn(batch, horizon, OBS_DIM, generator=g))
    td.set(keys["action"], torch.rand(batch, horizon, ACTION_DIM, generator=g) * 2 - 1)
    td.set(keys["next_observation"], torch.randn(batch, horizon, OBS_DIM, generator=g))
    td.set(keys["reward"], torch.rand(batch, horizon, 1, generator=g) * 2 - 1)
    td.set(keys["terminated"], terminated)
    td.set(("next", "truncated"), slice_end)
    td.set(("next", "done"), slice_end | terminated)
    if task:
        td.set("task", torch.randint(0, 2, (batch, 1), generator=g).expand(batch, horizon).clone())
    return td


def seeded_losses(loss: MBDPOLoss, td: TensorDict, seeds=(0, 1, 2, 3)) -> dict:
    """Model-loss terms averaged over fixed seeds, so that before/after comparisons see the same noise."""
    totals = {}
    for seed in seeds:
        torch.manual_seed(seed)
        with torch.no_grad():
            _, out = loss.model_loss(td)
        for key in LOSS_TERMS:
            if key in out.keys():
                totals[key] = totals.get(key, 0.0) + out[key].item() / len(seeds)
    return totals


# ------------------------------------------------------------------------------------------ trainer and CLI
TINY_ARGS = [
    "model_size=1",
    "model.latent_dim=16",
    "model.mlp_dim=32",
    "model.enc_dim=32",
    "batch_size=16",
    "planner.steps=2",
    "planner.num_samples=8",
    "planner.num_elites=2",
    "planner.num_pi_trajs=2",
]


def tiny_config(root, **overrides) -> TrainConfig:
    """A tiny online MBDPO run on Pendulum (2 envs, 600 steps, evaluations at 0/300/600) in ``root/run``."""
    cfg = TrainConfig(
        task="gym:Pendulum-v1",
        steps=600,
        seed=3,
        model_size=1,
        num_envs=2,
        eval_freq=300,
        eval_episodes=2,
        checkpoint_freq=300,
        batch_size=16,
        seed_steps=200,
        pretrain_updates=10,
        progress=False,
        work_dir=str(root / "run"),
        model=ModelOverrides(latent_dim=16, mlp_dim=32, enc_dim=32),
        planner=PlannerConfig(steps=2, num_samples=8, num_elites=2, num_pi_trajs=2),
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def run_cli(main: str, *args, cwd, timeout: float | None = None) -> subprocess.CompletedProcess:
    """``torchrl_mbdpo.cli.<main>()`` with ``args`` in a subprocess (one torch thread); no time limit unless
    ``timeout`` is given."""
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-c", f"from torchrl_mbdpo.cli import {main}; {main}()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


# ------------------------------------------------------------------------------------------ DMO in a pixel world model (Push-T)
TINY_PLAY = dict(episodes=4, image_size=16, episode_length=12, seed=0)  # 48 transitions of 16x16 frames


def write_tiny_play_data(path, **overrides):
    """A tiny Push-T play dataset (:data:`TINY_PLAY`: 4 episodes of 12 steps, 16x16 frames) in ``path``."""
    from torchrl_mbdpo.dmo.play_data import write_play_dataset

    return write_play_dataset(path, **{**TINY_PLAY, **overrides}, progress=False)


def tiny_diffusion_config(**overrides):
    """A 16x16, two-level, 8/16-channel diffusion world model conditioned on 2 frames."""
    from torchrl_mbdpo.dmo.diffusion import DiffusionConfig

    return DiffusionConfig(**{**dict(image_size=16, context=2, channels=(8, 16), norm_groups=4), **overrides})


def tiny_world_model_train_config(data, work_dir, **overrides):
    """:class:`WorldModelTrainConfig` of a seconds-long run of the tiny model on ``data`` (1 held-out episode)."""
    from torchrl_mbdpo.dmo.world_model_training import WorldModelTrainConfig

    arch = dict(context=2, channels=[8, 16], norm_groups=4)
    run = dict(
        updates=6,
        batch_size=4,
        held_out=1,
        held_out_windows=4,
        eval_freq=3,
        checkpoint_freq=3,
        frames_every=2,
        frames_steps=6,
        progress=False,
    )
    return WorldModelTrainConfig(data=str(data), work_dir=str(work_dir), **{**arch, **run, **overrides})


def tiny_reward_train_config(data, work_dir, **overrides):
    """:class:`RewardTrainConfig` of a seconds-long run of a tiny reward network on ``data`` (1 held-out episode)."""
    from torchrl_mbdpo.dmo.reward import RewardTrainConfig

    run = dict(
        channels=[8, 8], hidden=16, updates=6, batch_size=8, held_out=1, held_out_pairs=16, eval_freq=3, checkpoint_freq=3, progress=False
    )
    return RewardTrainConfig(data=str(data), work_dir=str(work_dir), **{**run, **overrides})
