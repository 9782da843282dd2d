"""A learned observation-space model as a batched TorchRL env (the *global* model of ``mbdpo-dmo train
forward_model=learned``).

- :class:`ObservationModel`: an MLP ``(o, a) -> (o' - o, r)`` with input and target normalisation, trained
  by MSE (:meth:`ObservationModel.loss`) on real transitions;
- :class:`LearnedGlobalEnv`: an ``EnvBase`` of batch size ``(B,)`` that steps the model (no gradient),
  restarts episodes from observations drawn by a ``reset_sampler`` (e.g. from a replay buffer) and ends them
  (truncation) after ``max_episode_steps`` steps, the task's episode length. Episodes never terminate: the
  model has no termination head (no task of this library's DMO runs terminates; an episodic task's
  terminations are not modelled).

Any code that drives a TorchRL env drives this one, e.g.
:class:`~torchrl_mbdpo.dmo.decoupled.EnvGlobalModel` (``step_and_maybe_reset``), ``env.rollout``, or
``check_env_specs``. Nothing here imports the trainers or objectives.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from torch import nn
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

__all__ = ["ObservationModel", "LearnedGlobalEnv"]


class ObservationModel(nn.Module):
    """``(obs, action) -> (next_obs, reward)``: an MLP on normalised inputs predicting the normalised change of
    the observation and the normalised reward.

    Normalisation statistics are buffers set by :meth:`fit_normalizer` from a batch of real transitions
    (before training, and again as the data grows); until then they are the identity. Predicted observations
    are clipped to the observed range widened by ``clip_margin`` times its span on each side, so that long
    model episodes cannot drift to arbitrary values, and predicted rewards to the observed reward range.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: int = 256, num_layers: int = 2, clip_margin: float = 0.5):
        super().__init__()
        if hidden < 1 or num_layers < 1:
            raise ValueError(f"hidden and num_layers must be >= 1, got {hidden} and {num_layers}")
        self.obs_dim, self.action_dim, self.clip_margin = int(obs_dim), int(action_dim), float(clip_margin)
        layers, width = [], obs_dim + action_dim
        for _ in range(num_layers):
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.Mish()]
            width = hidden
        layers.append(nn.Linear(width, obs_dim + 1))
        self.net = nn.Sequential(*layers)
        for name, size in (("obs", obs_dim), ("delta", obs_dim), ("reward", 1)):
            self.register_buffer(f"{name}_mean", torch.zeros(size))
            self.register_buffer(f"{name}_std", torch.ones(size))
        self.register_buffer("obs_low", torch.full((obs_dim,), -float("inf")))
        self.register_buffer("obs_high", torch.full((obs_dim,), float("inf")))
        self.register_buffer("reward_low", torch.full((1,), -float("inf")))
        self.register_buffer("reward_high", torch.full((1,), float("inf")))

    @torch.no_grad()
    def fit_normalizer(self, obs: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor, min_std: float = 1e-3) -> None:
        """Set the normalisation statistics from real transitions (any leading shape)."""
        obs, next_obs = obs.reshape(-1, self.obs_dim).float(), next_obs.reshape(-1, self.obs_dim).float()
        reward, delta = reward.reshape(-1, 1).float(), next_obs - obs
        for name, x in (("obs", obs), ("delta", delta), ("reward", reward)):
            getattr(self, f"{name}_mean").copy_(x.mean(0))
            getattr(self, f"{name}_std").copy_(x.std(0, unbiased=False).clamp_min(min_std) if x.shape[0] > 1 else torch.ones(x.shape[-1]))
        both = torch.cat([obs, next_obs])
        low, high = both.min(0).values, both.max(0).values
        span = (high - low).clamp_min(min_std)
        self.obs_low.copy_(low - self.clip_margin * span)
        self.obs_high.copy_(high + self.clip_margin * span)
        self.reward_low.copy_(reward.min(0).values)
        self.reward_high.copy_(reward.max(0).values)

    def _normalised_prediction(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        x = torch.cat([(obs - self.obs_mean) / self.obs_std, action], -1)
        return self.net(x)

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(next_obs (..., obs_dim), reward (..., 1))``."""
        out = self._normalised_prediction(obs, action)
        delta = out[..., :-1] * self.delta_std + self.delta_mean
        reward = torch.maximum(torch.minimum(out[..., -1:] * self.reward_std + self.reward_mean, self.reward_high), self.reward_low)
        next_obs = torch.maximum(torch.minimum(obs + delta, self.obs_high), self.obs_low)
        return next_obs, reward

    def loss(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor) -> torch.Tensor:
        """MSE of the normalised ``(delta obs, reward)`` predictions (every dim weighted alike)."""
        out = self._normalised_prediction(obs, action.detach())
        target = torch.cat(
            [
                (next_obs - obs - self.delta_mean) / self.delta_std,
                (reward.reshape(*obs.shape[:-1], 1) - self.reward_mean) / self.reward_std,
            ],
            -1,
        )
        return (out - target.detach()).pow(2).mean()


class LearnedGlobalEnv(EnvBase):
    """A batched TorchRL env whose transitions are a learned model's predictions.

    Args:
        model: ``(obs (B, O), action (B, A)) -> (next_obs (B, O), reward (B, 1))``, e.g. an
            :class:`ObservationModel`; called under ``torch.no_grad()``.
        reset_sampler: ``n -> (n, O)`` observations new episodes start from (e.g. drawn from a replay buffer).

    Keyword Args:
        batch_size: ``B``, the number of model envs stepped together.
        action_dim: ``A``; actions are ``Bounded`` in [-1, 1] as in :func:`~torchrl_mbdpo.envs.make_env`.
        max_episode_steps: episode length (``truncated`` and ``done`` are set at this step count).
        obs_dim: ``O`` (default: ``model.obs_dim``).

    Keys: ``observation``, ``step_count`` (``(B, 1)`` int64), ``action``, ``reward`` ``(B, 1)``, ``done``,
    ``terminated`` (always False), ``truncated``. Partial resets (``_reset``) restart only the finished sub-envs,
    as with any batched TorchRL env.
    """

    def __init__(
        self,
        model: nn.Module,
        reset_sampler: Callable[[int], torch.Tensor],
        *,
        batch_size: int,
        action_dim: int,
        max_episode_steps: int,
        obs_dim: int | None = None,
        device="cpu",
    ):
        if batch_size < 1 or max_episode_steps < 1:
            raise ValueError(f"batch_size and max_episode_steps must be >= 1, got {batch_size} and {max_episode_steps}")
        super().__init__(device=device, batch_size=torch.Size([batch_size]))
        self.model = model
        self.reset_sampler = reset_sampler
        self.max_episode_steps = int(max_episode_steps)
        obs_dim = int(model.obs_dim if obs_dim is None else obs_dim)
        self.obs_dim, self.action_dim = obs_dim, int(action_dim)
        B = (batch_size,)
        self.observation_spec = Composite(
            observation=Unbounded((*B, obs_dim), dtype=torch.float32, device=self.device),
            step_count=Bounded(0, self.max_episode_steps, (*B, 1), dtype=torch.int64, device=self.device),
            shape=B,
            device=self.device,
        )
        self.action_spec = Bounded(-1.0, 1.0, (*B, action_dim), dtype=torch.float32, device=self.device)
        self.reward_spec = Unbounded((*B, 1), dtype=torch.float32, device=self.device)
        self.done_spec = Composite(
            done=Categorical(2, (*B, 1), dtype=torch.bool, device=self.device),
            terminated=Categorical(2, (*B, 1), dtype=torch.bool, device=self.device),
            truncated=Categorical(2, (*B, 1), dtype=torch.bool, device=self.device),
            shape=B,
            device=self.device,
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        # Fresh values for every sub-env: EnvBase.reset keeps the old ones where "_reset" is False.
        n = self.batch_size[0]
        obs = torch.as_tensor(self.reset_sampler(n)).to(self.device, torch.float32)
        if obs.shape != (n, self.obs_dim):
            raise ValueError(f"LearnedGlobalEnv: reset_sampler({n}) returned shape {tuple(obs.shape)}, expected {(n, self.obs_dim)}.")
        false = torch.zeros(n, 1, dtype=torch.bool, device=self.device)
        return TensorDict(
            {
                "observation": obs,
                "step_count": torch.zeros(n, 1, dtype=torch.int64, device=self.device),
                "done": false,
                "terminated": false.clone(),
                "truncated": false.clone(),
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        obs = tensordict.get("observation")
        action = tensordict.get("action").to(obs.dtype)
        with torch.no_grad():
            next_obs, reward = self.model(obs, action)
        step_count = tensordict.get("step_count") + 1
        truncated = step_count >= self.max_episode_steps
        return TensorDict(
            {
                "observation": next_obs.to(torch.float32),
                "step_count": step_count,
                "reward": reward.reshape(*self.batch_size, 1).to(torch.float32),
                "done": truncated.clone(),
                "terminated": torch.zeros_like(truncated),
                "truncated": truncated,
            },
            batch_size=self.batch_size,
            device=self.device,
        )

    def _set_seed(self, seed: int | None) -> None:
        # The model is deterministic; the start observations come from reset_sampler's own randomness.
        return None
