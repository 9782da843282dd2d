"""MBDPO (Model-Based Diffusion Policy Optimization) on TorchRL.

``from torchrl_mbdpo import MBDPOLoss, DiffusionActor``; see README.md.
"""
import os as _os

_os.environ.setdefault("MUJOCO_GL", "egl")

from .modules import (  # noqa: E402
    DiffusionActor,
    MBDPOWorldModel,
    MPPIActor,
    MPPIConfig,
    PlannerConfig,
    PolicyPriorActor,
    WorldModelConfig,
)
from .objectives import MBDPOLoss, TDMPC2Loss  # noqa: E402

MBDPODiffusionActor = DiffusionActor  # unambiguous beside torchrl.modules.DiffusionActor

__version__ = "0.1.0"
__all__ = ["DiffusionActor", "MBDPODiffusionActor", "MBDPOLoss", "MBDPOWorldModel", "MPPIActor", "MPPIConfig", "PlannerConfig",
           "PolicyPriorActor", "TDMPC2Loss", "WorldModelConfig"]
