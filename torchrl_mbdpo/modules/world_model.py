"""The TD-MPC2 / MBDPO latent world model as TorchRL ``TensorDictModule``s (arXiv 2310.16828 §3.1 and
arXiv 2605.26282 §3; official ``MBDPO/common/world_model.py``, ``MBDPO/common/layers.py``).

One line per component in ``MBDPOWorldModel.__init__``. Each component is a ``TensorDictModule``
(usable in TensorDict pipelines, as TorchRL's ``WorldModel`` expects); the planner and the loss call
the same networks on plain tensors through the short methods below (``encode_obs``, ``next``, ...).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from tensordict import TensorDictParams
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.modules import WorldModel

from ..config import UserError
from .energy import EnergyNormalizer
from .functional import PolicySample, gaussian_tanh_policy, make_bins, random_q_pair, timestep_embedding, two_hot_inv
from .layers import Ensemble, PixelEncoder, SimNorm, TaskConditioned, eval_mode, mlp, using_reference_kernels, weight_init, zero_last_layer

__all__ = ["MODEL_SIZES", "resolve_model_size", "WorldModelConfig", "MBDPOWorldModel"]

# model_size key -> architecture (official ``MBDPO/common/__init__.py:1-24``, identical to TD-MPC2). Keys are TD-MPC2's; the paper's
# labels (parameter counts with the energy net, in millions) are accepted as aliases.
MODEL_SIZES = {
    1: dict(enc_dim=256, mlp_dim=384, latent_dim=128, num_enc_layers=2, num_q=2),
    5: dict(enc_dim=256, mlp_dim=512, latent_dim=512, num_enc_layers=2, num_q=5),
    19: dict(enc_dim=1024, mlp_dim=1024, latent_dim=768, num_enc_layers=3, num_q=5),
    48: dict(enc_dim=1792, mlp_dim=1792, latent_dim=768, num_enc_layers=4, num_q=5),
    317: dict(enc_dim=4096, mlp_dim=4096, latent_dim=1376, num_enc_layers=5, num_q=8),
}
PAPER_SIZE_LABELS = {1.7: 1, 6: 5, 21: 19, 54: 48, 340: 317}


def resolve_model_size(model_size) -> int:
    """Map a model-size key or paper label to a key of ``MODEL_SIZES``; a clear error otherwise."""
    try:
        value = float(model_size)
    except (TypeError, ValueError):
        value = None
    if value is not None:
        if value in MODEL_SIZES:
            return int(value)
        if value in PAPER_SIZE_LABELS:
            return PAPER_SIZE_LABELS[value]
    raise UserError(
        f"model_size={model_size!r} is not a known size. Use one of {sorted(MODEL_SIZES)} "
        f"(or the paper's labels {sorted(PAPER_SIZE_LABELS)}, in millions of parameters)."
    )


@dataclass
class WorldModelConfig:
    """Architecture of the world model. ``WorldModelConfig.from_size(5, obs_dim, action_dim)`` gives the defaults."""

    obs_dim: int
    action_dim: int
    latent_dim: int = 512
    mlp_dim: int = 512
    enc_dim: int = 256
    num_enc_layers: int = 2
    num_q: int = 5
    num_bins: int = 101
    vmin: float = -10.0
    vmax: float = 10.0
    simnorm_dim: int = 8
    dropout: float = 0.01
    log_std_min: float = -10.0
    log_std_max: float = 2.0
    horizon: int = 3
    time_embed_dim: int = 64
    episodic: bool = False
    num_tasks: int = 1
    task_dim: int = 0
    action_dims: list[int] = field(default_factory=list)  # per task (multi-task); empty: all dims active
    # "official": the Q ensemble keeps PyTorch's default init, as in MBDPO's code (``MBDPO/common/world_model.py:69-76``);
    # "trunc_normal": TD-MPC2's later fix (e9f5932), the same init as every other layer.
    q_init: str = "official"
    obs_type: str = "state"  # "state": flat obs_dim vector; "rgb": (obs_dim channels, 64, 64) uint8 images

    @classmethod
    def from_size(cls, model_size, obs_dim: int, action_dim: int, **overrides) -> "WorldModelConfig":
        arch = dict(MODEL_SIZES[resolve_model_size(model_size)])
        arch.update(overrides)
        return cls(obs_dim=obs_dim, action_dim=action_dim, **arch)

    @classmethod
    def from_dict(cls, d: dict) -> "WorldModelConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"Unknown world-model config keys {sorted(unknown)}; valid keys: {sorted(names)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def multitask(self) -> bool:
        return self.task_dim > 0


class MBDPOWorldModel(WorldModel):
    """SimNorm encoder, latent dynamics, two-hot reward, termination head (episodic), Gaussian-tanh
    policy prior, energy network F, vectorised Q ensemble, score network, task embedding.

    TensorDict keys: ``observation -> latent``; ``(latent, action) -> (next, latent)``;
    ``(latent, action) -> reward_logits``; ``(next, latent) -> (next, termination_logit)``;
    ``latent -> (policy_loc, policy_scale_raw)``; ``(latent, action) -> energy``, ``-> q_logits``;
    multi-task modules also read ``task``.
    """

    def __init__(self, cfg: WorldModelConfig):
        if cfg.q_init not in ("official", "trunc_normal"):
            raise UserError(f"q_init must be 'official' or 'trunc_normal', got {cfg.q_init!r}")
        if cfg.obs_type not in ("state", "rgb"):
            raise UserError(f"obs_type must be 'state' or 'rgb', got {cfg.obs_type!r}")
        L, A, T, M, K = cfg.latent_dim, cfg.action_dim, cfg.task_dim, cfg.mlp_dim, cfg.num_bins
        HA = cfg.horizon * A
        emb = nn.Embedding(cfg.num_tasks, T, max_norm=1) if cfg.multitask else None
        task = ["task"] if cfg.multitask else []
        enc_hidden = max(cfg.num_enc_layers - 1, 1) * [cfg.enc_dim]

        q_members = [mlp(L + A + T, [M, M], K, dropout=cfg.dropout) for _ in range(cfg.num_q)]
        if cfg.q_init == "trunc_normal":
            for member in q_members:
                member.apply(weight_init)

        def wrap(net, in_keys, out_keys):
            return TensorDictModule(TaskConditioned(net, emb), in_keys=in_keys + task, out_keys=out_keys)

        if cfg.obs_type == "rgb":
            if cfg.multitask:
                raise UserError("obs_type='rgb' is single-task only (as TD-MPC2): the task embedding cannot be concatenated to images.")
            encoder = wrap(PixelEncoder(cfg.obs_dim, L, cfg.simnorm_dim), ["observation"], ["latent"])
        else:
            encoder = wrap(mlp(cfg.obs_dim + T, enc_hidden, L, act=SimNorm(cfg.simnorm_dim)), ["observation"], ["latent"])
        dynamics = wrap(mlp(L + A + T, [M, M], L, act=SimNorm(cfg.simnorm_dim)), ["latent", "action"], [("next", "latent")])
        reward_head = wrap(mlp(L + A + T, [M, M], K), ["latent", "action"], ["reward_logits"])
        termination_head = wrap(mlp(L + T, [M, M], 1), [("next", "latent")], [("next", "termination_logit")]) if cfg.episodic else None
        super().__init__(encoder, dynamics, reward_head, done_head=termination_head)
        self.cfg = cfg
        self.task_emb = emb
        self.policy = wrap(mlp(L + T, [M, M], 2 * A), ["latent"], ["policy_params"])
        self.energy = wrap(mlp(L + A + T, [M, M], 1), ["latent", "action"], ["energy"])
        self.score_net = wrap(
            mlp(L + T + HA + cfg.time_embed_dim, [M, M], HA), ["latent", "noisy_plan_flat", "tau_embedding"], ["score_flat"]
        )
        self.qs = wrap(Ensemble(q_members), ["latent", "action"], ["q_logits"])
        # Polyak-averaged copy of the Q heads (buffers), kept beside them as in TD-MPC2 and TorchRL's
        # TdMpc2QEnsemble: ``q_logits(..., source="target")`` reads it, ``SoftUpdate`` on a loss updates it.
        self.target_q_params = TensorDictParams(self.q_params.data.clone(), no_convert=True)

        self.energy_norm = EnergyNormalizer()
        self.register_buffer("bins", make_bins(K, cfg.vmin, cfg.vmax))
        masks = torch.zeros(cfg.num_tasks, A)
        for i in range(cfg.num_tasks):
            masks[i, : (cfg.action_dims[i] if cfg.action_dims else A)] = 1
        self.register_buffer("action_masks", masks)
        self._init_weights()

    def _init_weights(self):
        # The Q ensemble is left out: its members were initialised before stacking (see q_init).
        for name, child in self.named_children():
            if name != "qs":
                child.apply(weight_init)
        if self.task_emb is not None:
            weight_init(self.task_emb)
        zero_last_layer(self.reward_head.module.net)
        zero_last_layer(self.energy.module.net)
        last = str(len(self.qs.module.net._skeleton) - 1)
        self.q_params[last, "weight"].data.zero_()
        self.target_q_params.data.update_(self.q_params.data)

    # ----------------------------------------------------------------- tensor-level calls
    def task_args(self, task: torch.Tensor | None) -> tuple:
        if self.cfg.multitask:
            if task is None:
                raise ValueError("This world model is multi-task: pass the 'task' index of each sample.")
            return (task,)
        return ()

    def action_mask(self, task: torch.Tensor | None) -> torch.Tensor | None:
        """Per-sample mask of the task's active action dims (``None`` in single-task mode)."""
        if not self.cfg.multitask:
            return None
        task = task.squeeze(-1) if task.ndim > 1 and task.shape[-1] == 1 else task  # (B, 1) -> (B,); a batch of one stays
        return self.action_masks[task.long()]

    def encode_obs(self, obs, task=None):
        return self.encoder.module(obs, *self.task_args(task))

    def next(self, z, a, task=None):
        return self.dynamics.module(z, a, *self.task_args(task))

    def reward(self, z, a, task=None):
        """Reward logits (two-hot, ``num_bins``)."""
        return self.reward_head.module(z, a, *self.task_args(task))

    def termination(self, z, task=None):
        """Termination logit of a (next) latent; only for episodic tasks."""
        if self.done_head is None:
            raise RuntimeError("termination() needs a world model built with episodic=True.")
        return self.done_head.module(z, *self.task_args(task))

    def energy_logit(self, z, a, task=None):
        return self.energy.module(z, a, *self.task_args(task))

    def pi(self, z, task=None, eps: torch.Tensor | None = None) -> PolicySample:
        """Sample the Gaussian-tanh policy prior (``eps`` fixes the noise draw)."""
        mu, raw_log_std = self.policy.module(z, *self.task_args(task)).chunk(2, dim=-1)
        eps = torch.randn_like(mu) if eps is None else eps
        mask = self.action_mask(task)
        mask = mask.expand_as(mu) if mask is not None else None
        return gaussian_tanh_policy(mu, raw_log_std, eps, self.cfg.log_std_min, self.cfg.log_std_max, mask)

    @property
    def q_params(self) -> TensorDictParams:
        """The online weights of every Q head, stacked (``num_q`` leading dim)."""
        return self.qs.module.net.params

    Q_SOURCES = ("online", "detached", "target")

    def q_logits(self, z, a, task=None, source: str = "online", heads: torch.Tensor | None = None):
        """Logits of the Q heads, ``(num_heads, *batch, num_bins)``, from the weights of ``source`` (as TorchRL's
        ``TdMpc2QEnsemble``): ``"online"``, ``"detached"`` (online values, no gradient to them) or ``"target"``
        (the Polyak copy, always without dropout). ``heads`` selects heads (all by default)."""
        ensemble = self.qs.module.net
        if source == "online":
            params = ensemble.flat_params(self.q_params)
        elif source == "detached":
            params = {name: p.detach() for name, p in ensemble.flat_params(self.q_params).items()}
        elif source == "target":
            params = ensemble.flat_params(self.target_q_params)
        else:
            raise ValueError(f"source must be one of {self.Q_SOURCES}, got {source!r}")
        if heads is not None:
            params = {name: p[heads] for name, p in params.items()}
        if source == "target":
            with eval_mode(self.qs):
                return self.qs.module(z, a, *self.task_args(task), params=params)
        return self.qs.module(z, a, *self.task_args(task), params=params)

    def q_value(self, z, a, task=None, reduce: str = "avg", pair: torch.Tensor | None = None, source: str = "online"):
        """Scalar Q from two heads (a random pair unless ``pair`` is given), reduced by ``min`` or ``avg``.

        Only the two selected heads are evaluated."""
        if pair is None:
            pair = random_q_pair(self.cfg.num_q, z.device)
        q = two_hot_inv(self.q_logits(z, a, task, source=source, heads=pair), self.bins)
        return q.min(0).values if reduce == "min" else q.mean(0)

    def score(self, z, noisy_plan, tau, task=None):
        """Amortised score ``s_theta(z, x_tau, tau)`` of a noisy action sequence ``(..., H, A)``."""
        t_emb = timestep_embedding(tau, self.cfg.time_embed_dim).expand(*z.shape[:-1], -1)
        out = self.score_net.module(z, noisy_plan.flatten(-2), t_emb, *self.task_args(task))
        return out.unflatten(-1, noisy_plan.shape[-2:])

    def score_fn(self, z, num_taus: int, task=None):
        """:meth:`score` of the fixed latents ``z`` ``(B, L)`` as ``(x (B, H, A), tau: int) -> s`` for
        ``0 <= tau < num_taus`` (the sampler's schedule length, :func:`~torchrl_mbdpo.modules.planning.score_network_sample`).

        The first layer is linear in ``cat(z, x, emb(tau), task)``: the latent's and the task's terms
        are computed once per plan and the time embedding's once per step value, so a step multiplies
        ``x`` alone (``H*A`` columns instead of ``L + H*A + 64 + T``). Same result as :meth:`score`."""
        if using_reference_kernels():
            return lambda x, tau: self.score(z, x, torch.full((), tau, device=z.device), task)
        net = self.score_net.module.net
        first = net[0][0]
        cfg = self.cfg
        w_z, w_x, w_tau, w_task = first.weight.split(
            [cfg.latent_dim, cfg.horizon * cfg.action_dim, cfg.time_embed_dim, cfg.task_dim], dim=1
        )
        fixed = F.linear(z, w_z, first.bias)
        if cfg.multitask:
            fixed = fixed + F.linear(self.task_emb(self.task_args(task)[0].reshape(z.shape[:-1]).long()), w_task)
        tau_terms = F.linear(timestep_embedding(torch.arange(num_taus, device=z.device), cfg.time_embed_dim), w_tau)
        rest = list(net[0])[1:] + list(net)[1:]  # the layers after the first Linear (no new Module: compile-friendly)

        def score_fn(x, tau: int):
            h = torch.addmm(fixed + tau_terms[tau], x.flatten(-2), w_x.t())
            for layer in rest:
                h = layer(h)
            return h.unflatten(-1, x.shape[-2:])

        return score_fn

    def decode_reward(self, logits):
        return two_hot_inv(logits, self.bins)
