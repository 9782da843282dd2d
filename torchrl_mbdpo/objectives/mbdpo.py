"""``MBDPOLoss``: the training objective of MBDPO (spec §2), as a TorchRL ``LossModule``.

Two optimisers train two disjoint parameter sets, as in the official agent (TD3 pattern):

- :meth:`MBDPOLoss.model_loss` trains the world model: latent consistency, reward, value (TD(0)
  targets from a Polyak-averaged Q ensemble), termination (episodic tasks), the contrastive energy
  net F and, optionally, the amortised score network. It returns ``(loss, metadata)``, the metadata
  holding each term (unweighted) and the detached rollout latents under ``"actor_latents"``;
- :meth:`MBDPOLoss.actor_loss_from_latents` trains the policy prior on those latents.

This is the protocol of TorchRL's ``TdMpc2Loss`` (torchrl >= 0.15), whose constructor
``MBDPOLoss(world_model, policy_prior, q_ensemble, *, horizon=..., ...)`` also accepts: TorchRL's own
TD-MPC2 components then carry the model (see :class:`~torchrl_mbdpo.modules.TorchRLComponents`).
:func:`torchrl_mbdpo.trainers.optimization.update` runs one official update step with the optimisers of
:func:`~torchrl_mbdpo.trainers.optimization.make_optimizers` (the training step lives with the trainers).
The math lives in :mod:`torchrl_mbdpo.objectives.utils` as pure tensor functions; this module maps
TorchRL's batch-first ``[B, H]`` slices onto them and owns the state (target Qs, running statistics).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from tensordict import TensorDict, TensorDictBase, TensorDictParams
from tensordict.utils import NestedKey
from torchrl.objectives import LossModule

from ..modules.energy import EnergyNormalizer
from ..modules.functional import (
    binary_contrastive_loss,
    consistency_loss,
    contrastive_pairs,
    diffusion_schedule,
    ema_moments,
    mc_score_target,
    negative_candidates,
    policy_loss,
    random_q_pair,
    rho_weighted_ce,
    rho_weights,
    score_candidates,
    select_hard_negatives,
    td_target,
    termination_loss,
    value_loss,
)
from ..modules.planning import world_model_value
from ..modules.scale import RunningScale
from ..modules.torchrl_components import TorchRLComponents, next_key

__all__ = ["MBDPOLoss", "TDMPC2Loss"]

CONTRASTIVE_PAIRINGS = ("official", "aligned")
TARGET_Q_PAIRS = ("official", "random")


class _Batch(NamedTuple):
    """A slice batch in the spec's time-first layout."""

    obs0: torch.Tensor  # (B, *obs)
    next_obs: torch.Tensor  # (H, B, *obs)
    action: torch.Tensor  # (H, B, A)
    reward: torch.Tensor  # (H, B, 1)
    terminated: torch.Tensor  # (H, B, 1) float
    task: torch.Tensor | None  # (B,) long, multi-task only
    discount: torch.Tensor  # () or (B, 1)


class MBDPOLoss(LossModule):
    """MBDPO / TD-MPC2 objective over an :class:`~torchrl_mbdpo.modules.MBDPOWorldModel`, or over
    TorchRL's TD-MPC2 components.

    Input: a TensorDict of ``[B, H]`` slices of consecutive transitions (time is the last batch dim;
    a flat ``[B*H]`` sample from ``SliceSampler`` is reshaped with the model's horizon) with
    ``observation``, ``action``, ``("next", "observation")``, ``("next", "reward")``,
    ``("next", "terminated")`` and, multi-task, ``task``. An optional per-sample ``discount`` entry
    overrides the constructor's ``discount`` (multi-task: one gamma per task). ``truncated``/``done``
    are ignored: only ``terminated`` stops the bootstrap.

    Two ways to build it, one class:

    - ``MBDPOLoss(world_model)`` with an :class:`~torchrl_mbdpo.modules.MBDPOWorldModel` (which holds the
      policy prior, the Q ensemble, F, the score network and, episodic, the termination head);
    - ``MBDPOLoss(world_model, policy_prior, q_ensemble, *, horizon=3, ...)`` with TorchRL's TD-MPC2
      components, as ``torchrl.objectives.TdMpc2Loss`` takes them, plus MBDPO's ``energy`` (required
      unless ``energy_coef=0``), ``score_network`` (with ``use_score_network``) and ``termination``
      (or the world model's ``done_head``).

    Args:
        world_model: the world model; its parameters are registered on the loss.
        policy_prior, q_ensemble: TorchRL's TD-MPC2 policy prior and ``TdMpc2QEnsemble`` (second form).

    Keyword Args:
        horizon: slice length (second form; the first reads ``world_model.cfg.horizon``).
        discount: gamma of the TD target and of the score target's planner return (a buffer); a tensor
            gives one gamma per task index (multi-task).
        rho: temporal weight ``rho^t`` of the rollout losses.
        consistency_coef, reward_coef, value_coef, termination_coef, energy_coef, score_coef: loss
            coefficients. ``model_loss``'s metadata holds the unweighted terms, ``forward`` the weighted ones.
        entropy_coef: weight of the policy's scaled entropy.
        contrastive_pairing: ``"official"`` reproduces the released code's mis-paired positives,
            ``"aligned"`` pairs each latent with its own action (spec §2.2).
        contrastive_neg_noise: std of the noisy negative around the policy action.
        contrastive_momentum: momentum of the running energy statistics.
        contrastive_eta: weight of the energy in the planner return used by the score target.
        use_score_network: train the amortised score network (``loss_score``).
        score_num_samples, score_temperature, diffusion_steps, beta0, betaT: the MC score target.
        target_q_pair: ``"official"``: min over target heads 0 and 1; ``"random"``: a random pair (TD-MPC2).
        scale_tau: step size of the policy's :class:`RunningScale`.
        observation_key, action_key, reward_key, terminated_key: TorchRL's key options (``reward`` and
            ``terminated`` are read under ``"next"``); :meth:`set_keys` renames any key later.

    Target Qs: ``target_qvalue_params`` is the model's Polyak copy of the Q heads (``target_q_params``),
    paired with ``qvalue_params`` (the online heads), so ``torchrl.objectives.SoftUpdate(loss, tau=0.01)``
    averages them (and TorchRL's ``q_ensemble.soft_update_target`` updates the same tensors).

    Energy statistics: ``energy_norm`` is the model's ``EnergyNormalizer`` (its ``mean``/``std``
    buffers), which the planner reads; this loss updates it with ``contrastive_momentum``.
    """

    @dataclass
    class _AcceptedKeys:
        """Configurable input keys (``loss.set_keys(...)``).

        Attributes:
            observation: observations ``o_t``. Defaults to ``"observation"``.
            action: actions ``a_t``. Defaults to ``"action"``.
            reward: rewards ``r_t``. Defaults to ``("next", "reward")``.
            terminated: true terminations (no bootstrap). Defaults to ``("next", "terminated")``.
            next_observation: observations ``o_{t+1}``. Defaults to ``("next", "observation")``.
            task: task index (multi-task). Defaults to ``"task"``.
            discount: optional per-sample discount. Defaults to ``"discount"``.
        """

        observation: NestedKey = "observation"
        action: NestedKey = "action"
        reward: NestedKey = ("next", "reward")
        terminated: NestedKey = ("next", "terminated")
        next_observation: NestedKey = ("next", "observation")
        task: NestedKey = "task"
        discount: NestedKey = "discount"

    tensor_keys: _AcceptedKeys
    default_keys = _AcceptedKeys
    trains_energy = True  # False in TDMPC2Loss: no F term
    qvalue_params: TensorDictParams
    target_qvalue_params: TensorDictParams

    def __init__(
        self,
        world_model,
        policy_prior=None,
        q_ensemble=None,
        *,
        horizon: int | None = None,
        discount: float | torch.Tensor = 0.99,
        rho: float = 0.5,
        consistency_coef: float = 20.0,
        reward_coef: float = 0.1,
        value_coef: float = 0.1,
        termination_coef: float = 1.0,
        energy_coef: float = 1.0,
        score_coef: float = 1.0,
        entropy_coef: float = 1e-4,
        contrastive_pairing: str = "official",
        contrastive_neg_noise: float = 0.5,
        contrastive_momentum: float = 0.99,
        contrastive_eta: float = 0.01,
        use_score_network: bool = False,
        score_num_samples: int = 64,
        score_temperature: float = 0.5,
        diffusion_steps: int = 20,
        beta0: float = 1e-4,
        betaT: float = 1e-2,
        target_q_pair: str = "official",
        scale_tau: float = 0.01,
        energy=None,
        score_network=None,
        termination=None,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        reward_key: NestedKey = "reward",
        terminated_key: NestedKey = "terminated",
    ):
        if contrastive_pairing not in CONTRASTIVE_PAIRINGS:
            raise ValueError(f"contrastive_pairing must be one of {CONTRASTIVE_PAIRINGS}, got {contrastive_pairing!r}")
        if target_q_pair not in TARGET_Q_PAIRS:
            raise ValueError(f"target_q_pair must be one of {TARGET_Q_PAIRS}, got {target_q_pair!r}")
        if not 0.0 <= contrastive_momentum < 1.0:
            raise ValueError(f"contrastive_momentum must lie in [0, 1), got {contrastive_momentum}")
        if not 0.0 < rho <= 1.0:
            raise ValueError(f"rho must lie in (0, 1], got {rho}")
        if use_score_network and score_num_samples < 2:
            raise ValueError(f"score_num_samples must be >= 2 (the returns are z-scored), got {score_num_samples}")
        super().__init__()
        if (policy_prior is None) != (q_ensemble is None):
            raise TypeError("Pass both policy_prior and q_ensemble (TorchRL's TD-MPC2 components), or neither (an MBDPOWorldModel).")
        if policy_prior is None:
            extras = [
                name for name, v in (("energy", energy), ("score_network", score_network), ("termination", termination)) if v is not None
            ]
            if extras:
                raise TypeError(f"{extras}: an MBDPOWorldModel holds its own; these options go with TorchRL's components.")
            if horizon is not None and horizon != world_model.cfg.horizon:
                raise ValueError(f"horizon={horizon}, but the world model was built for horizon {world_model.cfg.horizon}.")
            self.world_model = world_model
            latent_model = world_model
        else:
            if energy is None and self.trains_energy and energy_coef:
                raise TypeError(
                    "MBDPOLoss on TorchRL's components needs energy= (an MBDPO energy network, "
                    "torchrl_mbdpo.modules.make_energy_network(latent_dim, action_dim)), or energy_coef=0."
                )
            if use_score_network and score_network is None:
                raise TypeError("use_score_network=True needs score_network= (torchrl_mbdpo.modules.make_score_network(...)).")
            self.world_model, self.policy_prior, self.q_ensemble = world_model, policy_prior, q_ensemble
            self.energy, self.score_network = energy, score_network
            if termination is not None:
                self.termination = termination
            latent_model = TorchRLComponents(
                world_model,
                policy_prior,
                q_ensemble,
                horizon=horizon or 3,
                energy=energy,
                score_network=score_network,
                termination=termination,
            )
        # The tensor-level model the math runs on (the world model itself, or the view of TorchRL's
        # components); kept out of the module tree, whose entries are the components above.
        self.__dict__["latent_model"] = latent_model
        if latent_model.cfg.num_q < 2:
            raise ValueError(f"The TD target takes the min of two Q heads: num_q must be >= 2, got {latent_model.cfg.num_q}")
        self.rho = float(rho)
        self.consistency_coef = float(consistency_coef)
        self.reward_coef = float(reward_coef)
        self.value_coef = float(value_coef)
        self.termination_coef = float(termination_coef)
        self.energy_coef = float(energy_coef)
        self.score_coef = float(score_coef)
        self.entropy_coef = float(entropy_coef)
        self.contrastive_pairing = contrastive_pairing
        self.contrastive_neg_noise = float(contrastive_neg_noise)
        self.contrastive_momentum = float(contrastive_momentum)
        self.contrastive_eta = float(contrastive_eta)
        self.use_score_network = bool(use_score_network)
        self.score_num_samples = int(score_num_samples)
        self.score_temperature = float(score_temperature)
        self.target_q_pair = target_q_pair
        self.register_buffer("discount", torch.as_tensor(discount, dtype=torch.float32))
        _, abar = diffusion_schedule(diffusion_steps, beta0, betaT)
        self.register_buffer("score_alphas_cumprod", abar, persistent=False)

        # The model's own online and target Q weights, under the names TorchRL's TargetNetUpdater pairs
        # (``target_X_params`` <- ``X_params``).
        self.qvalue_params = latent_model.q_params
        self.target_qvalue_params = latent_model.target_q_params
        self._has_update_associated["qvalue"] = False

        # The planner's normaliser, shared so that it reads the statistics this loss updates.
        energy_norm = getattr(latent_model, "energy_norm", None)
        self.energy_norm = energy_norm if energy_norm is not None else EnergyNormalizer()
        self.scale = RunningScale(tau=scale_tau)
        self.set_keys(
            observation=observation_key,
            action=action_key,
            reward=next_key(reward_key),
            terminated=next_key(terminated_key),
            next_observation=next_key(observation_key),
        )
        self._in_keys = None
        self._out_keys = None

    @property
    def horizon(self) -> int:
        return self.latent_model.cfg.horizon

    # ------------------------------------------------------------------ TorchRL plumbing
    def _forward_value_estimator_keys(self, **kwargs) -> None:
        # No value estimator: the TD(0) target is computed in ``td_targets``.
        self._in_keys = None

    def make_value_estimator(self, value_type=None, **hyperparams):
        raise NotImplementedError(
            "MBDPOLoss computes its TD(0) target itself (min of two target Q heads). Set the discount with "
            "MBDPOLoss(discount=...) or per sample under the 'discount' key of the batch."
        )

    def _set_in_keys(self):
        keys = self.tensor_keys
        in_keys = [keys.observation, keys.action, keys.reward, keys.terminated, keys.next_observation]
        if self.latent_model.cfg.multitask:
            in_keys.append(keys.task)
        self._in_keys = in_keys

    @property
    def in_keys(self):
        if self._in_keys is None:
            self._set_in_keys()
        return self._in_keys

    @in_keys.setter
    def in_keys(self, values):
        self._in_keys = values

    @property
    def out_keys(self):
        if self._out_keys is None:
            keys = ["loss_consistency", "loss_reward", "loss_value"]
            if self.latent_model.cfg.episodic:
                keys.append("loss_termination")
            if self.trains_energy:
                keys.append("loss_energy")
            if self.use_score_network:
                keys.append("loss_score")
            self._out_keys = keys + ["loss_actor"]
        return self._out_keys

    @out_keys.setter
    def out_keys(self, values):
        self._out_keys = values

    # ------------------------------------------------------------------ batch layout
    def _time_first(self, tensordict: TensorDictBase) -> _Batch:
        """Read a ``[B, H]`` slice batch into the spec's time-first tensors."""
        if tensordict.batch_dims == 1:
            tensordict = tensordict.reshape(-1, self.horizon)
        if tensordict.batch_dims != 2:
            raise ValueError(f"MBDPOLoss expects a [B, H] batch of slices (time last), got batch_size={tuple(tensordict.batch_size)}")
        keys = self.tensor_keys

        def require(key):
            value = tensordict.get(key, None)
            if value is None:
                raise KeyError(
                    f"MBDPOLoss: the batch has no entry {key!r}. Rename it with loss.set_keys(...); current keys: {self.tensor_keys}"
                )
            return value

        def per_step(key):
            x = require(key)
            return (x.unsqueeze(-1) if x.ndim == 2 else x).transpose(0, 1)

        reward = per_step(keys.reward)
        # Required, not defaulted to zeros: a misnamed key would otherwise silently bootstrap through
        # every true termination.
        terminated = per_step(keys.terminated).to(reward.dtype)
        task = None
        if self.latent_model.cfg.multitask:
            task = require(keys.task)[:, 0].reshape(-1).long()
        discount = tensordict.get(keys.discount, None)
        if discount is None:  # the constructor's: one gamma, or one per task index
            discount = self.discount if self.discount.ndim == 0 else self.discount[task].unsqueeze(-1)
        else:
            discount = discount.reshape(*tensordict.batch_size[:1], -1)[:, :1].to(reward.dtype)
        return _Batch(
            obs0=require(keys.observation)[:, 0],
            next_obs=require(keys.next_observation).transpose(0, 1),
            action=require(keys.action).transpose(0, 1),
            reward=reward,
            terminated=terminated,
            task=task,
            discount=discount,
        )

    # ------------------------------------------------------------------ spec §2.1 pieces
    def _target_pair(self, device) -> torch.Tensor:
        if self.target_q_pair == "official":
            return torch.arange(2, device=device)
        return random_q_pair(self.latent_model.cfg.num_q, device)

    @torch.no_grad()
    def _td_targets(self, batch: _Batch, next_z: torch.Tensor) -> torch.Tensor:
        """``TD_t = r_t + gamma (1 - term_t) min(Qtgt_i, Qtgt_j)(zn_{t+1}, a' ~ pi(zn_{t+1}))``, ``(H, B, 1)``.

        ``next_z`` are the next observations encoded by the *online* encoder (TD-MPC2 has no target encoder).
        """
        wm = self.latent_model
        next_action = wm.pi(next_z, batch.task).action
        next_q = wm.q_value(next_z, next_action, batch.task, reduce="min", pair=self._target_pair(next_z.device), source="target")
        return td_target(batch.reward, batch.terminated, next_q, batch.discount)

    def td_targets(self, tensordict: TensorDictBase) -> torch.Tensor:
        """TD targets of a ``[B, H]`` batch, batch-first ``(B, H, 1)`` (for inspection and tests)."""
        batch = self._time_first(tensordict)
        with torch.no_grad():
            next_z = self.latent_model.encode_obs(batch.next_obs, batch.task)
        return self._td_targets(batch, next_z).transpose(0, 1)

    def _latent_rollout(self, batch: _Batch) -> torch.Tensor:
        """``z_0 = enc(o_0)``, ``z_{t+1} = d(z_t, a_t)``: the ``(H+1, B, L)`` imagined latents, with gradient."""
        wm = self.latent_model
        z = wm.encode_obs(batch.obs0, batch.task)
        zs = [z]
        for action in batch.action:
            z = wm.next(z, action, batch.task)
            zs.append(z)
        return torch.stack(zs)

    # ------------------------------------------------------------------ spec §2.2
    def normalized_energy(self, logits: torch.Tensor) -> torch.Tensor:
        """``clamp((F - mu_F) / max(sigma_F, 1e-6), -clip, clip)`` with the running statistics: the
        planner's energy shaping (spec §3.2), computed by the same ``EnergyNormalizer``."""
        return self.energy_norm(logits)

    def _energy_loss(self, zs: torch.Tensor, actions: torch.Tensor, task) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Binary contrastive loss of F on ``z_0..z_{H-1}`` (detached) and the buffer actions; updates the
        running statistics. Returns ``(loss, pos_logits, neg_logits)``."""
        wm = self.latent_model
        z, a_pos, task_flat = contrastive_pairs(zs.detach(), actions, task, self.contrastive_pairing)
        pos_logits = wm.energy_logit(z, a_pos, task_flat)
        with torch.no_grad():
            candidates = negative_candidates(wm.pi(z, task_flat).action, self.contrastive_neg_noise)
            num_candidates = candidates.shape[1]
            candidate_logits = wm.energy_logit(
                z.repeat_interleave(num_candidates, 0),
                candidates.flatten(0, 1),
                None if task_flat is None else task_flat.repeat_interleave(num_candidates),
            ).view(-1, num_candidates)
            hard_negatives = select_hard_negatives(candidates, candidate_logits)
        neg_logits = wm.energy_logit(z, hard_negatives, task_flat)
        loss = binary_contrastive_loss(pos_logits, neg_logits)
        with torch.no_grad():
            mean, std = ema_moments(
                self.energy_norm.mean,
                self.energy_norm.std,
                torch.cat([pos_logits, neg_logits]),
                self.contrastive_momentum,
            )
            # A non-finite batch (skipped by update()) must not poison the statistics the planner reads.
            self.energy_norm.mean.copy_(torch.where(torch.isfinite(mean), mean, self.energy_norm.mean))
            self.energy_norm.std.copy_(torch.where(torch.isfinite(std), std, self.energy_norm.std))
        return loss, pos_logits.detach(), neg_logits.detach()

    # ------------------------------------------------------------------ spec §2.3
    def _score_loss(self, z0: torch.Tensor, task, discount: torch.Tensor) -> torch.Tensor:
        """Score matching on one ``(z, tau, x_tau)`` triple: ``MSE(s_theta(z*, x_tau, tau), MC target)``.

        ``z0``: ``(1, L)``, **not** detached (as the official code: the gradient reaches the encoder).
        """
        wm = self.latent_model
        horizon, action_dim = wm.cfg.horizon, wm.cfg.action_dim
        num_steps = self.score_alphas_cumprod.shape[0]
        with torch.no_grad():
            tau = torch.randint(1, num_steps, (1,), device=z0.device)
            abar_tau = self.score_alphas_cumprod[tau].squeeze(0)
            # x_tau ~ N(0, I): not drawn from the forward process (official behaviour, spec §7 bug 6).
            x_tau = torch.randn(horizon, action_dim, device=z0.device, dtype=z0.dtype)
            noise = torch.randn(self.score_num_samples, horizon, action_dim, device=z0.device, dtype=z0.dtype)
            candidates = score_candidates(x_tau, abar_tau, noise)
            # The planner's return (spec §3.2); its terminal Q uses the model's current mode, i.e. dropout
            # on during update(), as the official code.
            values = world_model_value(
                wm,
                z0.detach(),
                candidates.unsqueeze(0),
                task,
                discount,
                self.contrastive_eta,
                self.normalized_energy,
            ).nan_to_num(0.0)
            target = mc_score_target(x_tau, candidates, values.reshape(-1), abar_tau, self.score_temperature)
        prediction = wm.score(z0, x_tau.unsqueeze(0), tau, task).squeeze(0)
        return (prediction.float() - target.float()).pow(2).mean()

    # ------------------------------------------------------------------ entry points
    def _model_terms(self, tensordict: TensorDictBase) -> tuple[dict, dict, _Batch]:
        """The world-model terms of spec §2.1 (unweighted, with their coefficients) and the metadata."""
        wm = self.latent_model
        batch = self._time_first(tensordict)
        horizon = batch.action.shape[0]
        with torch.no_grad():
            next_z = wm.encode_obs(batch.next_obs, batch.task)
        td_targets = self._td_targets(batch, next_z)

        zs = self._latent_rollout(batch)
        rho = rho_weights(self.rho, horizon, device=zs.device, dtype=zs.dtype)
        z_pred = zs[:-1]
        reward_logits = wm.reward(z_pred, batch.action, batch.task)
        q_logits = wm.q_logits(z_pred, batch.action, batch.task)  # all heads, dropout as the model's mode
        terms = {
            "loss_consistency": (consistency_loss(zs[1:], next_z, rho), self.consistency_coef),
            "loss_reward": (rho_weighted_ce(reward_logits, batch.reward, wm.bins, rho), self.reward_coef),
            "loss_value": (value_loss(q_logits, td_targets, wm.bins, rho), self.value_coef),
        }
        metrics = {}
        if wm.cfg.episodic:
            termination_logits = wm.termination(zs[1:], batch.task)
            terms["loss_termination"] = (termination_loss(termination_logits, batch.terminated), self.termination_coef)
        if self.trains_energy and wm.energy is not None:
            energy, pos_logits, neg_logits = self._energy_loss(z_pred, batch.action, batch.task)
            terms["loss_energy"] = (energy, self.energy_coef)
            metrics.update(
                energy_pos_logit=pos_logits.mean(),
                energy_neg_logit=neg_logits.mean(),
                energy_mean=self.energy_norm.mean.detach().clone(),
                energy_std=self.energy_norm.std.detach().clone(),
            )
        if self.use_score_network:
            # After the energy loss on purpose: the score target reads the statistics it just updated.
            discount0 = batch.discount if batch.discount.ndim == 0 else batch.discount[:1]
            task0 = None if batch.task is None else batch.task[:1]
            terms["loss_score"] = (self._score_loss(zs[0, :1], task0, discount0), self.score_coef)
        metrics.update(td_target=td_targets.mean(), actor_latents=zs.detach().transpose(0, 1))
        if batch.task is not None:
            metrics["task"] = batch.task
        return terms, metrics, batch

    def model_loss(self, tensordict: TensorDictBase) -> tuple[torch.Tensor, TensorDictBase]:
        """World-model objective of spec §2.1, TorchRL's ``TdMpc2Loss.model_loss`` protocol.

        Returns ``(loss, metadata)``: ``loss`` is the weighted sum of the terms; ``metadata`` holds each term
        unweighted (``loss_consistency``, ``loss_reward``, ``loss_value`` and, where they apply,
        ``loss_termination``, ``loss_energy``, ``loss_score``), metrics (``td_target``, the energy
        statistics), the detached rollout latents ``actor_latents`` ``(B, H+1, L)`` that
        :meth:`actor_loss_from_latents` reads and, multi-task, ``task``."""
        terms, metrics, _ = self._model_terms(tensordict)
        total = sum(coef * value for value, coef in terms.values())
        metadata = TensorDict({**{k: value for k, (value, _) in terms.items()}, **metrics}, batch_size=[])
        return total, metadata

    def weighted_terms(self, metadata: TensorDictBase) -> TensorDictBase:
        """The ``loss_*`` terms of a :meth:`model_loss` metadata, multiplied by their coefficients."""
        return TensorDict(
            {key: getattr(self, self._COEFS[key]) * metadata[key] for key in self._COEFS if key in metadata.keys()}, batch_size=[]
        )

    _COEFS = {
        "loss_consistency": "consistency_coef",
        "loss_reward": "reward_coef",
        "loss_value": "value_coef",
        "loss_termination": "termination_coef",
        "loss_energy": "energy_coef",
        "loss_score": "score_coef",
    }

    def actor_loss_from_latents(self, latents: torch.Tensor, task: torch.Tensor | None = None) -> tuple[torch.Tensor, TensorDictBase]:
        """Policy-prior objective of spec §2.4 on detached latents ``(B, H+1, L)`` (``actor_latents`` of
        :meth:`model_loss`), TorchRL's ``TdMpc2Loss.actor_loss_from_latents`` protocol; multi-task models
        also need the ``task`` of each row.

        Returns ``(loss, metadata)`` with ``pi_entropy``, ``pi_scaled_entropy``, ``pi_scale``. Q uses the
        online weights, detached, in the model's current mode (train mode in :func:`update`: dropout on),
        averaged over a random pair of heads. Updates the running scale. Multi-task, the shared task
        embedding also gets a gradient (through the policy's and the Qs' inputs), as in TD-MPC2 (spec §2.4).
        """
        wm = self.latent_model
        zs = latents.detach().transpose(0, 1)
        sample = wm.pi(zs, task)
        q = wm.q_value(zs, sample.action, task, reduce="avg", source="detached")
        self.scale.update(q[0])
        rho = rho_weights(self.rho, zs.shape[0], device=zs.device, dtype=zs.dtype)
        loss = policy_loss(self.scale(q), sample.scaled_entropy, rho, self.entropy_coef)
        metadata = TensorDict(
            {
                "pi_entropy": -sample.log_prob.detach().mean(),
                "pi_scaled_entropy": sample.scaled_entropy.detach().mean(),
                "pi_scale": self.scale.value.detach().clone().squeeze(),
            },
            batch_size=[],
        )
        return loss, metadata

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        """All ``loss_*`` terms, weighted (model and ``loss_actor``), and metrics, scalars only, for logging
        or a single optimiser.

        Summing the ``loss_*`` entries is safe: the model losses give the policy no gradient, and the
        policy loss reaches only the policy (its latents and Q weights are detached).
        """
        _, metadata = self.model_loss(tensordict)
        actor_loss, actor_metadata = self.actor_loss_from_latents(metadata["actor_latents"], metadata.get("task", None))
        out = metadata.exclude("actor_latents", "task", *self._COEFS).update(self.weighted_terms(metadata))
        return out.update(actor_metadata).set("loss_actor", actor_loss)


class TDMPC2Loss(MBDPOLoss):
    """TD-MPC2's objective on the same world model: :class:`MBDPOLoss` without the energy and score
    terms (consistency, reward, value, termination and the policy prior are the same code), with
    TD-MPC2's TD target (min over a *random* pair of target Q heads). Train it with :func:`update` and
    plan with :class:`~torchrl_mbdpo.modules.MPPIActor`; the world model (F and the score net included,
    untrained) keeps MBDPO's layout, so checkpoints load in either algorithm.

    Keyword Args: ``discount``, ``rho``, ``consistency_coef``, ``reward_coef``, ``value_coef``,
    ``termination_coef``, ``entropy_coef``, ``target_q_pair`` (default ``"random"``), ``scale_tau``.
    """

    trains_energy = False
    _MBDPO_ONLY = (
        "energy_coef",
        "score_coef",
        "contrastive_pairing",
        "contrastive_neg_noise",
        "contrastive_momentum",
        "contrastive_eta",
        "use_score_network",
        "score_num_samples",
        "score_temperature",
        "diffusion_steps",
        "beta0",
        "betaT",
        "energy",
        "score_network",
    )

    def __init__(self, world_model, policy_prior=None, q_ensemble=None, *, target_q_pair: str = "random", **kwargs):
        mbdpo_only = sorted(set(kwargs) & set(self._MBDPO_ONLY))
        if mbdpo_only:
            raise TypeError(f"TDMPC2Loss has no energy or score terms; drop {mbdpo_only} (MBDPOLoss options)")
        super().__init__(world_model, policy_prior, q_ensemble, target_q_pair=target_q_pair, energy_coef=0.0, **kwargs)


_MOVED = ("UpdateStep", "CompiledUpdate", "make_optimizers", "update")


def __getattr__(name):
    """The training step moved to :mod:`torchrl_mbdpo.trainers.optimization`; the old names still resolve."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module("torchrl_mbdpo.trainers.optimization"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
