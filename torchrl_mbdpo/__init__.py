"""MBDPO (Model-Based Diffusion Policy Optimization) on TorchRL.

``from torchrl_mbdpo import MBDPOLoss, DiffusionActor``; see README.md.
"""

from importlib import metadata as _metadata

from .modules import (
    DiffusionActor,
    MBDPOWorldModel,
    MPPIActor,
    MPPIConfig,
    PlannerConfig,
    PolicyPriorActor,
    WorldModelConfig,
)
from .objectives import MBDPOLoss, TDMPC2Loss

MBDPODiffusionActor = DiffusionActor  # unambiguous beside torchrl.modules.DiffusionActor

try:  # the version lives in one place: the package metadata (setup.py)
    __version__ = _metadata.version("torchrl_mbdpo")
except _metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
__all__ = [
    "DiffusionActor",
    "MBDPODiffusionActor",
    "MBDPOLoss",
    "MBDPOPlanner",
    "MBDPOTrainer",
    "MBDPOOptimizationStepper",
    "MBDPOWorldModel",
    "MPPIActor",
    "MPPIConfig",
    "PlannerConfig",
    "PolicyPriorActor",
    "TDMPC2Loss",
    "WorldModelConfig",
]

# TorchRL's TD-MPC2 names, one MBDPO class each: TdMpc2Planner -> MBDPOPlanner (needs torchrl >= 0.15),
# TdMpc2Loss -> MBDPOLoss, TdMpc2Trainer -> MBDPOTrainer, TdMpc2OptimizationStepper -> MBDPOOptimizationStepper.
# The trainers are imported on first use (they pull in the environments).
_LAZY = {
    "MBDPOPlanner": "torchrl_mbdpo.modules.planners",
    "MBDPOTrainer": "torchrl_mbdpo.trainers.trainer",
    "MBDPOOptimizationStepper": "torchrl_mbdpo.trainers.optimization",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
