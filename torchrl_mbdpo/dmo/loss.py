"""``DMOLoss``: DMO-SAPO, first-order policy optimisation through coupled global and local world models.

Amigo et al., "Coupled Local and Global World Models for Efficient First Order RL" and "First Order
Model-Based RL through Decoupled Backpropagation": the rollouts of :func:`~torchrl_mbdpo.dmo.decoupled.decoupled_rollout`
take their values from a global model (the simulator) and their Jacobians from the world model's
encoder, latent dynamics and reward head (the local model). On top of them, the SAPO objective
(Xing et al., "Stabilizing Reinforcement Learning in Differentiable Multiphysics Simulation"):

- actor, maximised by backpropagation through time over a short horizon ``H``,
  ``J(theta) = E[ sum_{h<H} gamma^h (r_h + alpha H[pi(.|z_h)]) + gamma^H V_psi'(z_H) ]``, with the entropy
  estimated by ``-log pi(a_h|z_h)`` of the reparameterised sample, ``V_psi'`` the target critic; episodes that
  end inside the rollout start a new discounted segment (:func:`~torchrl_mbdpo.dmo.functional.segment_discounts`);
- critic ``V_psi(z)``: a plain scalar regression (MSE) on soft TD(lambda) targets built from the detached
  rewards, entropy bonuses and target values (:func:`~torchrl_mbdpo.dmo.functional.soft_td_lambda_targets`, TorchRL's
  ``td_lambda_return_estimate``);
- temperature (SAC): ``L(alpha) = -log(alpha) (log pi + target_entropy)``, ``target_entropy = -action_dim``;
- local model: one-step accuracy on the global transitions, latent consistency
  ``||d(enc(o_t), a_t) - sg(enc(o_{t+1}))||^2`` plus the two-hot cross entropy of the reward head.

The four losses train disjoint parameter sets (:meth:`DMOLoss.parameter_groups`): the rollout calls the
local model with detached weights and the critic target's weights are buffers, so the actor loss reaches
only the actor; summing every ``loss_*`` entry and stepping one optimiser is therefore valid too.
The equations are in :mod:`torchrl_mbdpo.dmo.functional` (time-first ``(H, B)``
tensors); the loss reads TorchRL's batch-first ``[B, H]`` rollouts and owns the networks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch.func import functional_call
from torchrl.objectives import LossModule

from ..modules.functional import consistency_loss, gaussian_tanh_policy, rho_weighted_ce
from ..modules.layers import mlp, weight_init
from .decoupled import DecoupledRollout, decoupled_rollout
from .functional import sapo_objective, soft_td_lambda_targets, temperature_loss, value_regression_loss

__all__ = ["DMOLoss", "dmo_rollout"]


def _detached_call(module: torch.nn.Module, *args: torch.Tensor) -> torch.Tensor:
    """``module(*args)`` with its parameters detached: gradient flows to the inputs only."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, params, args)


def _check_network(network, name: str, latent_dim: int, out_dim: int, out_key: str) -> None:
    """One clear error for a network that cannot serve as DMOLoss's actor or critic."""
    if not isinstance(network, TensorDictModule):
        raise TypeError(f"DMOLoss's {name} must be a TensorDictModule (latent -> {out_key!r}), got {type(network).__name__}.")
    with torch.no_grad():
        out = network.module(torch.zeros(1, latent_dim, device=next(iter(network.parameters()), torch.zeros(())).device))
    if tuple(out.shape) != (1, out_dim):
        raise ValueError(
            f"DMOLoss's {name} maps a latent ({latent_dim},) to ({out_dim},) ({out_key}), but this one gives {tuple(out.shape[1:])}."
        )


def dmo_rollout(loss: "DMOLoss", global_model, horizon: int) -> TensorDictBase:
    """An ``H``-step DMO rollout of ``loss``'s policy from ``global_model.observation`` (an
    :class:`~torchrl_mbdpo.dmo.decoupled.EnvGlobalModel`: values from the global model, Jacobians from the
    local one; ``loss.decoupled=False``: the local model's imagination), as the ``[B, H]`` TensorDict
    :meth:`DMOLoss.forward` reads. The loss itself only reads rollouts; this function (or a collector-built
    TensorDict under the loss's keys) makes them."""
    wm = loss.world_model
    obs0 = global_model.observation
    with torch.no_grad():
        z0 = wm.encode_obs(obs0)
    out = decoupled_rollout(
        z0,
        loss.policy,
        global_model,
        encode=wm.encode_obs,
        local_next=lambda z, a: _detached_call(wm.dynamics.module, z, a),
        local_reward=lambda z, a: wm.decode_reward(_detached_call(wm.reward_head.module, z, a)),
        horizon=horizon,
        decoupled=loss.decoupled,
        obs0=obs0,
    )
    return loss.rollout_to_tensordict(out)


class _Rollout(NamedTuple):
    """A ``[B, H]`` rollout TensorDict in time-first layout."""

    latent: torch.Tensor  # (H, B, L)
    next_latent: torch.Tensor  # (H, B, L)
    action: torch.Tensor  # (H, B, A)
    log_prob: torch.Tensor  # (H, B)
    reward: torch.Tensor  # (H, B)
    done: torch.Tensor  # (H, B) bool
    terminated: torch.Tensor  # (H, B) bool
    observation: torch.Tensor | None  # (H, B, *obs)
    next_observation: torch.Tensor | None  # (H, B, *obs)
    global_reward: torch.Tensor | None  # (H, B)


class DMOLoss(LossModule):
    """DMO-SAPO over an :class:`~torchrl_mbdpo.modules.MBDPOWorldModel` (single-task; state observations, or stacked
    frames with ``obs_type="rgb"``, as in the pixel world model of :mod:`torchrl_mbdpo.dmo`).

    Input of :meth:`forward`: a ``[B, H]`` rollout TensorDict (time last, TorchRL's layout), e.g. from
    :meth:`rollout`, with ``latent`` and ``("next", "latent")`` (carrying the decoupled gradients), ``action``,
    ``action_log_prob`` (``[B, H]``), ``("next", "reward")``, ``("next", "done")``, ``("next", "terminated")``
    (``[B, H, 1]``) and, to fine-tune the local model, ``observation``, ``("next", "observation")`` and
    ``("next", "global_reward")``.

    Output: ``loss_actor``, ``loss_critic``, ``loss_alpha``, ``loss_local_model`` and the detached metrics
    ``alpha``, ``entropy`` (mean ``-log pi``), ``local_consistency``, ``local_reward_ce``.
    ``loss_local_model`` is zero when the rollout has no observations (ablation rollout without a global model).

    Args:
        world_model: the local model (encoder, latent dynamics, reward head), fine-tuned by ``loss_local_model``;
            registered on the loss.

    Keyword Args:
        actor_network: the actor, a ``TensorDictModule`` ``latent -> "policy_params"`` (``2 * action_dim``: the mean and
            raw log-std of the tanh-Gaussian), as TorchRL's ``SACLoss`` receives its networks; default: a 2-layer MLP.
        critic_network: the state-value critic, a ``TensorDictModule`` ``latent -> "state_value"`` (``1``); default: a
            2-layer MLP. Its target copy is made here.
        mlp_dim: hidden width of the default actor and critic (default: ``world_model.cfg.mlp_dim``).
        discount: gamma. lmbda: lambda of the critic's TD(lambda) targets.
        alpha_init: initial entropy temperature (TorchRL SAC's default, 1.0). target_entropy: default ``-action_dim``.
        decoupled: ``False`` runs the "no decoupling" ablation in :meth:`rollout` (pure latent imagination).
        consistency_coef, reward_coef: weights of the local model's one-step losses (TD-MPC2's 20 and 0.1,
            so that fine-tuning keeps the balance the world model was trained with).
        log_std_min, log_std_max: bounds of the actor's log-std (default: the world model's).

    Target critic: ``target_critic_network_params`` pairs with ``critic_network_params``, so
    ``torchrl.objectives.SoftUpdate(loss, tau=...)`` Polyak-averages it.
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable input keys (``loss.set_keys(...)``).

        Attributes:
            latent: ``z_t``, the latent each action was taken from. Defaults to ``"latent"``.
            next_latent: ``z'_t``, the transition's next latent. Defaults to ``("next", "latent")``.
            action: ``a_t``. Defaults to ``"action"``.
            log_prob: ``log pi(a_t | z_t)``. Defaults to ``"action_log_prob"``.
            reward: ``r_t`` (with the decoupled gradient). Defaults to ``("next", "reward")``.
            done: episode ended with the transition. Defaults to ``("next", "done")``.
            terminated: true termination (no bootstrap). Defaults to ``("next", "terminated")``.
            observation: global observation ``o_t``. Defaults to ``"observation"``.
            next_observation: global observation ``o_{t+1}``. Defaults to ``("next", "observation")``.
            global_reward: the global model's reward ``r^g_t``, the local reward head's target (in the
                ablation ``reward`` is the local prediction). Defaults to ``("next", "global_reward")``.
        """

        latent: NestedKey = "latent"
        next_latent: NestedKey = ("next", "latent")
        action: NestedKey = "action"
        log_prob: NestedKey = "action_log_prob"
        reward: NestedKey = ("next", "reward")
        done: NestedKey = ("next", "done")
        terminated: NestedKey = ("next", "terminated")
        observation: NestedKey = "observation"
        next_observation: NestedKey = ("next", "observation")
        global_reward: NestedKey = ("next", "global_reward")

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    actor_network: TensorDictModule
    critic_network: TensorDictModule
    critic_network_params: TensorDictParams
    target_critic_network_params: TensorDictParams

    def __init__(
        self,
        world_model,
        actor_network: TensorDictModule | None = None,
        critic_network: TensorDictModule | None = None,
        *,
        mlp_dim: int | None = None,
        discount: float = 0.99,
        lmbda: float = 0.95,
        alpha_init: float = 1.0,
        target_entropy: float | None = None,
        decoupled: bool = True,
        consistency_coef: float = 20.0,
        reward_coef: float = 0.1,
        log_std_min: float | None = None,
        log_std_max: float | None = None,
    ):
        cfg = world_model.cfg
        if cfg.multitask:
            raise ValueError("DMOLoss is single-task: the world model has a task embedding (task_dim > 0).")
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must lie in (0, 1], got {discount}")
        if not 0.0 <= lmbda <= 1.0:
            raise ValueError(f"lmbda must lie in [0, 1], got {lmbda}")
        if alpha_init <= 0:
            raise ValueError(f"alpha_init must be > 0, got {alpha_init}")
        super().__init__()
        latent_key = self.tensor_keys.latent
        L, A = cfg.latent_dim, cfg.action_dim
        M = cfg.mlp_dim if mlp_dim is None else int(mlp_dim)
        self.world_model = world_model
        self.discount = float(discount)
        self.lmbda = float(lmbda)
        self.decoupled = bool(decoupled)
        self.consistency_coef = float(consistency_coef)
        self.reward_coef = float(reward_coef)
        self.log_std_min = cfg.log_std_min if log_std_min is None else float(log_std_min)
        self.log_std_max = cfg.log_std_max if log_std_max is None else float(log_std_max)
        self.target_entropy = -float(A) if target_entropy is None else float(target_entropy)

        if actor_network is None:
            actor = mlp(L, [M, M], 2 * A)
            actor.apply(weight_init)
            actor_network = TensorDictModule(actor, in_keys=[latent_key], out_keys=["policy_params"])
        if critic_network is None:
            critic = mlp(L, [M, M], 1)
            critic.apply(weight_init)
            critic_network = TensorDictModule(critic, in_keys=[latent_key], out_keys=["state_value"])
        _check_network(actor_network, "actor_network", L, 2 * A, "policy_params")
        _check_network(critic_network, "critic_network", L, 1, "state_value")
        self.actor_network = actor_network
        self.convert_to_functional(critic_network, "critic_network", create_target_params=True)
        self.log_alpha = torch.nn.Parameter(torch.tensor(math.log(alpha_init)))
        self._in_keys = None
        self._out_keys = None

    # ------------------------------------------------------------------ TorchRL plumbing
    def _forward_value_estimator_keys(self, **kwargs) -> None:
        self._in_keys = None  # no value estimator: soft_td_lambda_targets computes the targets

    def make_value_estimator(self, value_type=None, **hyperparams):
        raise NotImplementedError("DMOLoss computes its soft TD(lambda) targets itself; set them with DMOLoss(discount=..., lmbda=...).")

    @property
    def in_keys(self):
        if self._in_keys is None:
            k = self.tensor_keys
            self._in_keys = [
                k.latent,
                k.next_latent,
                k.action,
                k.log_prob,
                k.reward,
                k.done,
                k.terminated,
                k.observation,
                k.next_observation,
                k.global_reward,
            ]
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values):
        self._in_keys = values

    @property
    def out_keys(self):
        if self._out_keys is None:
            self._out_keys = [
                "loss_actor",
                "loss_critic",
                "loss_alpha",
                "loss_local_model",
                "alpha",
                "entropy",
                "local_consistency",
                "local_reward_ce",
            ]
        return self._out_keys

    @out_keys.setter
    def out_keys(self, values):
        self._out_keys = values

    def parameter_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        """The disjoint parameter sets of the four losses, e.g. for one optimiser each."""
        wm = self.world_model
        return {
            "actor": list(self.actor_network.parameters()),
            "critic": list(self.critic_network_params.values(True, True)),
            "alpha": [self.log_alpha],
            "local_model": [*wm.encoder.parameters(), *wm.dynamics.parameters(), *wm.reward_head.parameters()],
        }

    @property
    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp()

    # ------------------------------------------------------------------ networks
    def policy(self, z: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Tanh-Gaussian actor on the latent: ``(action (..., A), log_prob (...))``; ``deterministic`` gives ``tanh(mu)``."""
        mu, raw_log_std = self.actor_network.module(z).chunk(2, dim=-1)
        eps = torch.zeros_like(mu) if deterministic else torch.randn_like(mu)
        sample = gaussian_tanh_policy(mu, raw_log_std, eps, self.log_std_min, self.log_std_max)
        return sample.action, sample.log_prob.squeeze(-1)

    def value(self, z: torch.Tensor, target: bool = False) -> torch.Tensor:
        """``V_psi(z)`` (or the target critic's), ``z.shape[:-1]``. The target critic passes gradient to ``z`` only."""
        if target:
            # functional_call with plain detached tensors: ``to_module`` would swap the target buffers in as
            # Parameters, which then collect (useless) gradients from the actor loss.
            params = {".".join(key[1:]): p.detach() for key, p in self.target_critic_network_params.items(True, True)}
            return functional_call(self.critic_network.module, params, (z,)).squeeze(-1)
        with self.critic_network_params.to_module(self.critic_network):
            return self.critic_network.module(z).squeeze(-1)

    # ------------------------------------------------------------------ rollouts
    def rollout(self, global_model, horizon: int) -> TensorDictBase:
        """An ``H``-step rollout from ``global_model.observation`` (e.g. an
        :class:`~torchrl_mbdpo.dmo.decoupled.EnvGlobalModel`), as the ``[B, H]`` TensorDict :meth:`forward` reads.

        The local model runs with detached weights (the actor loss must not train it) and the global model is
        stepped in both modes; with ``decoupled=False`` its transitions only serve the local-model loss.
        Same as :func:`dmo_rollout` ``(self, global_model, horizon)``.
        """
        return dmo_rollout(self, global_model, horizon)

    def rollout_to_tensordict(self, rollout: DecoupledRollout) -> TensorDictBase:
        """Time-first :class:`DecoupledRollout` tensors -> a batch-first ``[B, H]`` TensorDict under this loss's keys."""
        k = self.tensor_keys
        horizon, batch = rollout.actions.shape[:2]

        def bf(x):
            return x.transpose(0, 1)

        td = TensorDict(batch_size=[batch, horizon], device=rollout.actions.device)
        td.set(k.latent, bf(rollout.latents[:-1]))
        td.set(k.next_latent, bf(rollout.next_latents))
        td.set(k.action, bf(rollout.actions))
        td.set(k.log_prob, bf(rollout.log_probs))
        td.set(k.reward, bf(rollout.rewards).unsqueeze(-1))
        td.set(k.done, bf(rollout.done).unsqueeze(-1))
        td.set(k.terminated, bf(rollout.terminated).unsqueeze(-1))
        if rollout.observations is not None:
            td.set(k.observation, bf(rollout.observations))
        if rollout.next_observations is not None:
            td.set(k.next_observation, bf(rollout.next_observations))
        if rollout.global_rewards is not None:
            td.set(k.global_reward, bf(rollout.global_rewards).unsqueeze(-1))
        return td

    def _time_first(self, tensordict: TensorDictBase) -> _Rollout:
        if tensordict.batch_dims != 2:
            raise ValueError(f"DMOLoss expects a [B, H] rollout (time last), got batch_size={tuple(tensordict.batch_size)}")
        k = self.tensor_keys

        def get(key, required=True):
            value = tensordict.get(key, None)
            if value is None and required:
                raise KeyError(f"DMOLoss: the rollout has no entry {key!r}; rename it with loss.set_keys(...).")
            return None if value is None else value.transpose(0, 1)

        def scalar(key, required=True):
            x = get(key, required)
            return x.squeeze(-1) if x is not None and x.ndim == 3 else x

        return _Rollout(
            latent=get(k.latent),
            next_latent=get(k.next_latent),
            action=get(k.action),
            log_prob=scalar(k.log_prob),
            reward=scalar(k.reward),
            done=scalar(k.done).bool(),
            terminated=scalar(k.terminated).bool(),
            observation=get(k.observation, required=False),
            next_observation=get(k.next_observation, required=False),
            global_reward=scalar(k.global_reward, required=False),
        )

    # ------------------------------------------------------------------ losses
    def actor_loss(self, tensordict: TensorDictBase) -> torch.Tensor:
        """``-mean_b J_b / H`` (:func:`~torchrl_mbdpo.dmo.functional.sapo_objective`): SHAC/SAPO's normalisation by
        batch size and horizon, so the step size does not depend on ``H``. ``alpha`` is detached; ``V`` is the target critic, whose
        weights are buffers: the gradient reaches the actor only (through actions, latents and rewards)."""
        r = self._time_first(tensordict)
        next_values = self.value(r.next_latent, target=True)
        objective = sapo_objective(r.reward, -r.log_prob, next_values, r.done, r.terminated, self.discount, self.alpha)
        return -objective.mean() / r.reward.shape[0]

    def critic_loss(self, tensordict: TensorDictBase) -> torch.Tensor:
        """MSE of ``V(sg(z_t))`` to the soft TD(lambda) targets (:func:`~torchrl_mbdpo.dmo.functional.soft_td_lambda_targets`)."""
        r = self._time_first(tensordict)
        with torch.no_grad():
            next_values = self.value(r.next_latent.detach(), target=True)
            targets = soft_td_lambda_targets(
                r.reward, -r.log_prob, next_values, r.done, r.terminated, self.discount, self.lmbda, self.alpha
            )
        return value_regression_loss(self.value(r.latent.detach()), targets)

    def alpha_loss(self, tensordict: TensorDictBase) -> torch.Tensor:
        """:func:`~torchrl_mbdpo.dmo.functional.temperature_loss` on the rollout's log-probabilities."""
        r = self._time_first(tensordict)
        return temperature_loss(self.log_alpha, r.log_prob, self.target_entropy)

    def local_model_loss(
        self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One-step loss of the local model on global transitions (any leading shape ``(...)``):
        ``consistency_coef * MSE(d(enc(o), a), sg(enc(o'))) + reward_coef * CE(R(enc(o), a), twohot(r))``.

        Trains the encoder, latent dynamics and reward head. Returns ``(loss, consistency, reward_ce)``.
        """
        wm = self.world_model
        leading = action.shape[:-1]
        if obs.shape[: len(leading)] != leading or next_obs.shape != obs.shape:
            raise ValueError(
                f"local_model_loss: obs {tuple(obs.shape)}, next_obs {tuple(next_obs.shape)} and action "
                f"{tuple(action.shape)} must share their leading dims."
            )
        # One flat batch of transitions, in consistency_loss's time-first (1, N, ...) layout.
        obs = obs.reshape(1, -1, *obs.shape[len(leading) :])
        next_obs = next_obs.reshape(obs.shape)
        action = action.detach().reshape(1, -1, action.shape[-1])
        reward = reward.detach().reshape(1, -1, 1)
        z = wm.encode_obs(obs)
        with torch.no_grad():
            z_next = wm.encode_obs(next_obs)
        ones = torch.ones(1, device=z.device, dtype=z.dtype)  # one step: no rho weighting
        consistency = consistency_loss(wm.next(z, action), z_next, ones)
        reward_ce = rho_weighted_ce(wm.reward(z, action), reward, wm.bins, ones)
        return self.consistency_coef * consistency + self.reward_coef * reward_ce, consistency, reward_ce

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        r = self._time_first(tensordict)
        out = {
            "loss_actor": self.actor_loss(tensordict),
            "loss_critic": self.critic_loss(tensordict),
            "loss_alpha": self.alpha_loss(tensordict),
        }
        if r.observation is not None and r.next_observation is not None and r.global_reward is not None:
            loss, consistency, reward_ce = self.local_model_loss(r.observation, r.action, r.next_observation, r.global_reward)
        else:
            loss = consistency = reward_ce = torch.zeros((), device=r.reward.device)
        out.update(
            loss_local_model=loss,
            alpha=self.alpha,
            entropy=(-r.log_prob).mean().detach(),
            local_consistency=consistency.detach(),
            local_reward_ce=reward_ce.detach(),
        )
        return TensorDict(out, batch_size=[])
