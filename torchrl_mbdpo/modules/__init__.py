from .actors import DiffusionActor, MPPIActor
from .decoupled import DecoupledRollout, EnvGlobalModel, GlobalStep, decoupled_rollout, gradient_swap
from .energy import EnergyNormalizer
from .mppi import MPPIConfig
from .planning import PlannerConfig
from .prior_actor import PolicyPriorActor
from .world_model import MODEL_SIZES, MBDPOWorldModel, WorldModelConfig, resolve_model_size

__all__ = ["DiffusionActor", "MPPIActor", "MPPIConfig", "PolicyPriorActor", "EnergyNormalizer", "PlannerConfig", "MODEL_SIZES", "MBDPOWorldModel", "WorldModelConfig", "resolve_model_size",
           "gradient_swap", "GlobalStep", "DecoupledRollout", "decoupled_rollout", "EnvGlobalModel"]
