"""``MBDPOPlanner``: MBDPO's diffusion planner with the constructor of TorchRL's ``TdMpc2Planner``
(``torchrl/modules/planners/tdmpc2.py``, torchrl >= 0.15), on TorchRL's TD-MPC2 components. Importing it
needs that TorchRL (the torchrl-next install, README)."""

from __future__ import annotations

import warnings

from tensordict.utils import NestedKey

from .._torchrl_next import require_tdmpc2
from .actors import DiffusionActor
from .planning import PlannerConfig
from .torchrl_components import TorchRLComponents

require_tdmpc2("torchrl_mbdpo.modules.planners (MBDPOPlanner)")

__all__ = ["MBDPOPlanner"]


# TdMpc2Planner's MPPI-only options: accepted so its configs and call sites carry over, not used by the
# diffusion sampler (whose proposal noise follows the diffusion schedule and which runs ``steps - 1``
# denoising iterations).
_MPPI_ONLY_DEFAULTS = {"iterations": 6, "min_std": 0.05, "max_std": 2.0}


class MBDPOPlanner(DiffusionActor):
    """MBDPO's diffusion planner with the constructor of TorchRL's ``TdMpc2Planner``, on TorchRL's TD-MPC2
    components: replace the class name and a TorchRL TD-MPC2 pipeline plans with MBDPO.

    ``MBDPOPlanner(world_model, policy_prior, q_ensemble, *, horizon=3, discount=0.99, num_samples=512,
    num_elites=64, num_pi_trajs=24, temperature=0.5, observation_key=None, action_key=None,
    is_init_key="is_init", prev_mean_key="_mbdpo_prev_plan", action_dim=None)`` as ``TdMpc2Planner``
    (``iterations``, ``min_std`` and ``max_std`` are MPPI's: accepted, unused, and a warning says so when
    they differ from TorchRL's defaults), plus MBDPO's:

    Keyword Args:
        steps, beta0, betaT: the diffusion schedule (``steps - 1`` denoising iterations).
        energy, energy_eta: the energy network (:func:`~torchrl_mbdpo.modules.make_energy_network`) and its
            weight in the return; ``energy=None`` needs ``energy_eta=0``.
        score_source, score_network: ``"mc"`` (Monte-Carlo score) or ``"network"`` (the amortised score
            network only, :func:`~torchrl_mbdpo.modules.make_score_network`).
        termination: a termination head for episodic tasks (default: the world model's ``done_head``).
        action_noise: exploration noise on the executed action.
        precision, max_batch_rows: as :class:`DiffusionActor`.

    The warm start (the previous clean plan) is carried under ``prev_mean_key`` (private, as TorchRL's).
    ``world_model``, ``policy_prior`` and ``q_ensemble`` return the live components, as ``TdMpc2Planner``'s.
    """

    def __init__(
        self,
        world_model,
        policy_prior,
        q_ensemble,
        *,
        horizon: int = 3,
        discount: float = 0.99,
        num_samples: int = 512,
        num_elites: int = 64,
        num_pi_trajs: int = 24,
        temperature: float = 0.5,
        observation_key: NestedKey | None = None,
        action_key: NestedKey | None = None,
        is_init_key: NestedKey = "is_init",
        prev_mean_key: NestedKey = "_mbdpo_prev_plan",
        action_dim: int | None = None,
        iterations: int = 6,
        min_std: float = 0.05,
        max_std: float = 2.0,
        steps: int = 20,
        beta0: float = 1e-4,
        betaT: float = 1e-2,
        energy=None,
        energy_eta: float = 0.01,
        score_source: str = "mc",
        score_network=None,
        termination=None,
        action_noise: float = 0.05,
        precision: str = "fp32",
        max_batch_rows: int | None = None,
    ):
        unused = {k: v for k, v in dict(iterations=iterations, min_std=min_std, max_std=max_std).items() if v != _MPPI_ONLY_DEFAULTS[k]}
        if unused:
            warnings.warn(
                f"MBDPOPlanner ignores TdMpc2Planner's MPPI options {unused}: the diffusion sampler's noise follows its "
                f"schedule (steps={steps}).",
                stacklevel=2,
            )
        if energy is None and energy_eta:
            raise TypeError(
                "MBDPOPlanner shapes returns with the energy network: pass energy= "
                "(torchrl_mbdpo.modules.make_energy_network(...), shared with the loss), or energy_eta=0."
            )
        if score_source == "network" and score_network is None:
            raise TypeError("score_source='network' needs score_network= (torchrl_mbdpo.modules.make_score_network(...)).")
        model = TorchRLComponents(
            world_model, policy_prior, q_ensemble, horizon=horizon, energy=energy, score_network=score_network, termination=termination
        )
        if action_dim is not None and action_dim != model.cfg.action_dim:
            raise ValueError(f"action_dim={action_dim}, but the policy prior acts in {model.cfg.action_dim} dims.")
        encoder_key = world_model.encoder.in_keys[0]
        if observation_key is not None and observation_key != encoder_key:
            raise ValueError(f"observation_key must match the world-model encoder input key, got {observation_key!r} and {encoder_key!r}.")
        planner = PlannerConfig(
            horizon=horizon,
            steps=steps,
            beta0=beta0,
            betaT=betaT,
            num_samples=num_samples,
            num_elites=num_elites,
            num_pi_trajs=num_pi_trajs,
            temperature=temperature,
            action_noise=action_noise,
            energy_eta=energy_eta,
            score_source=score_source,
        )
        super().__init__(
            model,
            planner,
            discount,
            energy_norm=model.energy_norm,
            observation_key=encoder_key,
            max_batch_rows=max_batch_rows,
            precision=precision,
            action_key=action_key or policy_prior.out_keys[0],
            is_init_key=is_init_key,
            plan_key=prev_mean_key,
        )
        self.horizon, self.num_samples, self.num_elites, self.num_pi_trajs = horizon, num_samples, num_elites, num_pi_trajs
        self.temperature, self.action_dim, self.prev_mean_key = temperature, model.cfg.action_dim, prev_mean_key

    @property
    def world_model(self):
        return self.latent_model.world_model

    @property
    def policy_prior(self):
        return self.latent_model.policy_prior

    @property
    def q_ensemble(self):
        return self.latent_model.q_ensemble

    @property
    def energy(self):
        return self.latent_model.energy

    @property
    def score_network(self):
        return self.latent_model.score_net
