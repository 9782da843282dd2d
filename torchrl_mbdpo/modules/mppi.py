"""TD-MPC2's MPPI planner (arXiv 2310.16828 §3.2; ``tdmpc2/tdmpc2.py: _plan``): the sampler loop.

The TD-MPC2 sibling of :func:`~torchrl_mbdpo.modules.planning.mc_diffusion_sample`: the same world
model, the same return estimate (``world_model_value`` with no energy term) and the same batched
layout ``(B, N, H, A)``; the refit of each iteration is :func:`~torchrl_mbdpo.modules.functional.mppi_elite_moments`.
Differences from MBDPO's sampler (official ``MBDPO/diffusion.py:59-192``): the proposal std is fitted to
the elites (clamped to ``[min_std, max_std]``), the elite weights are ``exp(temperature * (V - max V))``
without z-scoring, the policy-prior trajectories are drawn once per call, the executed sequence is one
elite drawn in proportion to its weight, exploration noise is the elite std, and the warm start is the
previous *mean*.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ..config import UserError
from .functional import categorical_sample, mppi_elite_moments

__all__ = ["MPPIConfig", "mppi_sample"]


@dataclass
class MPPIConfig:
    """Planner settings; defaults are TD-MPC2's."""

    horizon: int = 3  # planning horizon H
    iterations: int = 6  # + 2 when the action has 20 or more dims, as TD-MPC2
    num_samples: int = 512  # candidate action sequences per iteration
    num_elites: int = 64  # top candidates refitting the mean and std
    num_pi_trajs: int = 24  # candidates from the policy prior (drawn once per call)
    temperature: float = 0.5  # weights exp(temperature (V - max V))
    min_std: float = 0.05  # lower clamp of the fitted std
    max_std: float = 2.0  # upper clamp of the fitted std (and the initial std)

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Every rule of these settings (raises :class:`~torchrl_mbdpo.config.UserError`)."""
        if self.iterations < 1 or self.horizon < 1:
            raise UserError("mppi.iterations and mppi.horizon must be >= 1")
        if not 0 <= self.num_pi_trajs < self.num_samples:
            raise UserError(f"mppi.num_pi_trajs={self.num_pi_trajs} must lie in [0, num_samples={self.num_samples})")
        if not 1 <= self.num_elites <= self.num_samples:
            raise UserError(f"mppi.num_elites={self.num_elites} must lie in [1, num_samples={self.num_samples}]")
        if not 0 < self.min_std <= self.max_std:
            raise UserError(f"need 0 < mppi.min_std <= mppi.max_std, got {self.min_std}, {self.max_std}")
        if self.temperature <= 0:
            raise UserError(f"mppi.temperature must be > 0, got {self.temperature}")

    def num_iterations(self, action_dim: int) -> int:
        return self.iterations + 2 * (action_dim >= 20)


def mppi_sample(
    mean0: torch.Tensor,
    value_fn: Callable[[torch.Tensor], torch.Tensor],
    pi_actions: torch.Tensor | None,
    cfg: MPPIConfig,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run MPPI; returns ``(plan, mean, std)``, each ``(B, H, A)``.

    Args:
        mean0: warm-start mean (the previous mean shifted one step, zeros at an episode start).
        value_fn: maps candidates ``(B, N, H, A)`` to returns ``(B, N)``.
        pi_actions: ``(B, P, H, A)`` policy-prior sequences (drawn once, kept in every iteration), or None.
        mask: ``(B, A)`` active action dims (multi-task), or None.

    ``plan`` is one elite of the last iteration, drawn with probability equal to its weight (TD-MPC2's
    Gumbel-max pick); the actor executes ``plan[:, 0]``, with ``std[:, 0]`` noise when exploring.
    """
    B, H, A = mean0.shape
    P = 0 if pi_actions is None else pi_actions.shape[1]
    mask_h = None if mask is None else mask.unsqueeze(1)  # (B, 1, A)
    mean, std = mean0, torch.full_like(mean0, cfg.max_std)
    for _ in range(cfg.num_iterations(A)):
        noise = torch.randn(B, cfg.num_samples - P, H, A, device=mean.device, dtype=mean.dtype)
        candidates = (mean.unsqueeze(1) + std.unsqueeze(1) * noise).clamp(-1, 1)
        if P:
            candidates = torch.cat([pi_actions.to(mean.dtype), candidates], dim=1)
        if mask_h is not None:
            candidates = candidates * mask_h.unsqueeze(1)
        values = torch.nan_to_num(value_fn(candidates))
        mean, std, elites, weights = mppi_elite_moments(values, candidates, cfg.num_elites, cfg.temperature, cfg.min_std, cfg.max_std)
        if mask_h is not None:
            mean, std = mean * mask_h, std * mask_h
    choice = categorical_sample(weights)  # torch.multinomial(weights, 1)'s draw, without its host sync
    plan = elites[torch.arange(B, device=elites.device), choice]
    return plan, mean, std
