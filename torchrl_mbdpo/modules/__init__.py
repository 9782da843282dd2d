from .actors import DiffusionActor
from .energy import EnergyNormalizer
from .planning import PlannerConfig
from .prior_actor import PolicyPriorActor
from .world_model import MODEL_SIZES, MBDPOWorldModel, WorldModelConfig, resolve_model_size

__all__ = ["DiffusionActor", "PolicyPriorActor", "EnergyNormalizer", "PlannerConfig", "MODEL_SIZES", "MBDPOWorldModel", "WorldModelConfig", "resolve_model_size"]
