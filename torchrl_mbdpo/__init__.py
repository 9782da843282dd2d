"""MBDPO (Model-Based Diffusion Policy Optimization) on TorchRL.

``from torchrl_mbdpo import MBDPOLoss, DiffusionActor``; see README.md.
"""

import ctypes.util as _ctypes_util
import os as _os
import sys as _sys


def _default_mujoco_gl() -> str:
    """MuJoCo's rendering backend for this platform (set before dm_control/mujoco are imported; a
    MUJOCO_GL already in the environment wins): headless Linux renders through EGL, or OSMesa where
    libEGL is missing; macOS and Windows render through their windowing system (glfw)."""
    if _sys.platform.startswith("linux"):
        return "egl" if _ctypes_util.find_library("EGL") else "osmesa"
    return "glfw"


_os.environ.setdefault("MUJOCO_GL", _default_mujoco_gl())

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
