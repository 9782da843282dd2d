"""Pure tensor functions for the MBDPO / TD-MPC2 math.

Each function is one equation of the spec (``shared/docs/mbdpo-algorithm.md``), free of modules and
TensorDicts so it can be tested in isolation. The symlog two-hot support reuses TorchRL's
``two_hot_*`` helpers: TD-MPC2 places its 101 bins evenly in *symlog* space, so we encode
``symlog(x)`` on that support and ``symexp`` the decoded expectation.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torchrl.modules.functional import symexp, symlog
from torchrl.objectives import two_hot_cross_entropy, two_hot_decode, two_hot_encode

__all__ = [
    "symlog",
    "symexp",
    "make_bins",
    "two_hot",
    "two_hot_inv",
    "soft_ce",
    "squash_log_std",
    "PolicySample",
    "gaussian_tanh_policy",
    "timestep_embedding",
    "discount_from_episode_length",
    "diffusion_schedule",
]


def make_bins(num_bins: int = 101, vmin: float = -10.0, vmax: float = 10.0) -> torch.Tensor:
    """Support of the discrete regression, evenly spaced in symlog space (spec §1.2)."""
    return torch.linspace(vmin, vmax, num_bins)


def two_hot(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Soft two-hot encoding of raw scalars ``x`` (trailing singleton dim optional) in symlog space."""
    if x.shape[-1:] == (1,):
        x = x.squeeze(-1)
    return two_hot_encode(symlog(x), bins)


def two_hot_inv(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Scalar value of two-hot logits: ``symexp(sum softmax(logits) * bins)``; keeps a trailing dim of 1."""
    return symexp(two_hot_decode(logits.to(bins.dtype), bins)).unsqueeze(-1)  # float32 under bf16 autocast


def soft_ce(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross entropy between logits and the two-hot encoding of raw targets; shape ``logits.shape[:-1] + (1,)``."""
    if target.shape[-1:] == (1,):
        target = target.squeeze(-1)
    return two_hot_cross_entropy(logits.to(bins.dtype), symlog(target), bins).unsqueeze(-1)


def squash_log_std(raw: torch.Tensor, log_std_min: float, log_std_max: float) -> torch.Tensor:
    """Map an unbounded network output into ``[log_std_min, log_std_max]`` with a tanh (spec §1.2)."""
    return log_std_min + 0.5 * (log_std_max - log_std_min) * (torch.tanh(raw) + 1)


class PolicySample(NamedTuple):
    action: torch.Tensor  # tanh(mu + eps * std), in [-1, 1]
    mean: torch.Tensor  # tanh(mu)
    log_prob: torch.Tensor  # log-density of the squashed action, (..., 1)
    scaled_entropy: torch.Tensor  # ~ -A_eff * Gaussian log-density (TD-MPC2's entropy bonus), (..., 1)


def gaussian_tanh_policy(
    mu: torch.Tensor,
    raw_log_std: torch.Tensor,
    eps: torch.Tensor,
    log_std_min: float = -10.0,
    log_std_max: float = 2.0,
    mask: torch.Tensor | None = None,
) -> PolicySample:
    """TD-MPC2's Gaussian-tanh policy prior (spec §1.2 "Policy prior"), reparameterised by ``eps``.

    ``mask`` (multi-task action masks) zeroes the padded action dims of ``mu``, ``log_std`` and ``eps``.
    The "scaled entropy" multiplies the pre-tanh log-density by the number of active action dims;
    it is TD-MPC2's behaviour and is reproduced as is.
    """
    log_std = squash_log_std(raw_log_std, log_std_min, log_std_max)
    if mask is not None:
        mu, log_std, eps = mu * mask, log_std * mask, eps * mask
        action_dims = mask.sum(-1, keepdim=True)
    else:
        action_dims = eps.shape[-1]
    log_prob = (-0.5 * eps.pow(2) - log_std - 0.9189385).sum(-1, keepdim=True)
    scaled_log_prob = log_prob * action_dims
    u = mu + eps * log_std.exp()
    action = torch.tanh(u)
    log_prob = log_prob - torch.log(torch.relu(1 - action.pow(2)) + 1e-6).sum(-1, keepdim=True)
    scaled_entropy = -log_prob * (scaled_log_prob / (log_prob + 1e-8))
    return PolicySample(action, torch.tanh(mu), log_prob, scaled_entropy)


def timestep_embedding(tau: torch.Tensor, dim: int = 64) -> torch.Tensor:
    """Sinusoidal embedding of the integer denoising step (spec §1.2 "Time embedding"); no MLP follows."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=tau.device, dtype=torch.float32) / (half - 1))
    args = tau.float().unsqueeze(-1) * freqs
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


def discount_from_episode_length(
    episode_length: int, denom: float = 5.0, low: float = 0.95, high: float = 0.995
) -> float:
    """TD-MPC2's per-task discount heuristic: ``clip((L/5 - 1)/(L/5), 0.95, 0.995)`` (0.99 for L=500)."""
    frac = episode_length / denom
    return float(min(max((frac - 1) / frac, low), high))


def diffusion_schedule(num_steps: int = 20, beta0: float = 1e-4, betaT: float = 1e-2):
    """Linear-beta DDPM schedule of the planner: returns ``(alphas, alphas_cumprod)``, each ``(T,)``."""
    num_steps = max(num_steps, 2)
    betas = torch.linspace(beta0, betaT, num_steps)
    alphas = 1.0 - betas
    return alphas, torch.cumprod(alphas, 0)
