"""MBDPO in TorchRL's ConfigStore groups, beside TorchRL's TD-MPC2 (torchrl >= 0.15).

Importing this module registers ``trainer/mbdpo``, ``loss/mbdpo``, ``model/mbdpo_planner``,
``model/mbdpo_energy``, ``model/mbdpo_score_network`` and ``hook/mbdpo_optimization``. Each config is
TorchRL's TD-MPC2 one (``TdMpc2TrainerConfig``, ``TdMpc2LossConfig``, ``TdMpc2PlannerConfig``,
``TdMpc2OptimizationStepperConfig``) plus MBDPO's fields, so a TD-MPC2 recipe switches algorithm by one
line: ``trainer=tdmpc2`` -> ``trainer=mbdpo``. The MBDPO trainer factory then reads the recipe's TD-MPC2
loss and planner settings (every field the two algorithms share: horizon, discount, rho, coefficients,
samples, elites, policy trajectories, temperature, keys) and builds MBDPO's loss and planner with them;
MBDPO's extra networks (the energy network F, the score network) are made from its own entries, sized
from the live TorchRL components when not given. ``sota-implementations/mbdpo_trainer/`` is the recipe.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from .._torchrl_next import require_tdmpc2

require_tdmpc2("torchrl_mbdpo.trainers.torchrl_configs (trainer=mbdpo)")

import torch  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from torchrl.collectors import BaseCollector  # noqa: E402
from torchrl.trainers.algorithms.configs.common import _normalize_hydra_key  # noqa: E402
from torchrl.trainers.algorithms.configs.hooks import TdMpc2OptimizationStepperConfig  # noqa: E402
from torchrl.trainers.algorithms.configs.modules import ModelConfig, TdMpc2PlannerConfig, _make_tdmpc2_planner  # noqa: E402
from torchrl.trainers.algorithms.configs.objectives import TdMpc2LossConfig, _make_tdmpc2_loss  # noqa: E402
from torchrl.trainers.algorithms.configs.trainers import TdMpc2TrainerConfig, _register_trainer_hooks  # noqa: E402

from ..modules.planners import MBDPOPlanner  # noqa: E402
from ..modules.torchrl_components import TorchRLComponents, make_energy_network, make_score_network  # noqa: E402
from ..objectives import MBDPOLoss  # noqa: E402
from .optimization import make_optimizers  # noqa: E402
from .trainer import MBDPOOptimizationStepper, MBDPOTrainer  # noqa: E402

__all__ = [
    "MBDPOEnergyConfig",
    "MBDPOScoreNetworkConfig",
    "MBDPOPlannerConfig",
    "MBDPOLossConfig",
    "MBDPOOptimizationStepperConfig",
    "MBDPOTrainerConfig",
    "register_configs",
]

_KEYS = ("observation_key", "action_key", "reward_key", "terminated_key")


# ----------------------------------------------------------------------------- MBDPO's networks
@dataclass
class MBDPOEnergyConfig(ModelConfig):
    """MBDPO's energy network F(z, a) (:func:`~torchrl_mbdpo.modules.make_energy_network`)."""

    latent_dim: int = 128
    action_dim: int = 1
    mlp_dim: int = 512
    _target_: str = "torchrl_mbdpo.modules.make_energy_network"


@dataclass
class MBDPOScoreNetworkConfig(ModelConfig):
    """MBDPO's amortised score network (:func:`~torchrl_mbdpo.modules.make_score_network`)."""

    latent_dim: int = 128
    action_dim: int = 1
    horizon: int = 3
    mlp_dim: int = 512
    time_embed_dim: int = 64
    _target_: str = "torchrl_mbdpo.modules.make_score_network"


# ----------------------------------------------------------------------------- planner and loss
@dataclass
class MBDPOPlannerConfig(TdMpc2PlannerConfig):
    """``TdMpc2PlannerConfig`` plus MBDPO's diffusion planner settings (:class:`~torchrl_mbdpo.MBDPOPlanner`)."""

    prev_mean_key: Any = "_mbdpo_prev_plan"
    steps: int = 20
    beta0: float = 1e-4
    betaT: float = 1e-2
    energy_eta: float = 0.01
    score_source: str = "mc"
    action_noise: float = 0.05
    precision: str = "fp32"
    energy: Any = None
    score_network: Any = None
    _target_: str = "torchrl_mbdpo.trainers.torchrl_configs._make_mbdpo_planner"


def _make_mbdpo_planner(**kwargs) -> MBDPOPlanner:
    """:class:`~torchrl_mbdpo.MBDPOPlanner` from live components (the trainer factory injects them)."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None or k in ("energy", "score_network")}
    for key in ("observation_key", "action_key", "is_init_key", "prev_mean_key"):
        if key in kwargs:
            kwargs[key] = _normalize_hydra_key(kwargs[key])
    return MBDPOPlanner(**kwargs)


@dataclass
class MBDPOLossConfig(TdMpc2LossConfig):
    """``TdMpc2LossConfig`` plus MBDPO's terms (:class:`~torchrl_mbdpo.MBDPOLoss`). The components and the
    energy network are injected by the trainer factory (no field to fill)."""

    world_model: Any = None
    policy_prior: Any = None
    q_ensemble: Any = None
    termination_coef: float = 1.0
    energy_coef: float = 1.0
    score_coef: float = 1.0
    contrastive_pairing: str = "official"
    contrastive_neg_noise: float = 0.5
    contrastive_momentum: float = 0.99
    use_score_network: bool = False
    score_num_samples: int = 64
    target_q_pair: str = "official"
    energy: Any = None
    score_network: Any = None
    _target_: str = "torchrl_mbdpo.trainers.torchrl_configs._make_mbdpo_loss"


def _make_mbdpo_loss(**kwargs) -> MBDPOLoss:
    for key in _KEYS:
        if key in kwargs:
            kwargs[key] = _normalize_hydra_key(kwargs[key])
    return MBDPOLoss(**kwargs)


@dataclass
class MBDPOOptimizationStepperConfig(TdMpc2OptimizationStepperConfig):
    """``TdMpc2OptimizationStepperConfig`` plus ``precision`` (:class:`~torchrl_mbdpo.MBDPOOptimizationStepper`)."""

    precision: str = "fp32"
    _target_: str = "torchrl_mbdpo.trainers.trainer.MBDPOOptimizationStepper"


# ----------------------------------------------------------------------------- trainer
@dataclass
class MBDPOTrainerConfig(TdMpc2TrainerConfig):
    """``TdMpc2TrainerConfig`` plus MBDPO's settings (:class:`~torchrl_mbdpo.MBDPOTrainer`).

    ``loss_module`` and ``planner`` may be TorchRL's TD-MPC2 entries (``loss/tdmpc2``,
    ``model/tdmpc2_planner``): their shared settings are kept and MBDPO's are taken from the fields below,
    so that ``trainer=tdmpc2`` -> ``trainer=mbdpo`` is the whole switch. ``energy`` and ``score_network``
    default to networks sized from the live components."""

    diffusion_steps: int = 20
    beta0: float = 1e-4
    betaT: float = 1e-2
    energy_eta: float = 0.01
    score_source: str = "mc"
    use_score_network: bool = False
    action_noise: float = 0.05
    precision: str = "fp32"
    energy: Any = None
    score_network: Any = None
    _target_: str = "torchrl_mbdpo.trainers.torchrl_configs._make_mbdpo_trainer"


def _live(component):
    """A Hydra config (not yet built) instantiated; a live module or a partial unchanged."""
    if component is not None and not isinstance(component, (torch.nn.Module, functools.partial)) and hasattr(component, "_target_"):
        return instantiate(component)
    return component


def _hidden_width(world_model) -> int:
    return next(m for m in world_model.dynamics.module.modules() if isinstance(m, torch.nn.Linear)).out_features


def _keywords(maker, own_factory, foreign_factory) -> dict | None:
    """The settings of a partial of MBDPO's or TorchRL's TD-MPC2 factory (None: not a partial of either)."""
    if isinstance(maker, functools.partial) and maker.func in (own_factory, foreign_factory):
        return dict(maker.keywords)
    if isinstance(maker, type) and issubclass(maker, (MBDPOLoss, MBDPOPlanner)):
        return {}
    return None


def _make_mbdpo_trainer(**kwargs) -> MBDPOTrainer:
    """``trainer/mbdpo``: MBDPO's loss, planner, energy network and stepper on the recipe's TorchRL components,
    as ``_make_tdmpc2_trainer`` builds TD-MPC2's."""
    collector, total_frames = kwargs.pop("collector"), kwargs.pop("total_frames")
    components = {k: _live(kwargs.pop(k)) for k in ("world_model", "policy_prior", "q_ensemble")}
    loss_module, planner = kwargs.pop("loss_module"), kwargs.pop("planner", None)
    mbdpo = {
        k: kwargs.pop(k)
        for k in ("diffusion_steps", "beta0", "betaT", "energy_eta", "score_source", "use_score_network", "action_noise", "precision")
    }
    energy, score_network = _live(kwargs.pop("energy", None)), _live(kwargs.pop("score_network", None))

    if not isinstance(loss_module, MBDPOLoss):
        settings = _keywords(loss_module, _make_mbdpo_loss, _make_tdmpc2_loss)
        if settings is None:
            raise TypeError(f"trainer=mbdpo builds MBDPO's loss from loss=mbdpo or loss=tdmpc2 settings, got {loss_module!r}.")
        settings = {k: v for k, v in settings.items() if k not in components}
        sizes = TorchRLComponents(**components).cfg
        latent, action, mlp = sizes.latent_dim, sizes.action_dim, _hidden_width(components["world_model"])
        horizon = settings.get("horizon", 3)
        energy = settings.pop("energy", None) or energy or make_energy_network(latent, action, mlp)
        use_score = settings.pop("use_score_network", mbdpo["use_score_network"])
        if score_network is None and (use_score or mbdpo["score_source"] == "network"):
            score_network = make_score_network(latent, action, horizon, mlp)
        settings.setdefault("contrastive_eta", mbdpo["energy_eta"])
        for ours, theirs in (("diffusion_steps", "diffusion_steps"), ("beta0", "beta0"), ("betaT", "betaT")):
            settings.setdefault(theirs, mbdpo[ours])
        loss_module = _make_mbdpo_loss(**components, **settings, energy=energy, score_network=score_network, use_score_network=use_score)

    if not isinstance(planner, MBDPOPlanner):
        settings = _keywords(planner, _make_mbdpo_planner, _make_tdmpc2_planner) if planner is not None else {}
        if settings is None:
            raise TypeError(f"trainer=mbdpo builds MBDPO's planner from model=mbdpo_planner or tdmpc2_planner settings, got {planner!r}.")
        settings = {k: v for k, v in settings.items() if k not in components and v is not None}
        for key in ("iterations", "min_std", "max_std"):  # MPPI's: the diffusion sampler has no use for them
            settings.pop(key, None)
        for key, value in (
            ("steps", mbdpo["diffusion_steps"]),
            ("beta0", mbdpo["beta0"]),
            ("betaT", mbdpo["betaT"]),
            ("energy_eta", mbdpo["energy_eta"]),
            ("score_source", mbdpo["score_source"]),
            ("action_noise", mbdpo["action_noise"]),
            ("precision", mbdpo["precision"]),
        ):
            settings.setdefault(key, value)
        settings.update(
            horizon=loss_module.horizon,
            discount=loss_module.discount.item(),
            energy=loss_module.latent_model.energy,
            score_network=loss_module.latent_model.score_net,
        )
        planner = _make_mbdpo_planner(
            world_model=loss_module.world_model, policy_prior=loss_module.policy_prior, q_ensemble=loss_module.q_ensemble, **settings
        )

    if not isinstance(collector, BaseCollector) and callable(collector):
        collector = collector(policy=planner, auto_register_policy_transforms=True)

    optimizer_model, optimizer_actor = kwargs.pop("optimizer_model", None), kwargs.pop("optimizer_actor", None)
    stepper = kwargs.pop("optimization_stepper", None)
    lr, enc_scale = kwargs.pop("lr", 3e-4), kwargs.pop("encoder_lr_scale", 0.3)
    actor_eps, weight_decay = kwargs.pop("actor_eps", 1e-5), kwargs.pop("weight_decay", 0.0)
    capturable = kwargs.pop("capturable", None)
    target_tau, zero_grad = kwargs.pop("target_tau", 0.01), kwargs.pop("zero_grad_set_to_none", True)
    hooks = kwargs.pop("hooks", None)
    if stepper is None:
        if optimizer_model is None or optimizer_actor is None:
            default_model, default_actor = make_optimizers(
                loss_module, lr=lr, enc_lr_scale=enc_scale, capturable=bool(capturable), actor_eps=actor_eps, weight_decay=weight_decay
            )
            params = [p for group in default_model.param_groups for p in group["params"]]
            optimizer_model = default_model if optimizer_model is None else optimizer_model(params=params)
            optimizer_actor = (
                default_actor if optimizer_actor is None else optimizer_actor(params=list(loss_module.latent_model.policy.parameters()))
            )
        stepper = MBDPOOptimizationStepper(
            loss_module,
            optimizer_model,
            optimizer_actor,
            target_tau=target_tau,
            zero_grad_set_to_none=zero_grad,
            precision=mbdpo["precision"],
        )
    elif not isinstance(stepper, MBDPOOptimizationStepper):
        stepper = stepper(loss_module=loss_module)
    trainer = MBDPOTrainer(
        collector=collector, total_frames=total_frames, loss_module=loss_module, planner=planner, optimization_stepper=stepper, **kwargs
    )
    _register_trainer_hooks(trainer, hooks)
    return trainer


def register_configs() -> None:
    """Store MBDPO's entries in TorchRL's ConfigStore groups (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(group="trainer", name="mbdpo", node=MBDPOTrainerConfig)
    cs.store(group="loss", name="mbdpo", node=MBDPOLossConfig)
    cs.store(group="model", name="mbdpo_planner", node=MBDPOPlannerConfig)
    cs.store(group="model", name="mbdpo_energy", node=MBDPOEnergyConfig)
    cs.store(group="model", name="mbdpo_score_network", node=MBDPOScoreNetworkConfig)
    cs.store(group="hook", name="mbdpo_optimization", node=MBDPOOptimizationStepperConfig)


register_configs()
