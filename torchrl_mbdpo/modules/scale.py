"""TD-MPC2's running scale of the policy's Q values (arXiv 2310.16828 §3.1; official ``MBDPO/common/scale.py``)."""

from __future__ import annotations

import torch
from torch import nn

from .functional import percentile

__all__ = ["RunningScale"]


class RunningScale(nn.Module):
    """``S <- lerp(S, max(P95(q) - P5(q), 1), tau)``, initialised to 1 (:func:`~torchrl_mbdpo.modules.functional.percentile`).

    The policy loss divides Q by ``S`` so its gradient does not depend on the task's reward scale. ``value``
    is a buffer, so it is saved with the loss (the official agent keeps it outside the model and loses it on
    reload). A non-finite batch leaves the scale unchanged.
    """

    def __init__(self, tau: float = 0.01, percentiles: tuple[float, float] = (5.0, 95.0)):
        super().__init__()
        self.tau = tau
        self.percentiles = tuple(percentiles)
        self.register_buffer("value", torch.ones(1))
        # On the module's device, so that an update builds no tensor from host data (not saved: it is config).
        self.register_buffer("_percentiles", torch.tensor(self.percentiles, dtype=torch.float32), persistent=False)

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        low, high = percentile(x.detach(), self._percentiles)
        new = torch.lerp(self.value, torch.clamp(high - low, min=1.0).reshape(-1)[:1].to(self.value), self.tau)
        self.value.copy_(torch.where(torch.isfinite(new), new, self.value))

    def forward(self, x: torch.Tensor, update: bool = False) -> torch.Tensor:
        if update:
            self.update(x)
        return x / self.value

    def extra_repr(self) -> str:
        return f"tau={self.tau}, percentiles={self.percentiles}"
