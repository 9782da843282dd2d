"""The equations of MBDPO and of the TD-MPC2 parts it inherits, as pure tensor functions.

This module is the one home of MBDPO's math (DMO's equations live in DMO's own package): the modules
(world model, planners) and the losses (``MBDPOLoss``, ``TDMPC2Loss``) own the state (networks, running statistics, target weights)
and call these functions for every formula. Each function is free of modules and TensorDicts, so it can
be tested against a hand-worked case, and its docstring names its source:

- **MBDPO**: Model-Based Diffusion Policy Optimization, arXiv 2605.26282. The paper's math was lost in
  the text extraction we work from, so where no equation number is known the section is cited together
  with the official code (the paper authors' MBDPO repository at commit ``5ff5a06``; ``file:line`` relative to its root).
  Where the official code departs from the paper, the code's behaviour is implemented and the departure
  is stated.
- **TD-MPC2**: Hansen, Su and Wang, "TD-MPC2: Scalable, Robust World Models for Continuous Control",
  arXiv 2310.16828, with its code (``nicklashansen/tdmpc2``). MBDPO's world model, losses and policy prior
  are TD-MPC2's.

Layout conventions: the update-step functions are **time-first**, ``(H, B, ...)`` (the official code's
layout; ``MBDPOLoss`` permutes TorchRL's batch-first ``[B, H]`` slices before calling them); the
planner functions are batched over environments, ``(B, N, H, A)`` for ``N`` candidate action sequences.
The symlog two-hot support reuses TorchRL's ``two_hot_*`` helpers: TD-MPC2 places its bins evenly in
*symlog* space, so ``symlog(x)`` is encoded on that support and the decoded expectation is ``symexp``-ed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchrl.modules.functional import symexp, symlog
from torchrl.objectives import two_hot_cross_entropy, two_hot_decode, two_hot_encode

__all__ = [
    # TD-MPC2: discrete regression, policy prior, discount
    "symlog",
    "symexp",
    "make_bins",
    "two_hot",
    "two_hot_inv",
    "soft_ce",
    "squash_log_std",
    "PolicySample",
    "gaussian_tanh_policy",
    "discount_from_episode_length",
    # TD-MPC2: model and policy losses
    "rho_weights",
    "td_target",
    "consistency_loss",
    "rho_weighted_ce",
    "value_loss",
    "termination_loss",
    "policy_loss",
    "percentile",
    "random_q_pair",
    # TD-MPC2: MPPI
    "mppi_elite_moments",
    "categorical_sample",
    # MBDPO: energy network
    "contrastive_pairs",
    "negative_candidates",
    "select_hard_negatives",
    "binary_contrastive_loss",
    "ema_moments",
    "normalized_energy",
    # MBDPO: model-based diffusion
    "diffusion_schedule",
    "timestep_embedding",
    "warm_start_mean",
    "diffusion_proposal",
    "elite_weighted_mean",
    "mc_score",
    "denoise_step",
    "score_candidates",
    "mc_score_target",
]


# ============================================================================================ TD-MPC2
# The world model, its losses and the policy prior of MBDPO are TD-MPC2's (arXiv 2605.26282 §3 builds on
# TD-MPC2; the official MBDPO/common/*.py files are AST-identical to tdmpc2/common/*.py).


# --------------------------------------------------------------------------- discrete regression
def make_bins(num_bins: int = 101, vmin: float = -10.0, vmax: float = 10.0) -> torch.Tensor:
    """Support of the discrete (two-hot) regression of rewards and values: ``num_bins`` points evenly
    spaced on ``[vmin, vmax]`` in symlog space (TD-MPC2, arXiv 2310.16828 §3.1 "discrete regression in a
    log-transformed space"; official ``MBDPO/common/math.py:6-10``)."""
    return torch.linspace(vmin, vmax, num_bins)


def two_hot(x: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Soft two-hot encoding of raw scalars ``x`` (trailing singleton dim optional) on ``bins``, in symlog
    space (TD-MPC2 §3.1; official ``MBDPO/common/math.py:43-88``). Values outside the support are clamped."""
    if x.shape[-1:] == (1,):
        x = x.squeeze(-1)
    return two_hot_encode(symlog(x), bins)


def two_hot_inv(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Scalar value of two-hot logits, ``symexp(sum_k softmax(logits)_k bins_k)``, keeping a trailing dim of
    1 (TD-MPC2 §3.1; official ``MBDPO/common/math.py:43-88``). Computed in the bins' dtype (float32 under
    bf16 autocast)."""
    return symexp(two_hot_decode(logits.to(bins.dtype), bins)).unsqueeze(-1)


def soft_ce(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross entropy ``-sum_k two_hot(target)_k log_softmax(logits)_k`` of raw scalar targets; shape
    ``logits.shape[:-1] + (1,)`` (TD-MPC2 §3.1; official ``MBDPO/common/math.py:43-88``)."""
    if target.shape[-1:] == (1,):
        target = target.squeeze(-1)
    return two_hot_cross_entropy(logits.to(bins.dtype), symlog(target), bins).unsqueeze(-1)


# --------------------------------------------------------------------------- policy prior
def squash_log_std(raw: torch.Tensor, log_std_min: float, log_std_max: float) -> torch.Tensor:
    """``log_std_min + (log_std_max - log_std_min) (tanh(raw) + 1) / 2``: an unbounded network output
    mapped into ``[log_std_min, log_std_max]`` (TD-MPC2's policy prior; official
    ``MBDPO/common/world_model.py:209-251``)."""
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
    """TD-MPC2's Gaussian-tanh policy prior, reparameterised by ``eps`` (TD-MPC2 §3.1 "policy prior";
    official ``MBDPO/common/world_model.py:209-251`` and ``MBDPO/common/math.py:13-30``).

    ``u = mu + eps exp(log_std)``, ``action = tanh(u)``; ``log_prob`` is the Gaussian log-density of ``u``
    (``sum -eps^2/2 - log_std - log(2 pi)/2``) minus ``sum log(relu(1 - tanh(u)^2) + 1e-6)``.
    ``mask`` (multi-task action masks, TD-MPC2 §3.3) zeroes the padded dims of ``mu``, ``log_std`` and
    ``eps``. The "scaled entropy" is ``-log_prob * (A_eff * gauss) / (log_prob + 1e-8)``, i.e. about
    ``-A_eff * gauss`` with ``A_eff`` the number of active dims: TD-MPC2's behaviour, reproduced as is.
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


# --------------------------------------------------------------------------- discount
def discount_from_episode_length(episode_length: int, denom: float = 5.0, low: float = 0.95, high: float = 0.995) -> float:
    """TD-MPC2's per-task discount heuristic ``gamma = clip((L/5 - 1) / (L/5), 0.95, 0.995)`` for episodes
    of ``L`` agent steps: 0.99 for ``L = 500`` (DMControl), 0.95 for ``L = 100`` (Meta-World) (TD-MPC2,
    arXiv 2310.16828, hyper-parameters appendix; official ``MBDPO/mbdpo.py:65-72,102-118``, config keys
    ``discount_denom``, ``discount_min``, ``discount_max``). The one implementation of the rule: task specs,
    datasets and fine-tuning read it from here."""
    frac = episode_length / denom
    return float(min(max((frac - 1) / frac, low), high))


# --------------------------------------------------------------------------- model losses
def rho_weights(rho: float, horizon: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Temporal weights ``rho^t``, ``t = 0..horizon-1``: errors further along the imagined rollout count less
    (TD-MPC2 §3.1, the ``lambda^t`` of its objective; official ``MBDPO/mbdpo.py:589-680``, ``rho = 0.5``)."""
    # ``full``, not ``as_tensor``: a fill on the device, no host-to-device copy (CUDA-graph capture forbids one).
    return torch.pow(torch.full((), rho, dtype=dtype, device=device), torch.arange(horizon, device=device, dtype=dtype))


def td_target(reward: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, discount: torch.Tensor | float) -> torch.Tensor:
    """TD(0) target ``r_t + gamma (1 - terminated_t) Q'(z_{t+1}, a')`` (TD-MPC2 §3.1; official
    ``MBDPO/mbdpo.py:589-680``; ``Q'`` is the min over target heads 0 and 1, ``mbdpo.py:585-587``).

    Only ``terminated`` stops the bootstrap: a truncated (time-limit) or slice-end transition still
    bootstraps, since the state after it has a value.
    """
    return reward + discount * (1 - terminated.to(reward.dtype)) * next_q


def consistency_loss(z_pred: torch.Tensor, z_target: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Latent consistency ``(1/H) sum_t rho^t MSE(d(z_t, a_t), sg(enc(o_{t+1})))``, the MSE averaged over
    batch and latent dims; shapes ``(H, B, L)`` (TD-MPC2 §3.1 "joint-embedding prediction"; official
    ``MBDPO/mbdpo.py:589-680``). Computed in float32 under bf16 autocast."""
    mse = (z_pred.float() - z_target.float()).pow(2).flatten(1).mean(1)
    return (mse * rho).sum() / z_pred.shape[0]


def rho_weighted_ce(logits: torch.Tensor, target: torch.Tensor, bins: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Reward loss ``(1/H) sum_t rho^t mean_b CE(R(z_t, a_t), two_hot(r_t))`` (TD-MPC2 §3.1; official
    ``MBDPO/mbdpo.py:589-680``). ``logits``: ``(H, B, K)``; ``target``: ``(H, B, 1)`` raw scalars."""
    ce = soft_ce(logits, target, bins).flatten(1).mean(1)
    return (ce * rho).sum() / logits.shape[0]


def value_loss(q_logits: torch.Tensor, td_targets: torch.Tensor, bins: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Value loss ``(1/(H num_q)) sum_t rho^t sum_q mean_b CE(Q_q(z_t, a_t), two_hot(TD_t))`` over **all**
    heads (TD-MPC2 §3.1; official ``MBDPO/mbdpo.py:589-680``). ``q_logits``: ``(num_q, H, B, K)``;
    ``td_targets``: ``(H, B, 1)``."""
    num_q, horizon = q_logits.shape[:2]
    ce = soft_ce(q_logits, td_targets.expand(num_q, *td_targets.shape), bins).flatten(2).mean(2)
    return (ce * rho).sum() / (horizon * num_q)


def termination_loss(logits: torch.Tensor, terminated: torch.Tensor) -> torch.Tensor:
    """Plain BCE of the termination head on ``z_1..z_H`` for episodic tasks, without ``rho`` weighting, as
    the official code (``MBDPO/mbdpo.py:589-680``; TD-MPC2's episodic extension)."""
    return F.binary_cross_entropy_with_logits(logits.float(), terminated.float())


# --------------------------------------------------------------------------- policy loss
def policy_loss(q: torch.Tensor, scaled_entropy: torch.Tensor, rho: torch.Tensor, entropy_coef: float) -> torch.Tensor:
    """Policy-prior loss ``mean_t [rho^t mean_b -(entropy_coef * scaled_entropy + Q / S)]`` over
    ``t = 0..H`` (TD-MPC2 §3.1, maximum-entropy policy objective; official ``MBDPO/mbdpo.py:517-559``).

    ``q`` (already divided by the running scale ``S``) and ``scaled_entropy``: ``(H+1, B, 1)``.
    """
    per_step = -(entropy_coef * scaled_entropy.float() + q.float()).flatten(1).mean(1)
    return (per_step * rho).mean()


def percentile(x: torch.Tensor, q: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Percentiles ``q`` (in %) of ``x`` along its first dim, interpolated linearly between order statistics:
    the P5/P95 of TD-MPC2's running Q scale ``S <- lerp(S, max(P95 - P5, 1), tau)`` (TD-MPC2 §3.1 "moving
    5-95% percentiles"; official ``MBDPO/common/scale.py``).

    A line-for-line port of ``RunningScale._percentile``, float32 positions included; numerically it equals
    ``torch.quantile(..., interpolation="linear")``. ``q`` may be a tensor on ``x``'s device (as
    :class:`~torchrl_mbdpo.modules.RunningScale` keeps it), so that no tensor is built from host data per call.
    Returns ``(len(q), *x.shape[1:])``.
    """
    n = x.shape[0]
    ordered = torch.sort(x.reshape(n, -1), dim=0).values
    if isinstance(q, torch.Tensor):
        q = q.to(device=x.device, dtype=torch.float32)
    else:
        q = torch.tensor(list(q), dtype=torch.float32, device=x.device)
    positions = q * (n - 1) / 100
    floored = torch.floor(positions)
    ceiled = (floored + 1).clamp_max(n - 1)
    weight_ceiled = positions - floored
    weight_floored = 1.0 - weight_ceiled
    d0 = ordered[floored.long()] * weight_floored.unsqueeze(1)
    d1 = ordered[ceiled.long()] * weight_ceiled.unsqueeze(1)
    return (d0 + d1).reshape(q.shape[0], *x.shape[1:]).to(x.dtype)


def random_q_pair(num_q: int, device=None) -> torch.Tensor:
    """Two distinct Q heads drawn uniformly, ``randperm(num_q)[:2]`` (TD-MPC2's ``Q(..., return_type="min"/"avg")``;
    official ``MBDPO/common/world_model.py``). With two heads the pair is ``arange(2)``: every reduction over
    the pair (min, mean) is symmetric, so this is the same distribution without a draw (and Inductor's
    pattern matcher fails on ``randperm(2)``)."""
    if num_q == 2:
        return torch.arange(2, device=device)
    return torch.randperm(num_q, device=device)[:2]


def categorical_sample(weights: torch.Tensor) -> torch.Tensor:
    """One index per row of ``weights`` ``(B, E)`` (non-negative, each row with a positive sum), drawn with
    probability proportional to its weight: ``argmax(w / Exp(1))``, the exponential race (Gumbel-max in
    disguise). It is the arithmetic of ``torch.multinomial(weights, 1)``'s one-sample path, same draws from
    the same generator state, without its host-side validity check (``.item()``), which forbids CUDA-graph
    capture. Returns ``(B,)`` long."""
    q = torch.empty_like(weights).exponential_(1)
    return (weights / q).argmax(-1)


# --------------------------------------------------------------------------- MPPI (the TD-MPC2 baseline's planner)
def mppi_elite_moments(
    values: torch.Tensor, candidates: torch.Tensor, num_elites: int, temperature: float, min_std: float, max_std: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One MPPI refit: the top-``num_elites`` candidates by return, weights ``w = softmax(temperature V)``
    over them (TD-MPC2's ``exp(temperature (V - max V))``, normalised), and the weighted mean and std of
    the elites, the std clamped to ``[min_std, max_std]`` (TD-MPC2 §3.2 "model predictive control with a
    policy prior"; ``tdmpc2/tdmpc2.py: _plan``). MBDPO replaces this planner (arXiv 2605.26282 §3).

    ``values``: ``(B, N)``; ``candidates``: ``(B, N, H, A)``. Returns ``(mean (B, H, A), std (B, H, A),
    elites (B, E, H, A), weights (B, E))``.
    """
    elite_values, idx = torch.topk(values, num_elites, dim=1)
    elites = candidates.gather(1, idx[..., None, None].expand(-1, -1, *candidates.shape[2:]))
    weights = torch.softmax(temperature * elite_values, dim=1)
    w = weights[..., None, None]
    mean = (w * elites).sum(1)
    std = (w * (elites - mean.unsqueeze(1)).square()).sum(1).sqrt().clamp(min_std, max_std)
    return mean, std, elites, weights


# ============================================================================================ MBDPO
# arXiv 2605.26282. MBDPO is TD-MPC2 with (1) an energy network F(z, a) trained contrastively, whose
# normalised output shapes the planner's returns, and (2) a model-based diffusion planner in place of
# MPPI, optionally amortised by a score network.


# --------------------------------------------------------------------------- energy network
def contrastive_pairs(
    zs: torch.Tensor, actions: torch.Tensor, task: torch.Tensor | None = None, mode: str = "official"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Positive pairs of the energy loss: latents ``(H, B, L)``, buffer actions ``(H, B, A)`` and tasks
    ``(B,)`` flattened to rows (arXiv 2605.26282, energy-based critic, eq. 9; official
    ``MBDPO/mbdpo.py:346-356``).

    Latents are always flattened in ``(t, b)`` order (row ``i = t*B + b``).

    - ``"official"`` reproduces the released code: actions and tasks are flattened in ``(b, t)`` order, so
      row ``i`` pairs ``z[i // B, i % B]`` with ``action[i % H, i // H]`` and ``task[i // H]``. Only the
      first and last rows line up (a bug of the official code, kept for parity).
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
    """The three negative proposals per row, ``(N, 3, A)``: the policy prior's sampled action, the same
    action plus ``noise_scale`` Gaussian noise (clamped to ``[-1, 1]``), and a uniform action in ``[-1, 1]``
    (official ``MBDPO/mbdpo.py:346-398``; the paper's eq. 9 uses in-batch negatives instead). Multi-task,
    only the policy action is masked (it comes from the masked policy prior): the noisy and uniform
    negatives keep their padded dims, as the official code."""
    noisy = (pi_action + noise_scale * torch.randn_like(pi_action)).clamp(-1, 1)
    uniform = 2.0 * torch.rand_like(pi_action) - 1.0
    return torch.stack([pi_action, noisy, uniform], dim=1)


def select_hard_negatives(candidates: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Per row, the candidate the energy network currently scores highest: the hardest negative
    (official ``MBDPO/mbdpo.py:346-398``). ``candidates``: ``(N, C, A)``; ``logits``: ``(N, C)`` -> ``(N, A)``."""
    idx = logits.argmax(dim=1)
    return candidates[torch.arange(candidates.shape[0], device=idx.device), idx]


def binary_contrastive_loss(pos_logits: torch.Tensor, neg_logits: torch.Tensor) -> torch.Tensor:
    """Energy loss ``0.5 (BCE(F(z, a_pos), 1) + BCE(F(z, a_neg), 0))`` with one hard negative per positive
    (official ``MBDPO/mbdpo.py:346-398``; the paper states an InfoNCE loss with in-batch negatives, eq. 9,
    whose optimum is the behaviour log-density ``log beta(a|z)``)."""
    pos_logits, neg_logits = pos_logits.float(), neg_logits.float()
    pos = F.binary_cross_entropy_with_logits(pos_logits, torch.ones_like(pos_logits))
    neg = F.binary_cross_entropy_with_logits(neg_logits, torch.zeros_like(neg_logits))
    return 0.5 * (pos + neg)


def ema_moments(mean: torch.Tensor, std: torch.Tensor, logits: torch.Tensor, momentum: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Running statistics of the energy logits over ``cat(pos, neg)``: ``mu <- m mu + (1-m) mean(F)``,
    ``sigma <- m sigma + (1-m) max(std_biased(F), 1e-6)`` (official ``MBDPO/mbdpo.py:346-398``, ``m = 0.99``)."""
    logits = logits.detach()
    batch_std = logits.std(unbiased=False).clamp_min(1e-6)
    return momentum * mean + (1 - momentum) * logits.mean(), momentum * std + (1 - momentum) * batch_std


def normalized_energy(logits: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, clip: float = 5.0) -> torch.Tensor:
    """The energy term of the planner's return, ``clamp((F - mu_F) / max(sigma_F, 1e-6), -clip, clip)``
    (arXiv 2605.26282, energy-shaped planning objective; official ``MBDPO/mbdpo.py:252-288``, ``clip = 5``);
    it is weighted by ``eta`` (``contrastive_eta``) in :func:`~torchrl_mbdpo.modules.planning.world_model_value`."""
    return ((logits - mean) / std.clamp_min(1e-6)).clamp(-clip, clip)


# --------------------------------------------------------------------------- model-based diffusion
def diffusion_schedule(num_steps: int = 20, beta0: float = 1e-4, betaT: float = 1e-2):
    """Linear-beta DDPM schedule of the planner, ``beta = linspace(beta0, betaT, T)``, ``alpha = 1 - beta``,
    ``abar = cumprod(alpha)``, with ``T = max(num_steps, 2)`` (arXiv 2605.26282 §3, the DDPM forward
    process of eq. 3; official ``MBDPO/diffusion.py:59-192``). Returns ``(alphas, alphas_cumprod)``, each ``(T,)``."""
    num_steps = max(num_steps, 2)
    betas = torch.linspace(beta0, betaT, num_steps)
    alphas = 1.0 - betas
    return alphas, torch.cumprod(alphas, 0)


def timestep_embedding(tau: torch.Tensor, dim: int = 64) -> torch.Tensor:
    """Sinusoidal embedding of the integer denoising step, ``[sin(tau f_k), cos(tau f_k)]`` with
    ``f_k = exp(-ln(10000) k / (dim/2 - 1))``, ``k < dim/2``; no MLP follows (input of the score network,
    arXiv 2605.26282 §3.3; official ``MBDPO/common/world_model.py:259-272``)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=tau.device, dtype=torch.float32) / (half - 1))
    args = tau.float().unsqueeze(-1) * freqs
    return torch.cat([torch.sin(args), torch.cos(args)], dim=-1)


def warm_start_mean(prev_plan: torch.Tensor, is_init: torch.Tensor) -> torch.Tensor:
    """Initial mean of the sampler: the previous clean plan ``x0`` shifted one step (last step zero), or
    zeros at an episode start (official ``MBDPO/diffusion.py:59-192``; the paper starts from ``N(0, I)``,
    arXiv 2605.26282 §3). ``prev_plan``: ``(B, H, A)``; ``is_init``: ``(B,)`` or ``(B, 1)`` bool."""
    shifted = torch.cat([prev_plan[:, 1:], torch.zeros_like(prev_plan[:, :1])], dim=1)
    return torch.where(is_init.reshape(-1, 1, 1), torch.zeros_like(shifted), shifted)


def _sqrt(x):
    return math.sqrt(x) if isinstance(x, float) else torch.sqrt(x)


def diffusion_proposal(x: torch.Tensor, abar_t: float | torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Clean-plan proposals around a noisy plan ``x_t``: ``x_t / sqrt(abar_t) + sqrt((1 - abar_t) / abar_t) eps``,
    the samples of ``p(x_0 | x_t)`` under the DDPM forward process (arXiv 2605.26282 §3, the Monte-Carlo
    score estimate of model-based diffusion, Pan et al. 2024; official ``MBDPO/diffusion.py:59-192`` for
    the planner and ``MBDPO/mbdpo.py:302-344`` for the score target). ``abar_t`` is a Python float in the
    planner (no host sync) or a tensor. Not clamped."""
    return x / _sqrt(abar_t) + _sqrt((1 - abar_t) / abar_t) * noise


def elite_weighted_mean(values: torch.Tensor, candidates: torch.Tensor, num_elites: int, temperature: float) -> torch.Tensor:
    """The planner's weighted mean ``a_bar = sum_{i in elites} w_i a0_i`` (official ``MBDPO/diffusion.py:59-192``).

    Returns are z-scored over **all** candidates, ``g = (V - mean V) / std V`` (unbiased std, replaced by 1
    when below 1e-4), and ``w = softmax(g / temperature)`` over the top-``num_elites`` candidates by return
    (all of them with ``num_elites`` 0 or ``>= N``). The paper weights all samples by ``exp(J / lambda)``
    (arXiv 2605.26282, eqs. 11 and 15); the z-scoring and the elites are the code's.
    ``values``: ``(B, N)``; ``candidates``: ``(B, N, H, A)`` -> ``(B, H, A)``.
    """
    std = values.std(dim=1, keepdim=True)
    std = torch.where(std < 1e-4, torch.ones_like(std), std)
    logits = (values - values.mean(dim=1, keepdim=True)) / std / temperature
    if 0 < num_elites < values.shape[1]:
        idx = torch.topk(values, num_elites, dim=1).indices
        logits = logits.gather(1, idx)
        candidates = candidates.gather(1, idx[..., None, None].expand(-1, -1, *candidates.shape[2:]))
    weights = torch.softmax(logits, dim=1)
    return (weights[..., None, None] * candidates).sum(dim=1)


def mc_score(x: torch.Tensor, abar_t: float | torch.Tensor, weighted_mean: torch.Tensor) -> torch.Tensor:
    """Monte-Carlo score estimate ``s = (-x_t + sqrt(abar_t) a_bar) / (1 - abar_t + 1e-8)`` (arXiv 2605.26282
    §3, model-based diffusion of Pan et al. 2024; official ``MBDPO/diffusion.py:59-192``). ``abar_t`` is a
    Python float in the planner (no host sync) or a tensor in the score-matching target."""
    return (-x + abar_t**0.5 * weighted_mean) / (1 - abar_t + 1e-8)


def denoise_step(x: torch.Tensor, score: torch.Tensor, abar_t: float, alpha_t: float, mask=None) -> torch.Tensor:
    """One deterministic reverse step ``x_{t-1} = (x_t + (1 - abar_t) s) / sqrt(alpha_t)``, masked (official
    ``MBDPO/diffusion.py:59-192``). The paper's reverse kernel is the stochastic DDPM step (arXiv
    2605.26282, eq. 3): the code injects no noise and scales the score by ``1 - abar_t``, not ``beta_t``.
    With the Monte-Carlo score this gives ``x_{t-1} = sqrt(abar_{t-1}) a_bar_t`` up to ``1e-8``."""
    x = (x + (1 - abar_t) * score) / math.sqrt(alpha_t)
    return x if mask is None else x * mask


def score_candidates(x_tau: torch.Tensor, abar_tau: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Proposals of the score-matching target, ``clamp(diffusion_proposal(x_tau, abar_tau, eps), -1, 1)``
    (official ``MBDPO/mbdpo.py:302-344``). ``x_tau``: ``(H, A)``; ``noise``: ``(N, H, A)`` -> ``(N, H, A)``."""
    return diffusion_proposal(x_tau, abar_tau, noise).clamp(-1, 1)


def mc_score_target(
    x_tau: torch.Tensor, candidates: torch.Tensor, values: torch.Tensor, abar_tau: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Target of the amortised score network ``s_theta(z, x_tau, tau)`` (arXiv 2605.26282 §3.3, eq. 16;
    official ``MBDPO/mbdpo.py:302-344``).

    ``w = softmax(zscore(V) / temperature)`` over all samples (unbiased std + 1e-6, no elites, no policy
    trajectories), ``a_bar = sum_i w_i a0_i``, target ``mc_score(x_tau, abar_tau, a_bar)``.
    ``values``: ``(N,)`` returns of ``candidates`` ``(N, H, A)``.
    """
    logits = (values - values.mean()) / (values.std() + 1e-6)
    weights = torch.softmax(logits / max(temperature, 1e-6), dim=0)
    a_bar = (weights[:, None, None] * candidates).sum(0)
    return mc_score(x_tau, abar_tau, a_bar)
