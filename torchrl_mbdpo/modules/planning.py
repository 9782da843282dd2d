"""The sampler loops of MBDPO's model-based diffusion planner (arXiv 2605.26282 §3; official
``MBDPO/diffusion.py:59-192``) and the world-model rollouts they evaluate.

The sampler runs ``T-1`` reverse steps of a DDPM over action sequences ``x`` of shape ``(B, H, A)``
(``B`` environments planned at once). At each step the score is estimated by Monte Carlo: candidates
are drawn around the current denoised mean, rolled through the world model, weighted by their
z-scored, energy-shaped returns (top elites, softmax with a temperature), and the weighted mean
``a_bar`` gives ``s = (-x + sqrt(abar_t) a_bar) / (1 - abar_t)``. Every formula of a step lives in
:mod:`torchrl_mbdpo.modules.functional` (:func:`~.functional.diffusion_proposal`,
:func:`~.functional.elite_weighted_mean`, :func:`~.functional.mc_score`, :func:`~.functional.denoise_step`);
this module holds the loops. There is no host synchronisation inside them: schedule coefficients are
Python floats and every branch on data is a ``where``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..config import UserError
from .functional import denoise_step, diffusion_proposal, diffusion_schedule, elite_weighted_mean, mc_score

__all__ = [
    "PlannerConfig",
    "mc_diffusion_sample",
    "score_network_sample",
    "world_model_value",
    "policy_rollout",
]


@dataclass
class PlannerConfig:
    """Planner settings; defaults are the official code's (``MBDPO/cfgs/config.yaml:54-67``)."""

    horizon: int = 3  # planning horizon H (also the world model's and the replay slices')
    steps: int = 20  # diffusion steps T; T-1 reverse iterations are run
    beta0: float = 1e-4  # first noise level of the DDPM schedule
    betaT: float = 1e-2  # last noise level of the DDPM schedule
    num_samples: int = 512  # candidate action sequences per denoising step
    num_elites: int = 64  # top candidates averaged, weighted by their z-scored returns
    num_pi_trajs: int = 24  # candidates from the policy prior
    temperature: float = 0.5  # softmax temperature of the elite weights
    action_noise: float = 0.05  # exploration noise on the executed action (training only)
    energy_eta: float = 0.01  # weight of the normalised energy in the return (paper table: 0.1)
    score_source: str = "mc"  # "mc": Monte-Carlo score; "network": amortised score network only

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Every rule of these settings (raises :class:`~torchrl_mbdpo.config.UserError`)."""
        if self.score_source not in ("mc", "network"):
            raise UserError(f"planner.score_source must be 'mc' or 'network', got {self.score_source!r}")
        if self.num_samples < 1 or self.steps < 1 or self.horizon < 1:
            raise UserError("planner.num_samples, planner.steps and planner.horizon must be >= 1")
        if not 0 <= self.num_pi_trajs <= self.num_samples:
            raise UserError(f"planner.num_pi_trajs={self.num_pi_trajs} must lie in [0, num_samples={self.num_samples}]")
        if not 1 <= self.num_elites <= self.num_samples:
            raise UserError(f"planner.num_elites={self.num_elites} must lie in [1, num_samples={self.num_samples}]")
        if not 0 < self.beta0 <= self.betaT < 1:
            raise UserError(f"need 0 < planner.beta0 <= planner.betaT < 1, got {self.beta0}, {self.betaT}")
        if self.temperature <= 0 or self.action_noise < 0 or self.energy_eta < 0:
            raise UserError("planner.temperature must be > 0, planner.action_noise and planner.energy_eta >= 0")

    def schedule(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``(alphas, alphas_cumprod)`` as Python floats, so indexing them in the loop never syncs. Computed once
        per ``(steps, beta0, betaT)`` (on the CPU, whatever the default device) and cached: a plan reads
        constants, with no ``.tolist()`` (a graph break under ``torch.compile``, a sync on a GPU)."""
        return cached_schedule(self.steps, self.beta0, self.betaT)


_SCHEDULES: dict[tuple, tuple[tuple[float, ...], tuple[float, ...]]] = {}


def cached_schedule(steps: int, beta0: float, betaT: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """:func:`~.functional.diffusion_schedule` as two tuples of Python floats (float32 values), cached."""
    key = (int(steps), float(beta0), float(betaT))
    if key not in _SCHEDULES:
        with torch.device("cpu"):
            alphas, abar = diffusion_schedule(*key)
        _SCHEDULES[key] = (tuple(alphas.double().tolist()), tuple(abar.double().tolist()))
    return _SCHEDULES[key]


def _expand_mask(mask, shape):
    return None if mask is None else mask.reshape(mask.shape[0], *([1] * (len(shape) - 2)), mask.shape[-1])


def mc_diffusion_sample(
    mean0: torch.Tensor,
    value_fn: Callable[[torch.Tensor], torch.Tensor],
    policy_fn: Callable[[int], torch.Tensor] | None,
    cfg: PlannerConfig,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run the Monte-Carlo diffusion sampler and return the clean plan ``x0`` ``(B, H, A)``.

    Args:
        mean0: warm-start mean ``(B, H, A)`` (see :func:`~torchrl_mbdpo.modules.functional.warm_start_mean`).
        value_fn: maps candidates ``(B, N, H, A)`` to returns ``(B, N)``.
        policy_fn: returns ``cfg.num_pi_trajs`` policy-prior sequences ``(B, P, H, A)``; redrawn at
            every step, they replace the first ``P`` noisy candidates.
        mask: ``(B, A)`` active action dims (multi-task), or ``None``.
    """
    alphas, abar = cfg.schedule()
    T = len(abar)
    B, H, A = mean0.shape
    mask_x = _expand_mask(mask, mean0.shape)
    mask_c = None if mask is None else mask_x.unsqueeze(1)
    x = math.sqrt(abar[T - 1]) * mean0
    x = x if mask_x is None else x * mask_x
    P = cfg.num_pi_trajs if policy_fn is not None else 0
    for t in range(T - 1, 0, -1):
        noise = torch.randn(B, cfg.num_samples - P, H, A, device=x.device, dtype=x.dtype)
        candidates = diffusion_proposal(x.unsqueeze(1), abar[t], noise)
        if P:
            candidates = torch.cat([policy_fn(P).to(x.dtype), candidates], dim=1)
        candidates = candidates if mask_c is None else candidates * mask_c
        candidates = candidates.clamp(-1, 1)
        values = torch.nan_to_num(value_fn(candidates))
        a_bar = elite_weighted_mean(values, candidates, cfg.num_elites, cfg.temperature)
        x = denoise_step(x, mc_score(x, abar[t], a_bar), abar[t], alphas[t], mask_x)
    x = x if mask_x is None else x * mask_x
    return x.clamp(-1, 1)


def score_network_sample(
    mean0: torch.Tensor,
    score_fn: Callable[[torch.Tensor, int], torch.Tensor],
    cfg: PlannerConfig,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Amortised inference (arXiv 2605.26282 §3.3, eq. 16; official ``MBDPO/diffusion.py:97-107``): the same
    reverse chain, with the learned score ``score_fn(x, tau)`` in place of the Monte-Carlo estimate; no
    world-model rollouts. ``tau`` runs from ``T-1`` down to 1."""
    alphas, abar = cfg.schedule()
    T = len(abar)
    mask_x = _expand_mask(mask, mean0.shape)
    x = math.sqrt(abar[T - 1]) * mean0
    x = x if mask_x is None else x * mask_x
    for t in range(T - 1, 0, -1):
        x = denoise_step(x, score_fn(x, t), abar[t], alphas[t], mask_x)
    x = x if mask_x is None else x * mask_x
    return x.clamp(-1, 1)


def world_model_value(wm, z: torch.Tensor, actions: torch.Tensor, task, discount, eta: float, energy_norm) -> torch.Tensor:
    """Energy-shaped H-step return of action sequences (arXiv 2605.26282 §3; official ``MBDPO/mbdpo.py:252-288``).

    ``G = sum_t gamma^t (1 - term_t) (r_hat_t + eta * normalized_energy(F(z_t, a_t)))
    + gamma^H (1 - term_H) Q_avg(z_H, a_H ~ pi)``, with ``z_{t+1} = d(z_t, a_t)``.
    ``actions``: ``(*M, H, A)``; ``z``: ``(*M, L)``, or ``(*M[:-1], L)`` when all candidates of a row
    start from one latent (the planner: ``(B, L)`` latents, ``(B, N, H, A)`` candidates), which lets the
    first step compute the latent's share of the first layers once (see ``TaskConditioned``). ``task``
    is shaped like ``z`` without its last dim; ``discount`` is a float or broadcasts against ``(*M, 1)``.
    Returns ``(*M, 1)``. F is evaluated at the pre-transition latent; the terminal Q has no energy term;
    episodic tasks stop accumulating once the termination head fires.
    """
    task = None if task is None else task.reshape(z.shape[:-1])
    G = disc = alive = 1.0
    for t in range(actions.shape[-2]):
        a = actions[..., t, :]
        r = wm.decode_reward(wm.reward(z, a, task))
        if eta:
            r = r + eta * energy_norm(wm.energy_logit(z, a, task))
        z = wm.next(z, a, task)
        if task is not None and task.ndim < z.ndim - 1:  # from the shared latent to one per candidate
            task = task.unsqueeze(-1).expand(z.shape[:-1])
        G = r if t == 0 else G + disc * alive * r
        disc = disc * discount
        if wm.done_head is not None:
            alive = alive * (torch.sigmoid(wm.termination(z, task)) <= 0.5)
    q = wm.q_value(z, wm.pi(z, task).action, task, reduce="avg")
    return G + disc * alive * q


def policy_rollout(wm, z0: torch.Tensor, num: int, horizon: int, task=None) -> torch.Tensor:
    """``num`` action sequences per latent from the policy prior, rolled through the dynamics.
    ``z0``: ``(B, L)`` -> ``(B, num, H, A)``."""
    B = z0.shape[0]
    z = z0.repeat_interleave(num, dim=0)
    task = None if task is None else task.repeat_interleave(num, dim=0)
    actions = []
    for _ in range(horizon):
        a = wm.pi(z, task).action
        mask = wm.action_mask(task)
        a = (a if mask is None else a * mask).clamp(-1, 1)
        actions.append(a)
        z = wm.next(z, a, task)
    return torch.stack(actions, dim=1).view(B, num, horizon, -1)
