"""MBDPO (Model-Based Diffusion Policy Optimization) on TorchRL."""
import os as _os

_os.environ.setdefault("MUJOCO_GL", "egl")

from .modules import DiffusionActor, MBDPOWorldModel, PlannerConfig, WorldModelConfig  # noqa: E402

MBDPODiffusionActor = DiffusionActor

try:  # the objectives package is optional while it is being built
    from .objectives import MBDPOLoss  # noqa: F401
except ImportError:  # pragma: no cover
    pass

__version__ = "0.1.0"
