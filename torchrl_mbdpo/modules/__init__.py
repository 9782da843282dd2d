from .actors import DiffusionActor, MBDPOPlanner, MPPIActor
from .decoupled import DecoupledRollout, EnvGlobalModel, GlobalStep, decoupled_rollout
from .energy import EnergyNormalizer
from .functional import gradient_swap
from .mppi import MPPIConfig
from .planning import PlannerConfig
from .prior_actor import PolicyPriorActor
from .scale import RunningScale
from .torchrl_components import TorchRLComponents, make_energy_network, make_score_network, make_termination_head
from .world_model import MODEL_SIZES, MBDPOWorldModel, WorldModelConfig, resolve_model_size

__all__ = [
    "DiffusionActor",
    "MBDPOPlanner",
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
    "gradient_swap",
    "GlobalStep",
    "DecoupledRollout",
    "decoupled_rollout",
    "EnvGlobalModel",
]
