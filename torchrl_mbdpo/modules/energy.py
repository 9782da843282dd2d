"""Running normalisation of the energy network's logits (spec §2.2, §3.2)."""
from __future__ import annotations

import torch
from torch import nn


class EnergyNormalizer(nn.Module):
    """Exponential running mean/std of F's logits, used to shape the planner's returns with
    ``eta * clip((F - mean) / std, -clip, clip)``.

    The statistics are buffers of the world model, so they are saved in checkpoints (the official code
    keeps them on the agent and loses them on reload, spec §7 bug 3). ``MBDPOLoss`` updates them.
    """

    def __init__(self, clip: float = 5.0):
        super().__init__()
        self.clip = clip
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("std", torch.ones(()))

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return ((logits - self.mean) / self.std.clamp_min(1e-6)).clamp(-self.clip, self.clip)
