"""The equations of DMO's global world model, as pure tensor functions: EDM preconditioning, its training noise
levels and target, the Karras noise schedule and the Euler sampler.

Sources:

- **EDM**: Karras, Aittala, Aila and Laine, "Elucidating the Design Space of Diffusion-Based Generative Models",
  arXiv 2206.00364 (NeurIPS 2022): Table 1 (preconditioning, training noise distribution, loss weight),
  Eq. 5 (the sampling noise levels), Eq. 7 (the denoiser ``D = c_skip x + c_out F(c_in x, c_noise)``),
  Algorithm 1 (the deterministic sampler; its Euler variant, without the 2nd-order correction).
- **DIAMOND**: Alonso et al., "Diffusion for World Modeling: Visual Details Matter in Atari", arXiv 2405.12399
  (NeurIPS 2024), §3: EDM for a next-frame world model conditioned on the last frames and actions, trained
  with the loss of Eq. 6 (regressing ``F`` on the preconditioned target) and sampled with few Euler steps
  (3 by default); its constants (``sigma_data = 0.5``, ``P_mean = -0.4``, ``P_std = 1.2``,
  ``sigma_min = 2e-3``, ``sigma_max = 5``, ``rho = 7``) are the defaults here.
- **DMO**: Amigo et al., "Coupled Local and Global World Models for Efficient First Order RL": the global
  model that produces the forward trajectories is such a DIAMOND-style EDM model with 3 denoising steps, and
  the reward is a contrastive energy ``f(s_t | s_start, s_goal)`` learned from passive video with a
  Bradley-Terry objective (Bradley and Terry, "Rank Analysis of Incomplete Block Designs", Biometrika 1952):
  within a trajectory from ``s_start`` to ``s_goal``, the later of two frames is preferred.

These functions sit here rather than in :mod:`torchrl_mbdpo.modules.functional` (the home of the library's
other equations) so that the DMO pipeline's files stay together and do not touch the modules under
parallel development; they follow its conventions (pure functions, docstrings citing the source).
Images are float tensors in [-1, 1]; ``sigma`` broadcasts against them as ``(B, 1, 1, 1)``.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["bradley_terry_loss", "EDMScalings", "edm_scalings", "edm_training_sigma", "edm_denoised", "edm_training_target",
           "edm_loss_weight", "karras_sigmas", "euler_step", "frames_to_unit", "unit_to_frames"]


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


def edm_training_sigma(n: int, p_mean: float = -0.4, p_std: float = 1.2, *, generator: torch.Generator | None = None,
                       device=None) -> torch.Tensor:
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
