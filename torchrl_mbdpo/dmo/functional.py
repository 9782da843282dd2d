"""DMO's equations, as pure tensor functions: the decoupled gradient, the SAPO actor objective and soft TD(lambda)
critic of its policy optimisation, and the EDM / DIAMOND diffusion and Bradley-Terry reward of its global world model.

Sources: Amigo et al., "Coupled Local and Global World Models for Efficient First Order RL" and "First Order
Model-Based RL through Decoupled Backpropagation" (DMO); its actor objective is SAPO's (Xing et al., "Stabilizing
Reinforcement Learning in Differentiable Multiphysics Simulation"), which extends SHAC's (Xu et al., "Accelerated
Policy Learning with Parallel Differentiable Simulation"). Tensors of the policy optimisation are time-first
``(H, B)`` (``DMOLoss`` permutes TorchRL's batch-first rollouts before calling them). The math DMO shares with
MBDPO (symlog, two-hot, TD targets) stays in :mod:`torchrl_mbdpo.modules.functional`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torchrl.objectives.value.functional import td_lambda_return_estimate

__all__ = [
    # policy optimisation
    "gradient_swap",
    "segment_discounts",
    "sapo_objective",
    "soft_td_lambda_targets",
    "value_regression_loss",
    "temperature_loss",
    # the global world model: EDM / DIAMOND, Bradley-Terry reward
    "EDMScalings",
    "edm_scalings",
    "edm_training_sigma",
    "edm_denoised",
    "edm_training_target",
    "edm_loss_weight",
    "karras_sigmas",
    "euler_step",
    "frames_to_unit",
    "unit_to_frames",
    "bradley_terry_loss",
]


# ============================================================================================ DMO
# Amigo et al., "Coupled Local and Global World Models for Efficient First Order RL" and "First Order
# Model-Based RL through Decoupled Backpropagation" (DMO). Tensors are time-first ``(H, B)``.


def gradient_swap(global_value: torch.Tensor, local_value: torch.Tensor) -> torch.Tensor:
    """Decoupled backpropagation ``swap(g, l) = sg(g) + (l - sg(l))``: the value of the global model, the
    gradient of the local one (DMO, "First Order Model-Based RL through Decoupled Backpropagation", the
    decoupled rollout ``z_{t+1} = swap(enc(o^g_{t+1}), d(z_t, a_t))``, ``r_t = swap(r^g_t, R(z_t, a_t))``).

    ``l - sg(l)`` is exactly zero in the forward pass (for finite ``l``), so the result equals ``g`` bit for
    bit, and its derivative is ``dl``: autograd sees only the local branch. ``g`` is detached: the global
    model contributes values, never gradients. Both tensors must have the same shape (no silent
    broadcasting, which would change what the gradient sums over).
    """
    if global_value.shape != local_value.shape:
        raise ValueError(
            f"gradient_swap: the global value has shape {tuple(global_value.shape)} but the local prediction "
            f"has shape {tuple(local_value.shape)}; they must match."
        )
    return global_value.detach().to(local_value.dtype) + (local_value - local_value.detach())


def segment_discounts(done: torch.Tensor, gamma: float | torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``gamma^{k_t}``, ``(H, B)``, where ``k_t`` counts the steps since the rollout start or since the last
    episode end: ``k_0 = 0``, ``k_{t+1} = 0 if done_t else k_t + 1``. An episode that restarts inside the
    rollout is discounted from its own first step, as in SHAC and SAPO (the actor objective of DMO)."""
    k = torch.zeros_like(done[0], dtype=dtype)
    powers = []
    for done_t in done:
        powers.append(k)
        k = torch.where(done_t.bool(), torch.zeros_like(k), k + 1)
    gamma = torch.as_tensor(gamma, dtype=dtype, device=done.device)
    return torch.pow(gamma, torch.stack(powers))


def sapo_objective(
    rewards: torch.Tensor,
    entropy: torch.Tensor,
    next_values: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float | torch.Tensor,
    alpha: float | torch.Tensor,
) -> torch.Tensor:
    """Per-rollout SAPO return ``J_b``, ``(B,)``, all inputs ``(H, B)`` (DMO's actor objective: SAPO, Xing
    et al., the maximum-entropy form of SHAC's short-horizon objective):

        J = sum_t gamma^{k_t} [ r_t + alpha * entropy_t + gamma * e_t * (1 - term_t) * V(z'_t) ]

    with ``k_t`` from :func:`segment_discounts`, ``e_t = done_t or t = H-1`` (a segment ends) and ``V(z'_t)``
    the value of the transition's next latent. Without episode ends this is
    ``sum_{t<H} gamma^t (r_t + alpha H_t) + gamma^H V(z_H)``; a truncated episode bootstraps from its
    terminal latent, a terminated one does not.
    """
    discounts = segment_discounts(done, gamma, rewards.dtype)
    segment_end = done.bool().clone()
    segment_end[-1] = True
    bootstrap = gamma * (segment_end & ~terminated.bool()).to(rewards.dtype) * next_values
    return (discounts * (rewards + alpha * entropy + bootstrap)).sum(0)


def soft_td_lambda_targets(
    rewards: torch.Tensor,
    entropy: torch.Tensor,
    next_values: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    lmbda: float,
    alpha: float | torch.Tensor,
) -> torch.Tensor:
    """Soft TD(lambda) targets of DMO's critic (SHAC's TD(lambda) critic with SAPO's entropy bonus), ``(H, B)``,
    all inputs ``(H, B)`` and detached here:

        G_t = r_t + alpha H_t + gamma [ (1 - lambda) V'(z'_t) + lambda G_{t+1} ],   G_{H-1} = r + alpha H + gamma V'(z'_{H-1})

    with ``G_{t+1}`` replaced by ``V'(z'_t)`` where an episode ends and ``V'(z'_t) = 0`` where it terminates.
    The entropy bonus makes ``V`` the soft value the actor objective bootstraps from. Computed by TorchRL's
    ``td_lambda_return_estimate``.
    """
    soft_rewards = (rewards + alpha * entropy).detach().unsqueeze(-1)
    return td_lambda_return_estimate(
        gamma,
        lmbda,
        next_state_value=next_values.detach().unsqueeze(-1),
        reward=soft_rewards,
        done=done.bool().unsqueeze(-1),
        terminated=terminated.bool().unsqueeze(-1),
        time_dim=0,
    ).squeeze(-1)


def value_regression_loss(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """DMO's critic loss ``mean (V(z_t) - sg(G_t))^2``: a plain scalar regression, as SHAC and SAPO (not
    TD-MPC2's two-hot)."""
    return F.mse_loss(values.float(), targets.detach().float())


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float | torch.Tensor) -> torch.Tensor:
    """SAC's temperature loss ``mean -log(alpha) sg(log pi + target_entropy)`` (used by SAPO and DMO): alpha
    falls while the entropy ``-log pi`` exceeds the target and rises below it."""
    return (-log_alpha * (log_prob + target_entropy).detach()).mean()


# ============================================================================================ DMO's global world model
# The DMO paper's global model is a DIAMOND-style EDM diffusion model of the next frame (3 denoising steps);
# its reward a Bradley-Terry contrastive energy learned from passive video. Sources:
# EDM: Karras, Aittala, Aila and Laine, "Elucidating the Design Space of Diffusion-Based Generative Models",
# arXiv 2206.00364: Table 1 (preconditioning, training noise, loss weight), Eq. 5 (sampling noise levels),
# Eq. 7 (the denoiser), Algorithm 1 (the sampler; its Euler variant). DIAMOND: Alonso et al., "Diffusion for
# World Modeling: Visual Details Matter in Atari", arXiv 2405.12399, Sec. 3 (EDM for a next-frame model
# conditioned on the last frames and actions, the loss of Eq. 6, few Euler steps); its constants
# (sigma_data 0.5, P_mean -0.4, P_std 1.2, sigma_min 2e-3, sigma_max 5, rho 7) are the defaults.
# Bradley and Terry, "Rank Analysis of Incomplete Block Designs", Biometrika 1952. Images are float tensors in
# [-1, 1]; ``sigma`` broadcasts against them as ``(B, 1, 1, 1)``.


class EDMScalings(NamedTuple):
    c_skip: torch.Tensor
    c_out: torch.Tensor
    c_in: torch.Tensor
    c_noise: torch.Tensor


def edm_scalings(sigma: torch.Tensor, sigma_data: float = 0.5) -> EDMScalings:
    """EDM Table 1 (preconditioning): ``c_skip = s_d^2 / (s^2 + s_d^2)``, ``c_out = s s_d / sqrt(s^2 + s_d^2)``,
    ``c_in = 1 / sqrt(s^2 + s_d^2)``, ``c_noise = ln(s) / 4``. Shapes follow ``sigma``."""
    sigma = torch.as_tensor(sigma)
    total = sigma**2 + sigma_data**2
    return EDMScalings(sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1.0 / total.sqrt(), sigma.log() / 4)


def edm_training_sigma(
    n: int, p_mean: float = -0.4, p_std: float = 1.2, *, generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """EDM Table 1 (training): ``ln(sigma) ~ N(P_mean, P_std^2)``, ``(n,)`` noise levels (DIAMOND's ``P_mean``,
    ``P_std``)."""
    return (torch.randn(n, generator=generator, device=device) * p_std + p_mean).exp()


def edm_denoised(raw: torch.Tensor, x_noisy: torch.Tensor, scalings: EDMScalings) -> torch.Tensor:
    """EDM Eq. 7: the denoiser ``D(x; sigma) = c_skip x + c_out F``, with ``raw = F_theta(c_in x, c_noise)``."""
    return scalings.c_skip * x_noisy + scalings.c_out * raw


def edm_training_target(x_clean: torch.Tensor, x_noisy: torch.Tensor, scalings: EDMScalings) -> torch.Tensor:
    """EDM Eq. 8 / DIAMOND Eq. 6: the network's regression target ``(x - c_skip x_noisy) / c_out``, with which
    ``||F - target||^2`` is the loss ``lambda(sigma) ||D - x||^2`` at EDM's weight ``lambda = 1 / c_out^2``."""
    return (x_clean - scalings.c_skip * x_noisy) / scalings.c_out


def edm_loss_weight(sigma: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """EDM Table 1: ``lambda(sigma) = (sigma^2 + s_d^2) / (sigma s_d)^2 = 1 / c_out^2``."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def karras_sigmas(num_steps: int, sigma_min: float = 2e-3, sigma_max: float = 5.0, rho: float = 7.0, device=None) -> torch.Tensor:
    """EDM Eq. 5: ``num_steps`` noise levels from ``sigma_max`` down to ``sigma_min``,
    ``sigma_i = (sigma_max^(1/rho) + i / (N - 1) (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho``, then a final 0:
    ``(num_steps + 1,)``. One step goes straight from ``sigma_max`` to 0."""
    if num_steps < 1:
        raise ValueError(f"num_steps (denoising steps) must be >= 1, got {num_steps}.")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"Need 0 < sigma_min < sigma_max, got {sigma_min} and {sigma_max}.")
    if num_steps == 1:
        sigmas = torch.tensor([sigma_max], dtype=torch.float64)
    else:
        i = torch.arange(num_steps, dtype=torch.float64)
        lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
        sigmas = (hi + i / (num_steps - 1) * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).to(device=device, dtype=torch.float32)


def euler_step(x: torch.Tensor, denoised: torch.Tensor, sigma: float | torch.Tensor, sigma_next: float | torch.Tensor) -> torch.Tensor:
    """EDM Algorithm 1 without the 2nd-order correction (DIAMOND's sampler): along the probability-flow ODE
    ``dx/dsigma = (x - D(x; sigma)) / sigma``, ``x' = x + (sigma_next - sigma) (x - D) / sigma``. A step to
    ``sigma_next = 0`` returns ``D``."""
    return x + (sigma_next - sigma) * (x - denoised) / sigma


def frames_to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 pixels in [0, 255] -> float in [-1, 1] (the diffusion model's image space)."""
    return frames.float() / 127.5 - 1.0


def unit_to_frames(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 pixels (clamped, rounded)."""
    return ((x.clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)


def bradley_terry_loss(preferred: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """Bradley-Terry: ``P(a > b) = sigmoid(f(a) - f(b))``; the negative log-likelihood of the observed preferences,
    ``mean(-log sigmoid(f_preferred - f_other)) = mean(softplus(f_other - f_preferred))`` (DMO's reward: the later
    frame of a pair within a trajectory towards ``s_goal`` is the preferred one)."""
    return torch.nn.functional.softplus(other - preferred).mean()
