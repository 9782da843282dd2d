"""The state-space path of DMO's world-model pipeline: the same global model, reward and policies as the pixel path,
over Push-T's *state* ``s = [agent_x, agent_y, block_x, block_y, block_angle]`` (the simulator's units: positions in
[0, 512], the angle in [0, 2 pi)) instead of frames. It is the setting this CPU can train to a useful accuracy; the
pixel path stays the GPU-scale one.

- :func:`state_features`: the normalised view of a state every network reads, ``[a / 256 - 1, b / 256 - 1, cos, sin]``
  (6 numbers in [-1, 1]; the angle as a point on the circle, so that 0 and 2 pi meet);
- :class:`StateDiffusionWorldModel`: the global model, an EDM diffusion model (the equations of
  :mod:`torchrl_mbdpo.dmo.functional`, the sampler and the loss of
  :class:`~torchrl_mbdpo.dmo.diffusion.NextObservationDiffusion`, 3 denoising steps) of the next state given the last
  ``k`` states and actions. It diffuses the *change* of the features, scaled per feature by its spread in the
  training data (``delta_std``, set from the data before training and saved with the weights), so that ``x`` has
  EDM's ``sigma_data``; ``F_theta`` is an MLP on the noisy change, the context's features and their changes, the
  actions and a Fourier embedding of ``c_noise``;
- :class:`StateScorer`: the reward network over states (the Bradley-Terry energy ``f(s | s_start, s_goal)`` or the
  regression of the env's reward), the counterpart of the pixel :class:`~torchrl_mbdpo.dmo.reward.FrameScorer`;
- :func:`pusht_goal_state`: the solved task's state, the goal of the energy.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .diffusion import EDMSettings, NextObservationDiffusion

__all__ = [
    "STATE_DIM",
    "FEATURE_DIM",
    "state_features",
    "features_to_state",
    "pusht_goal_state",
    "StateDiffusionConfig",
    "StateDiffusionWorldModel",
    "StateScorer",
]

STATE_DIM = 5  # gym-pusht's state vector
FEATURE_DIM = 6  # state_features: positions scaled to [-1, 1], the angle as (cos, sin)
_HALF = 256.0  # half the [0, 512] workspace
STATE_ARCHITECTURE_FIELDS = ("context", "action_dim", "hidden", "layers", "noise_features")


def state_features(state: torch.Tensor) -> torch.Tensor:
    """``(..., 5)`` Push-T states -> ``(..., 6)`` features in [-1, 1]: positions ``/ 256 - 1``, the angle as ``cos, sin``."""
    state = state.float()
    angle = state[..., 4:5]
    return torch.cat([state[..., :4] / _HALF - 1.0, angle.cos(), angle.sin()], -1)


def features_to_state(features: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`state_features` (the angle from ``atan2``, in [0, 2 pi); cos and sin need not be unit)."""
    angle = torch.atan2(features[..., 5:6], features[..., 4:5]) % (2 * math.pi)
    return torch.cat([(features[..., :4] + 1.0) * _HALF, angle], -1)


def pusht_goal_state(agent: tuple[float, float] = (256.0, 460.0)) -> torch.Tensor:
    """The state of the solved task: the block on gym-pusht's goal pose, the agent at ``agent`` (below it, as in
    :func:`~torchrl_mbdpo.envs.pusht.pusht_goal_frame`): float32 ``(5,)``."""
    from ..envs.pusht import PUSHT_GOAL

    return torch.tensor([*agent, *PUSHT_GOAL], dtype=torch.float32)


@dataclass
class StateDiffusionConfig(EDMSettings):
    """A next-state diffusion world model. Architecture: ``context`` (``k`` states and actions), ``action_dim``, the
    MLP's ``hidden`` width and ``layers``, ``noise_features`` (Fourier features of ``c_noise``). EDM and the sampler:
    :class:`~torchrl_mbdpo.dmo.diffusion.EDMSettings`."""

    context: int = 4
    action_dim: int = 2
    hidden: int = 256
    layers: int = 3
    noise_features: int = 16

    def __post_init__(self):
        problems = [
            f"{name} must be >= 1, got {getattr(self, name)}"
            for name in ("context", "action_dim", "hidden", "layers", "num_steps")
            if getattr(self, name) < 1
        ]
        if self.noise_features < 2 or self.noise_features % 2:
            problems.append(f"noise_features must be an even number >= 2, got {self.noise_features}")
        if problems:
            raise ValueError("Invalid state world model config: " + "; ".join(problems) + ".")

    def architecture(self) -> dict:
        return {name: getattr(self, name) for name in STATE_ARCHITECTURE_FIELDS}

    def to_dict(self) -> dict:
        return asdict(self)


def _mlp(width_in: int, hidden: int, layers: int, width_out: int) -> nn.Sequential:
    mods, width = [], width_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.SiLU()]
        width = hidden
    return nn.Sequential(*mods, nn.Linear(width, width_out))


class StateDiffusionWorldModel(NextObservationDiffusion):
    """The module docstring's global model. States are float ``(B, k, 5)`` (context) and ``(B, 5)`` (target)."""

    obs_key = "state"

    def __init__(self, cfg: StateDiffusionConfig):
        super().__init__()
        self.cfg = cfg
        k = cfg.context
        self.register_buffer("delta_std", torch.ones(FEATURE_DIM))
        self.register_buffer("noise_frequencies", 2.0 ** torch.linspace(-1.0, 3.0, cfg.noise_features // 2))
        width = FEATURE_DIM + k * FEATURE_DIM + (k - 1) * FEATURE_DIM + k * cfg.action_dim + cfg.noise_features
        self.net = _mlp(width, cfg.hidden, cfg.layers, FEATURE_DIM)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return (STATE_DIM,)

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (FEATURE_DIM,)

    def set_delta_std(self, states: torch.Tensor, next_states: torch.Tensor) -> None:
        """``delta_std`` from transitions of the training data (``(N, 5)`` each): the per-feature std of the change."""
        delta = state_features(next_states) - state_features(states)
        self.delta_std.copy_(delta.std(0).clamp_min(1e-4))

    def _context(self, frames):
        return state_features(frames)  # (B, k, 6)

    def _encode(self, target, context):
        return self.cfg.sigma_data * (state_features(target) - context[:, -1]) / self.delta_std

    def _decode(self, x, context):
        return features_to_state(context[:, -1] + x * self.delta_std / self.cfg.sigma_data)

    def policy_observation(self, frames: torch.Tensor) -> torch.Tensor:
        """The features of the last ``n`` states, concatenated: ``(B, 6 n)``."""
        return state_features(frames).flatten(1)

    def _raw(self, x_in, c_noise, context, actions):
        changes = (context[:, 1:] - context[:, :-1]) * (self.cfg.sigma_data / self.delta_std)
        angles = c_noise.reshape(-1, 1) * self.noise_frequencies * (2 * math.pi)
        inputs = [x_in, context.flatten(1), changes.flatten(1), actions.flatten(1), angles.cos(), angles.sin()]
        return self.net(torch.cat(inputs, -1))


class StateScorer(nn.Module):
    """``(s, s_start, s_goal) -> (B, 1)`` (``kind=energy``) or ``s -> (B, 1)`` (``env``, ``dense``) on Push-T states ``(B, 5)``:
    an MLP of ``layers`` x ``hidden`` on their features. ``cfg`` is a :class:`~torchrl_mbdpo.dmo.reward.RewardConfig`."""

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        inputs = FEATURE_DIM * (3 if cfg.kind == "energy" else 1)
        self.net = _mlp(inputs, cfg.hidden, len(cfg.channels), 1)

    def forward(self, state: torch.Tensor, start: torch.Tensor | None = None, goal: torch.Tensor | None = None) -> torch.Tensor:
        if tuple(state.shape[1:]) != (STATE_DIM,):
            raise ValueError(f"The state reward network takes states (B, {STATE_DIM}), got {tuple(state.shape)}.")
        x = [state]
        if self.cfg.kind == "energy":
            if start is None or goal is None:
                raise ValueError("An energy reward f(s | s_start, s_goal) needs the start and goal states.")
            x += [start, goal]
        return self.net(torch.cat([state_features(v) for v in x], -1))
