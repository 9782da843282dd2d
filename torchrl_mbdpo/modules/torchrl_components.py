"""MBDPO on TorchRL's own TD-MPC2 components (torchrl >= 0.15: ``TdMpc2QEnsemble``, the TD-MPC2 world
model and policy prior of ``torchrl.trainers.algorithms.configs``), plus MBDPO's extra networks.

The planner (:mod:`.planning`) and the loss (:class:`~torchrl_mbdpo.objectives.MBDPOLoss`) are written
against a small tensor-level interface: ``encode_obs``, ``next``, ``reward``, ``decode_reward``,
``energy_logit``, ``termination``, ``pi``, ``q_logits``/``q_value`` (with TorchRL's ``source`` names),
``score``/``score_fn``, ``action_mask`` and a ``cfg`` with the sizes. :class:`MBDPOWorldModel`
implements it on its own networks; :class:`TorchRLComponents` implements it on TorchRL's, so both run
the same math (tested equal on copied weights). Nothing here imports the TorchRL classes themselves:
the components are used through their public TensorDict interface (``in_keys``/``out_keys``,
``.module``, ``q_ensemble(td, source=...)``), so this module also imports on torchrl 0.14.1.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn

from .energy import EnergyNormalizer
from .functional import PolicySample, make_bins, random_q_pair, timestep_embedding, two_hot_inv
from .layers import TaskConditioned, mlp, weight_init, zero_last_layer

__all__ = ["TorchRLComponents", "EnergyNetwork", "make_energy_network", "make_score_network", "make_termination_head", "next_key"]


def next_key(key: NestedKey) -> NestedKey:
    """The ``("next", ...)`` counterpart of a key (unchanged if it already is one), as TorchRL's TD-MPC2 reads
    ``reward_key="reward"`` under ``"next"``."""
    if isinstance(key, (list, tuple)):
        key = tuple(key)
        return key if key[:1] == ("next",) else ("next", *key)
    return ("next", key)


def _out_features(module: nn.Module) -> int:
    """Width of the last ``nn.Linear`` of a network."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError(f"Cannot infer a size from {type(module).__name__}: it has no nn.Linear layer.")
    return linears[-1].out_features


def _align(z: torch.Tensor, *rest: torch.Tensor) -> list[torch.Tensor]:
    """Broadcast a latent ``(*B, L)`` over the candidates ``(*B, N, A)`` of the other inputs (TorchRL's MLP
    concatenates its inputs and needs equal batch shapes; ``TaskConditioned`` does this itself)."""
    target = max((x.shape[:-1] for x in rest), key=len, default=z.shape[:-1])
    if z.shape[:-1] != target:
        z = z.reshape(*z.shape[:-1], *([1] * (len(target) - z.ndim + 1)), z.shape[-1]).expand(*target, z.shape[-1])
    return [z, *rest]


class EnergyNetwork(nn.Module):
    """MBDPO's energy network ``F(z, a)`` (one logit) with the running statistics that normalise it for
    planning (:class:`~torchrl_mbdpo.modules.EnergyNormalizer`, owned here so that the planner and the loss
    that share this module share them)."""

    def __init__(self, latent_dim: int, action_dim: int, mlp_dim: int = 512):
        super().__init__()
        self.net = TaskConditioned(mlp(latent_dim + action_dim, [mlp_dim, mlp_dim], 1))
        self.net.apply(weight_init)
        zero_last_layer(self.net.net)
        self.norm = EnergyNormalizer()

    def forward(self, latent: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return self.net(latent, action)


def make_energy_network(
    latent_dim: int,
    action_dim: int,
    mlp_dim: int = 512,
    *,
    latent_key: NestedKey = "latent",
    action_key: NestedKey = "action",
    energy_key: NestedKey = "energy",
) -> TensorDictModule:
    """F as a ``TensorDictModule`` ``(latent, action) -> energy``: the architecture of TD-MPC2's heads
    (2 x ``mlp_dim`` NormedLinear, last layer zero)."""
    return TensorDictModule(EnergyNetwork(latent_dim, action_dim, mlp_dim), in_keys=[latent_key, action_key], out_keys=[energy_key])


def make_score_network(
    latent_dim: int, action_dim: int, horizon: int, mlp_dim: int = 512, time_embed_dim: int = 64, *, latent_key: NestedKey = "latent"
) -> TensorDictModule:
    """The amortised score network ``s(z, x_tau, emb(tau))`` over flattened ``(H, A)`` plans (arXiv 2605.26282
    §3.3; official ``MBDPO/common/world_model.py:61-68``)."""
    flat = horizon * action_dim
    net = TaskConditioned(mlp(latent_dim + flat + time_embed_dim, [mlp_dim, mlp_dim], flat))
    net.apply(weight_init)
    module = TensorDictModule(net, in_keys=[latent_key, "noisy_plan_flat", "tau_embedding"], out_keys=["score_flat"])
    module.horizon, module.time_embed_dim = horizon, time_embed_dim
    return module


def make_termination_head(latent_dim: int, mlp_dim: int = 512, *, latent_key: NestedKey = ("next", "latent")) -> TensorDictModule:
    """Termination logit of a (next) latent, for episodic tasks (official
    ``MBDPO/common/world_model.py:39-43``)."""
    net = TaskConditioned(mlp(latent_dim, [mlp_dim, mlp_dim], 1))
    net.apply(weight_init)
    return TensorDictModule(net, in_keys=[latent_key], out_keys=[("next", "termination_logit")])


class TorchRLComponents(nn.Module):
    """The latent-model interface of MBDPO's planner and loss over TorchRL's TD-MPC2 components.

    Args:
        world_model: TorchRL ``WorldModel`` with ``encoder``, ``dynamics``, ``reward_head`` (and optionally
            ``done_head``) TensorDict modules (``_make_tdmpc2_world_model``'s layout).
        policy_prior: TorchRL's TD-MPC2 policy prior: ``latent -> (action, mean, log_std, entropy,
            scaled_entropy)``.
        q_ensemble: ``TdMpc2QEnsemble`` (``forward(td, source=...)``, ``q_params``, ``target_q_params``,
            ``num_q``, ``num_bins``, ``vmin``, ``vmax``).

    Keyword Args:
        horizon: planning / slice horizon.
        energy: :func:`make_energy_network` (or None: no energy term).
        score_network: :func:`make_score_network` (or None).
        termination: a termination head (:func:`make_termination_head`); defaults to the world model's
            ``done_head``, if any.
    """

    def __init__(self, world_model, policy_prior, q_ensemble, *, horizon: int = 3, energy=None, score_network=None, termination=None):
        super().__init__()
        self.world_model, self.policy_prior, self.q_ensemble = world_model, policy_prior, q_ensemble
        self.energy, self.score_net = energy, score_network
        self.termination_head = termination if termination is not None else getattr(world_model, "done_head", None)
        try:
            latent_dim = _out_features(world_model.dynamics.module)
            action_dim = _out_features(policy_prior.module) // 2
            q_latent_key, q_action_key = q_ensemble.in_keys
            self._q_keys = (q_latent_key, q_action_key, q_ensemble.out_keys[0])
        except (AttributeError, ValueError) as err:
            raise TypeError(
                "TorchRLComponents expects TorchRL's TD-MPC2 world model, policy prior and Q ensemble "
                "(TensorDict modules built by torchrl.trainers.algorithms.configs)."
            ) from err
        if score_network is not None and getattr(score_network, "horizon", horizon) != horizon:
            raise ValueError(f"The score network was built for horizon {score_network.horizon}, not {horizon}.")
        self.cfg = SimpleNamespace(
            horizon=horizon,
            latent_dim=latent_dim,
            action_dim=action_dim,
            num_q=q_ensemble.num_q,
            multitask=False,
            task_dim=0,
            episodic=self.termination_head is not None,
            time_embed_dim=getattr(score_network, "time_embed_dim", 64),
        )
        self.register_buffer("bins", make_bins(q_ensemble.num_bins, q_ensemble.vmin, q_ensemble.vmax), persistent=False)

    # Parameter groups of the official optimisers (make_optimizers).
    @property
    def encoder(self) -> nn.Module:
        return self.world_model.encoder

    @property
    def policy(self) -> nn.Module:
        return self.policy_prior

    @property
    def done_head(self):
        return self.termination_head

    @property
    def energy_norm(self):
        return None if self.energy is None else self.energy.module.norm

    @property
    def q_params(self):
        return self.q_ensemble.q_params

    @property
    def target_q_params(self):
        return self.q_ensemble.target_q_params

    # ----------------------------------------------------------------- the interface
    def encode_obs(self, obs, task=None):
        return self.world_model.encoder.module(obs)

    def next(self, z, a, task=None):
        return self.world_model.dynamics.module(*_align(z, a))

    def reward(self, z, a, task=None):
        return self.world_model.reward_head.module(*_align(z, a))

    def decode_reward(self, logits):
        return two_hot_inv(logits, self.bins)

    def energy_logit(self, z, a, task=None):
        return self.energy.module(z, a)

    def termination(self, z, task=None):
        if self.termination_head is None:
            raise RuntimeError("termination() needs a termination head (episodic tasks): pass termination=.")
        return self.termination_head.module(z)

    def action_mask(self, task):
        return None

    def pi(self, z, task=None, eps=None) -> PolicySample:
        """One draw of TorchRL's policy prior (it draws its own noise, so ``eps`` cannot be fixed)."""
        if eps is not None:
            raise ValueError("TorchRL's TD-MPC2 policy prior draws its own noise; eps cannot be passed.")
        action, mean, _log_std, entropy, scaled_entropy = self.policy_prior.module(z)
        return PolicySample(action, mean, -entropy, scaled_entropy)

    def q_logits(self, z, a, task=None, source: str = "online", heads: torch.Tensor | None = None):
        """``(num_heads, *batch, num_bins)`` logits from ``q_ensemble(td, source=source)``."""
        z, a = _align(z, a)
        latent_key, action_key, out_key = self._q_keys
        td = TensorDict({latent_key: z, action_key: a}, batch_size=z.shape[:-1])
        logits = self.q_ensemble(td, source=source).get(out_key).movedim(-2, 0)
        return logits if heads is None else logits[heads]

    def q_value(self, z, a, task=None, reduce: str = "avg", pair: torch.Tensor | None = None, source: str = "online"):
        if pair is None:
            pair = random_q_pair(self.cfg.num_q, z.device)
        q = two_hot_inv(self.q_logits(z, a, task, source=source, heads=pair), self.bins)
        return q.min(0).values if reduce == "min" else q.mean(0)

    def score(self, z, noisy_plan, tau, task=None):
        t_emb = timestep_embedding(tau, self.cfg.time_embed_dim).expand(*z.shape[:-1], -1)
        return self.score_net.module(z, noisy_plan.flatten(-2), t_emb).unflatten(-1, noisy_plan.shape[-2:])

    def score_fn(self, z, num_taus: int, task=None):
        return lambda x, tau: self.score(z, x, torch.full((), tau, device=z.device), task)
