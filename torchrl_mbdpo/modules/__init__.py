from .actors import DiffusionActor, MPPIActor
from .energy import EnergyNormalizer
from .mppi import MPPIConfig
from .planning import PlannerConfig
from .prior_actor import PolicyPriorActor
from .scale import RunningScale
from .torchrl_components import TorchRLComponents, make_energy_network, make_score_network, make_termination_head
from .world_model import MODEL_SIZES, MBDPOWorldModel, WorldModelConfig, resolve_model_size

__all__ = [
    "DiffusionActor",
    "MPPIActor",
    "TorchRLComponents",
    "make_energy_network",
    "make_score_network",
    "make_termination_head",
    "MPPIConfig",
    "PolicyPriorActor",
    "EnergyNormalizer",
    "RunningScale",
    "PlannerConfig",
    "MODEL_SIZES",
    "MBDPOWorldModel",
    "WorldModelConfig",
    "resolve_model_size",
]


def __getattr__(name):
    # MBDPOPlanner needs TorchRL's TD-MPC2 stack (torchrl >= 0.15): imported on first use, with one clear
    # error naming the install where it is missing.
    if name == "MBDPOPlanner":
        from .planners import MBDPOPlanner

        return MBDPOPlanner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
