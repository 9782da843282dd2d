"""Pure tensor functions for the MBDPO update step (spec §2), plus the policy's ``RunningScale``.

Every function here is one equation of ``shared/docs/mbdpo-algorithm.md`` §2, free of modules and
TensorDicts so it can be tested in isolation. Tensors are **time-first**, as in the spec:
``(H, B, ...)``; ``MBDPOLoss`` permutes TorchRL's batch-first ``[B, H]`` slices before calling them.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..modules.functional import soft_ce
from ..modules.planning import mc_score

__all__ = [
    "rho_weights",
    "td_target",
    "consistency_loss",
    "rho_weighted_ce",
    "value_loss",
    "termination_loss",
    "contrastive_pairs",
    "negative_candidates",
    "select_hard_negatives",
    "binary_contrastive_loss",
    "ema_moments",
    "score_candidates",
    "mc_score_target",
    "policy_loss",
    "percentile",
    "RunningScale",
]


# --------------------------------------------------------------------------- §2.1 model losses
def rho_weights(rho: float, horizon: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Temporal weights ``rho^t``, ``t = 0..horizon-1``: errors far along the imagined rollout count less."""
    return torch.pow(torch.as_tensor(rho, dtype=dtype, device=device), torch.arange(horizon, device=device, dtype=dtype))


def td_target(
    reward: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, discount: torch.Tensor | float
) -> torch.Tensor:
    """TD(0) target ``r + gamma * (1 - terminated) * Q'`` (spec §2.1).

    Only ``terminated`` stops the bootstrap: a truncated (time-limit) or slice-end transition still
    bootstraps, since the state after it has a value.
    """
    return reward + discount * (1 - terminated.to(reward.dtype)) * next_q


def consistency_loss(z_pred: torch.Tensor, z_target: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """``(1/H) sum_t rho^t MSE(z_{t+1}, zn_{t+1})``, MSE averaged over batch and latent dims. Shapes ``(H, B, L)``."""
    mse = (z_pred.float() - z_target.float()).pow(2).flatten(1).mean(1)  # float32 under bf16 autocast
    return (mse * rho).sum() / z_pred.shape[0]


def rho_weighted_ce(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Reward loss ``(1/H) sum_t rho^t mean_b CE(logits_t, twohot(target_t))``.

    ``logits``: ``(H, B, K)``; ``target``: ``(H, B, 1)`` raw scalars.
    """
    ce = soft_ce(logits, target, bins).flatten(1).mean(1)
    return (ce * rho).sum() / logits.shape[0]


def value_loss(q_logits: torch.Tensor, td_targets: torch.Tensor, bins: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """``(1/(H num_q)) sum_t rho^t sum_q mean_b CE(Q_q(z_t, a_t), twohot(TD_t))`` over **all** heads.

    ``q_logits``: ``(num_q, H, B, K)``; ``td_targets``: ``(H, B, 1)``.
    """
    num_q, horizon = q_logits.shape[:2]
    ce = soft_ce(q_logits, td_targets.expand(num_q, *td_targets.shape), bins).flatten(2).mean(2)
    return (ce * rho).sum() / (horizon * num_q)


def termination_loss(logits: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
    """Plain BCE of the termination head on ``z_1..z_H`` (no ``rho`` weighting, as the official code)."""
    return F.binary_cross_entropy_with_logits(logits.float(), terminated.float())


# --------------------------------------------------------------------------- §2.2 contrastive energy loss
def contrastive_pairs(
    zs: torch.Tensor, actions: torch.Tensor, task: torch.Tensor | None = None, mode: str = "official"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Flatten latents ``(H, B, L)``, buffer actions ``(H, B, A)`` and tasks ``(B,)`` into positive pairs.

    Latents are always flattened in ``(t, b)`` order (row ``i = t*B + b``).

    - ``"official"`` reproduces the released code: actions and tasks are flattened in ``(b, t)`` order,
      so row ``i`` pairs ``z[i // B, i % B]`` with ``action[i % H, i // H]`` and ``task[i // H]``. Only
      the first and last rows line up (spec §2.2, "pairing bug").
    - ``"aligned"`` pairs each latent with its own action and task.

    Returns ``(z_flat (H*B, L), a_flat (H*B, A), task_flat (H*B,) or None)``.
    """
    horizon, batch = zs.shape[:2]
    z_flat = zs.reshape(horizon * batch, zs.shape[-1])
    if mode == "official":
        a_flat = actions.transpose(0, 1).reshape(horizon * batch, actions.shape[-1])
        task_flat = None if task is None else task.repeat_interleave(horizon)
    elif mode == "aligned":
        a_flat = actions.reshape(horizon * batch, actions.shape[-1])
        task_flat = None if task is None else task.repeat(horizon)
    else:
        raise ValueError(f"contrastive pairing must be 'official' or 'aligned', got {mode!r}")
    return z_flat, a_flat, task_flat


def negative_candidates(pi_action: torch.Tensor, noise_scale: float) -> torch.Tensor:
    """The three negative proposals per row, ``(N, 3, A)``: the policy's sampled action, the same action
    plus ``noise_scale`` Gaussian noise (clamped), and a uniform action in ``[-1, 1]``."""
    noisy = (pi_action + noise_scale * torch.randn_like(pi_action)).clamp(-1, 1)
    uniform = 2.0 * torch.rand_like(pi_action) - 1.0
    return torch.stack([pi_action, noisy, uniform], dim=1)


def select_hard_negatives(candidates: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per row, the candidate the energy net currently scores highest: the hardest negative.
    ``candidates``: ``(N, C, A)``; ``logits``: ``(N, C)`` -> ``(N, A)``."""
    idx = logits.argmax(dim=1)
    return candidates[torch.arange(candidates.shape[0], device=idx.device), idx]


def binary_contrastive_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """``0.5 (BCE(F(z, a_pos), 1) + BCE(F(z, a_neg), 0))``."""
    pos_logits, neg_logits = pos_logits.float(), neg_logits.float()
    pos = F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits))
    neg = F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits))
    return 0.5 * (pos + neg)


def ema_moments(
    mean: torch.Tensor, std: torch.Tensor, logits: torch.Tensor, momentum: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Running energy statistics: ``mu <- m mu + (1-m) mean(F)``, ``sigma <- m sigma + (1-m) max(std_biased(F), 1e-6)``."""
    logits = logits.detach()
    batch_std = logits.std(unbiased=False).clamp_min(1e-6)
    return momentum * mean + (1 - momentum) * logits.mean(), momentum * std + (1 - momentum) * batch_std


# --------------------------------------------------------------------------- §2.3 score matching
def score_candidates(x_tau: torch.Tensor, abar_tau: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Clean-plan proposals ``clamp(x_tau / sqrt(abar) + sqrt((1 - abar) / abar) * eps, -1, 1)``.

    ``x_tau``: ``(H, A)``; ``noise``: ``(N, H, A)`` -> ``(N, H, A)``.
    """
    return (x_tau / abar_tau.sqrt() + ((1 - abar_tau) / abar_tau).sqrt() * noise).clamp(-1, 1)


def mc_score_target(
    x_tau: torch.Tensor, candidates: torch.Tensor, values: torch.Tensor, abar_tau: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Monte-Carlo score target of the score network (spec §2.3).

    ``w = softmax(zscore(V) / temperature)`` (unbiased std + 1e-6, all samples, no elites),
    ``a_bar = sum_i w_i a0_i``, target ``(-x_tau + sqrt(abar) a_bar) / (1 - abar + 1e-8)``.
    ``values``: ``(N,)`` returns of ``candidates`` ``(N, H, A)``.
    """
    logits = (values - values.mean()) / (values.std() + 1e-6)
    weights = torch.softmax(logits / max(temperature, 1e-6), dim=0)
    a_bar = (weights[:, None, None] * candidates).sum(0)
    return mc_score(x_tau, abar_tau, a_bar)


# --------------------------------------------------------------------------- §2.4 policy prior
def policy_loss(q: torch.Tensor, scaled_entropy: torch.Tensor, rho: torch.Tensor, entropy_coef: float) -> torch.Tensor:
    """``mean_t [rho^t mean_b -(entropy_coef * scaled_entropy + q)]`` over ``t = 0..H``.

    ``q`` (already divided by the running scale) and ``scaled_entropy``: ``(H+1, B, 1)``.
    """
    per_step = -(entropy_coef * scaled_entropy.float() + q.float()).flatten(1).mean(1)
    return (per_step * rho).mean()


def percentile(x: torch.Tensor, q: Sequence[float]) -> torch.Tensor:
    """Percentiles ``q`` (in %) of ``x`` along its first dim, interpolated linearly between order statistics.

    A line-for-line port of TD-MPC2's ``RunningScale._percentile`` (``tdmpc2/common/scale.py``), float32
    positions included; numerically it equals ``torch.quantile(..., interpolation="linear")``.
    Returns ``(len(q), *x.shape[1:])``.
    """
    n = x.shape[0]
    ordered = torch.sort(x.reshape(n, -1), dim=0).values
    positions = torch.tensor(list(q), dtype=torch.float32, device=x.device) * (n - 1) / 100
    floored = torch.floor(positions)
    ceiled = (floored + 1).clamp_max(n - 1)
    weight_ceiled = positions - floored
    weight_floored = 1.0 - weight_ceiled
    d0 = ordered[floored.long()] * weight_floored.unsqueeze(1)
    d1 = ordered[ceiled.long()] * weight_ceiled.unsqueeze(1)
    return (d0 + d1).reshape(len(q), *x.shape[1:]).to(x.dtype)


class RunningScale(nn.Module):
    """TD-MPC2's running trimmed scale of the policy's Q values (spec §2.4).

    ``S <- lerp(S, max(P95(q) - P5(q), 1), tau)``, initialised to 1; the policy loss divides Q by ``S`` so
    its gradient does not depend on the task's reward scale. ``value`` is a buffer, so it is saved with
    the loss (the official agent loses it on reload, spec §7 bug 3).
    """

    def __init__(self, tau: float = 0.01, percentiles: tuple[float, float] = (5.0, 95.0)):
        super().__init__()
        self.tau = tau
        self.percentiles = tuple(percentiles)
        self.register_buffer("value", torch.ones(1))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        low, high = percentile(x.detach(), self.percentiles)
        new = torch.lerp(self.value, torch.clamp(high - low, min=1.0).reshape(-1)[:1].to(self.value), self.tau)
        self.value.copy_(torch.where(torch.isfinite(new), new, self.value))  # a NaN batch leaves no trace

    def forward(self, x: torch.Tensor, update: bool = False) -> torch.Tensor:
        if update:
            self.update(x)
        return x / self.value

    def extra_repr(self) -> str:
        return f"tau={self.tau}, percentiles={self.percentiles}"
