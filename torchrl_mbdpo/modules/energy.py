"""Running normalisation of the energy network's logits (arXiv 2605.26282, energy-shaped returns;
official ``MBDPO/mbdpo.py:252-288,346-398``)."""

from __future__ import annotations

import torch
from torch import nn

from .functional import normalized_energy


class EnergyNormalizer(nn.Module):
    """Exponential running mean/std of F's logits, used to shape the planner's returns with
    ``eta * clip((F - mean) / std, -clip, clip)`` (:func:`~torchrl_mbdpo.modules.functional.normalized_energy`).

    The statistics are buffers of the world model, so they are saved in checkpoints (the official code
    keeps them on the agent, ``MBDPO/mbdpo.py:63-64``, and loses them on reload). ``MBDPOLoss`` updates them
    (:func:`~torchrl_mbdpo.modules.functional.ema_moments`).
    """

    def __init__(self, clip: float = 5.0):
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return normalized_energy(logits, self.mean, self.std, self.clip)
