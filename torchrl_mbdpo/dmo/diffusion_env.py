"""The diffusion world model as a batched TorchRL model-based env (``torchrl.envs.model_based.ModelBasedEnvBase``):
any TorchRL policy, ``env.rollout`` or collector rolls out in it, and every step is a world-model sample.

State per sub-env: the last ``k`` frames ``"frames"`` (uint8 ``(B, k, 3, H, W)``, the newest last) and the ``k``
actions before the current one ``"past_actions"`` (``(B, k, A)``); the observation a policy reads is the newest
frame ``"pixels"`` (uint8 ``(B, 3, H, W)``, as :func:`~torchrl_mbdpo.envs.pusht.make_pusht_env`'s). A step
with ``"action"`` ``a_t`` samples ``o_{t+1}`` from the world model given ``frames`` and
``(past_actions[1:], a_t)`` (:class:`DiffusionStep`, the env's ``world_model``), shifts both histories, and
scores the transition with ``reward_fn`` (e.g. :class:`~torchrl_mbdpo.dmo.reward.FrameReward`, the learned
reward; default: no reward model, reward 0). ``"start_pixels"`` keeps the episode's first frame, which a
start- and goal-conditioned reward reads. With ``observation_frames=n`` the env also exposes ``"observation"``,
the last ``n`` frames stacked on the channel axis (uint8 ``(B, 3 n, H, W)``, as
:func:`~torchrl_mbdpo.envs.pusht.make_pusht_env` with ``observation_frames=n`` and the library's pixel encoder
read it). ``terminated_fn`` may end episodes (default: never); episodes are truncated after
``max_episode_steps``.

The same env runs the state world model (:class:`~torchrl_mbdpo.dmo.state_model.StateDiffusionWorldModel`): its
observations are float Push-T states ``"state"`` ``(B, 5)`` (``"start_state"``, ``"frames"`` the last ``k`` states) and
``"observation"`` the features of the last ``n`` states, concatenated (``(B, 6 n)``): what the model's
``policy_observation`` makes of them, for either kind of model.

Resets start every sub-env from a context drawn by ``reset_sampler(n) -> TensorDict(frames, past_actions)``
(e.g. :func:`play_data_start_sampler`: windows of the play dataset), or from the ``"frames"``/``"past_actions"``
of the tensordict passed to ``reset`` (e.g. :func:`context_from_frame` of a real env's first frame), as TorchRL's
``WorldModelEnv`` seeds its latent from the caller. Partial resets (``"_reset"``) restart only the finished
sub-envs, as in any batched TorchRL env.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs.model_based import ModelBasedEnvBase

from .diffusion import NextObservationDiffusion

__all__ = ["DiffusionStep", "DiffusionWorldModelEnv", "context_from_frame", "play_data_start_sampler"]


class DiffusionStep(nn.Module):
    """``(frames, past_actions, action) -> next_frame``: one world-model sample (no gradient)."""

    def __init__(self, model: NextObservationDiffusion, generator: torch.Generator | None = None):
        super().__init__()
        self.model = model
        self.generator = generator

    def forward(self, frames: torch.Tensor, past_actions: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        actions = torch.cat([past_actions[:, 1:], action[:, None].to(past_actions.dtype)], dim=1)
        return self.model.sample(frames, actions, generator=self.generator)


def context_from_frame(pixels: torch.Tensor, context: int, action_dim: int) -> TensorDict:
    """A start context from single frames ``(B, 3, H, W)``: the frame repeated ``context`` times, zero actions
    (how the world model is trained at episode starts)."""
    frames = pixels[:, None].expand(-1, context, *pixels.shape[1:]).clone()
    return TensorDict({"frames": frames, "past_actions": torch.zeros(pixels.shape[0], context, action_dim)}, batch_size=[pixels.shape[0]])


def play_data_start_sampler(
    dataset, context: int, *, episodes: torch.Tensor | None = None, generator: torch.Generator | None = None, key: str = "pixels"
) -> Callable[[int], TensorDict]:
    """``n -> n`` start contexts at transition rows drawn uniformly from ``episodes`` of a
    :class:`~torchrl_mbdpo.dmo.play_data.PlayDataset`: observations (``key``: frames or states) ``o_{t-k+1..t}`` and
    actions ``a_{t-k..t-1}``."""
    candidates = dataset.transition_rows(episodes)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)

    def sample(n: int) -> TensorDict:
        rows = candidates[torch.randint(len(candidates), (n,), generator=generator)]
        w = dataset.windows(rows, context + 1, key)
        return TensorDict({"frames": w["frames"][:, 1:], "past_actions": w["actions"][:, :-1]}, batch_size=[n])

    return sample


class DiffusionWorldModelEnv(ModelBasedEnvBase):
    """A batch of ``batch_size`` Push-T-like envs whose transitions are :class:`DiffusionWorldModel` samples
    (module docstring).

    Args:
        model: the trained world model (``model.cfg`` gives ``k``, the image size and the action size).
        reset_sampler: ``n -> TensorDict(frames (n, k, 3, H, W) uint8, past_actions (n, k, A))``.

    Keyword Args:
        batch_size: the number of sub-envs stepped together.
        max_episode_steps: steps before ``truncated``.
        reward_fn: ``TensorDict(pixels, frames, start_pixels, action) of the next step -> (B, 1)`` reward; default 0.
        terminated_fn: ``same -> (B, 1)`` bool; default never.
        generator: the world model's sampling noise (default: torch's global generator).
        observation_frames: expose ``"observation"``, the last ``n <= k`` frames stacked on the channel axis.
    """

    def __init__(
        self,
        model: NextObservationDiffusion,
        reset_sampler: Callable[[int], TensorDictBase] | None = None,
        *,
        batch_size: int,
        max_episode_steps: int = 100,
        reward_fn: Callable | None = None,
        terminated_fn: Callable | None = None,
        generator: torch.Generator | None = None,
        observation_frames: int | None = None,
        device="cpu",
    ):
        if batch_size < 1 or max_episode_steps < 1:
            raise ValueError(f"batch_size and max_episode_steps must be >= 1, got {batch_size} and {max_episode_steps}.")
        step = TensorDictModule(DiffusionStep(model, generator), in_keys=["frames", "past_actions", "action"], out_keys=["next_frame"])
        super().__init__(step, device=device, batch_size=torch.Size([batch_size]))
        self.model, self.reset_sampler = model, reset_sampler
        self.reward_fn, self.terminated_fn = reward_fn, terminated_fn
        self.max_episode_steps = int(max_episode_steps)
        c = model.cfg
        self.context, self.action_dim, self.obs_shape = c.context, c.action_dim, tuple(model.obs_shape)
        self.obs_key, self.start_key = model.obs_key, f"start_{model.obs_key}"
        if observation_frames is not None and not 1 <= observation_frames <= c.context:
            raise ValueError(f"observation_frames must lie in [1, {c.context}] (the world model's context), got {observation_frames}.")
        self.observation_frames = observation_frames
        B = (batch_size,)
        if self.obs_key == "pixels":  # uint8 frames
            self.obs_dtype = torch.uint8
            spec = lambda *shape: Bounded(low=0, high=255, shape=(*B, *shape), dtype=torch.uint8, device=self.device)  # noqa: E731
        else:  # Push-T states
            self.obs_dtype = torch.float32
            spec = lambda *shape: Unbounded(shape=(*B, *shape), dtype=torch.float32, device=self.device)  # noqa: E731
        self.observation_spec = Composite(
            {self.obs_key: spec(*self.obs_shape), self.start_key: spec(*self.obs_shape), "frames": spec(c.context, *self.obs_shape)},
            past_actions=Bounded(-1.0, 1.0, (*B, c.context, c.action_dim), dtype=torch.float32, device=self.device),
            step_count=Bounded(0, self.max_episode_steps, (*B, 1), dtype=torch.int64, device=self.device),
            shape=B,
            device=self.device,
        )
        if observation_frames is not None:
            example = model.policy_observation(torch.zeros(1, observation_frames, *self.obs_shape, dtype=self.obs_dtype))
            self.observation_spec["observation"] = spec(*example.shape[1:])
        self.action_spec = Bounded(-1.0, 1.0, (*B, c.action_dim), dtype=torch.float32, device=self.device)
        self.reward_spec = Unbounded((*B, 1), dtype=torch.float32, device=self.device)
        self.done_spec = Composite(
            done=Categorical(2, (*B, 1), dtype=torch.bool, device=self.device),
            terminated=Categorical(2, (*B, 1), dtype=torch.bool, device=self.device),
            truncated=Categorical(2, (*B, 1), dtype=torch.bool, device=self.device),
            shape=B,
            device=self.device,
        )

    def _reset(self, tensordict: TensorDictBase | None = None, **kwargs) -> TensorDictBase:
        n = self.batch_size[0]
        if tensordict is not None and "frames" in tensordict.keys():
            start = tensordict.select("frames", "past_actions", strict=False)
            if "past_actions" not in start.keys():
                start["past_actions"] = torch.zeros(n, self.context, self.action_dim)
        elif self.reset_sampler is not None:
            start = self.reset_sampler(n)
        else:
            raise RuntimeError(
                "DiffusionWorldModelEnv needs start contexts: pass reset_sampler= "
                "(e.g. play_data_start_sampler(dataset, k)) "
                "or reset(TensorDict(frames=..., past_actions=...)) (e.g. context_from_frame(real_pixels, k, A))."
            )
        frames = torch.as_tensor(start["frames"]).to(self.device, self.obs_dtype)
        past = torch.as_tensor(start["past_actions"]).to(self.device, torch.float32)
        want = (n, self.context, *self.obs_shape)
        if tuple(frames.shape) != want or tuple(past.shape) != (n, self.context, self.action_dim):
            raise ValueError(
                f"DiffusionWorldModelEnv: a start context needs frames {want} and past_actions "
                f"{(n, self.context, self.action_dim)}, "
                f"got {tuple(frames.shape)} and {tuple(past.shape)}."
            )
        false = torch.zeros(n, 1, dtype=torch.bool, device=self.device)
        return self._observe(
            TensorDict(
                {
                    self.obs_key: frames[:, -1].clone(),
                    self.start_key: frames[:, -1].clone(),
                    "frames": frames,
                    "past_actions": past,
                    "step_count": torch.zeros(n, 1, dtype=torch.int64, device=self.device),
                    "done": false,
                    "terminated": false.clone(),
                    "truncated": false.clone(),
                },
                batch_size=self.batch_size,
                device=self.device,
            )
        )

    def _observe(self, td: TensorDictBase) -> TensorDictBase:
        if self.observation_frames is not None:
            td["observation"] = self.model.policy_observation(td["frames"][:, -self.observation_frames :])
        return td

    def _step(self, tensordict: TensorDictBase) -> TensorDictBase:
        action = tensordict.get("action").to(torch.float32).clamp(-1, 1)
        inputs = TensorDict(
            {"frames": tensordict.get("frames"), "past_actions": tensordict.get("past_actions"), "action": action},
            batch_size=self.batch_size,
            device=self.device,
        )
        next_frame = self.world_model(inputs).get("next_frame")
        frames = torch.cat([inputs["frames"][:, 1:], next_frame[:, None]], dim=1)
        past = torch.cat([inputs["past_actions"][:, 1:], action[:, None]], dim=1)
        step_count = tensordict.get("step_count") + 1
        out = self._observe(
            TensorDict(
                {
                    self.obs_key: next_frame,
                    self.start_key: tensordict.get(self.start_key),
                    "frames": frames,
                    "past_actions": past,
                    "step_count": step_count,
                },
                batch_size=self.batch_size,
                device=self.device,
            )
        )
        scored = out.clone(False).set("action", action)
        reward = self.reward_fn(scored) if self.reward_fn is not None else torch.zeros(*self.batch_size, 1, device=self.device)
        terminated = (
            self.terminated_fn(scored).reshape(*self.batch_size, 1).bool()
            if self.terminated_fn is not None
            else torch.zeros(*self.batch_size, 1, dtype=torch.bool, device=self.device)
        )
        truncated = step_count >= self.max_episode_steps
        out.update(
            {
                "reward": reward.reshape(*self.batch_size, 1).to(torch.float32),
                "terminated": terminated,
                "truncated": truncated,
                "done": terminated | truncated,
            }
        )
        return out

    def _set_seed(self, seed: int | None) -> None:
        # The world model's noise comes from ``generator`` (or torch's global one), the starts from reset_sampler's.
        if seed is not None and self.world_model.module.generator is not None:
            self.world_model.module.generator.manual_seed(seed)
