"""Decoupled backpropagation: a *global* model's forward pass, a *local* latent model's Jacobians.

DMO (Amigo et al., "First Order Model-Based RL through Decoupled Backpropagation"; "Coupled Local
and Global World Models for Efficient First Order RL") computes first-order policy gradients through
a trajectory that a high-fidelity *global* model produces (the real simulator, any batched TorchRL env,
or a learned model wrapped as one), while the derivatives come from a light, differentiable *local*
model: here the world model's encoder ``enc``, latent dynamics ``d`` and reward head ``R``.

With the global latents ``z^g_t = enc(o^g_t)`` and actions ``a_t ~ pi(z_t)``, one rollout step is

    z_{t+1} = swap(enc(o^g_{t+1}),  d(z_t, a_t))
    r_t     = swap(r^g_t,           R(z_t, a_t))
    swap(g, l) = sg(g) + l - sg(l)                      (sg: stop-gradient)

so every forward value is the global model's (``z_t`` *is* the global latent), while backpropagation
through time multiplies the local Jacobians ``d_z d, d_a d, d_z R, d_a R`` evaluated at the global
states. The global model is only ever called with detached actions and needs no gradient.

- :func:`~torchrl_mbdpo.dmo.functional.gradient_swap`: the swap above (with DMO's other equations in
  :mod:`torchrl_mbdpo.dmo.functional`);
- :func:`decoupled_rollout`: an H-step rollout on plain tensors (``decoupled=False`` is the
  "no decoupling" ablation: pure latent imagination ``z_{t+1} = d(z_t, a_t)``, ``r_t = R(z_t, a_t)``);
- :class:`EnvGlobalModel`: a batched TorchRL env as the ``global_step`` callable, resetting finished
  sub-envs with ``EnvBase.step_and_maybe_reset``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from tensordict import TensorDictBase
from tensordict.utils import NestedKey

from .functional import gradient_swap

__all__ = ["gradient_swap", "GlobalStep", "DecoupledRollout", "decoupled_rollout", "EnvGlobalModel"]


class GlobalStep(NamedTuple):
    """One batched step of the global model. ``global_step`` may also return a plain ``(next_obs, reward)``
    pair: then no episode ends during the rollout."""

    next_obs: torch.Tensor  # (B, *obs): the transition's next observation (the terminal one when done)
    reward: torch.Tensor  # (B,) or (B, 1)
    done: torch.Tensor | None = None  # (B,) bool: the episode ended with this transition (terminated or truncated)
    terminated: torch.Tensor | None = None  # (B,) bool: ... at a true terminal state (no bootstrap); None: never
    reset_obs: torch.Tensor | None = None  # (B, *obs): where the next step starts (next_obs where not done)


class DecoupledRollout(NamedTuple):
    """Time-first tensors of an H-step rollout. Entries with gradient: ``latents`` (from ``t = 1``),
    ``next_latents``, ``actions``, ``log_probs``, ``rewards``."""

    latents: torch.Tensor  # (H+1, B, L): z_t, the latent each action is taken from; z_H: where the next rollout would go on
    next_latents: torch.Tensor  # (H, B, L): z'_t, the transition's next latent (== latents[t+1] unless done[t])
    actions: torch.Tensor  # (H, B, A)
    log_probs: torch.Tensor  # (H, B)
    rewards: torch.Tensor  # (H, B)
    done: torch.Tensor  # (H, B) bool
    terminated: torch.Tensor  # (H, B) bool
    observations: torch.Tensor | None  # (H, B, *obs): o^g_t, each action's observation (needs obs0 and a global model)
    next_observations: torch.Tensor | None  # (H, B, *obs): o^g_{t+1} of each transition (None without a global model)
    global_rewards: torch.Tensor | None  # (H, B): r^g_t, detached (== rewards' values when decoupled; None without a global model)


def _per_sample(x: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """``(B,)`` or ``(B, 1)`` -> ``(B,)``, with a clear error for anything else."""
    if x.shape not in ((batch,), (batch, 1)):
        raise ValueError(f"decoupled_rollout: {what} must have shape ({batch},) or ({batch}, 1), got {tuple(x.shape)}.")
    return x.reshape(batch)


def _as_global_step(out, batch: int) -> GlobalStep:
    if not isinstance(out, GlobalStep):
        if not (isinstance(out, tuple) and len(out) == 2):
            raise TypeError(f"global_step(action) must return a GlobalStep or a (next_obs, reward) pair, got {type(out).__name__}.")
        out = GlobalStep(*out)
    reward = _per_sample(torch.as_tensor(out.reward), batch, "the global reward")
    done = None if out.done is None else _per_sample(out.done, batch, "the global done flag").bool()
    terminated = None if out.terminated is None else _per_sample(out.terminated, batch, "the global terminated flag").bool()
    if done is not None and out.reset_obs is None and bool(done.any()):
        raise ValueError(
            "global_step reported done=True without reset_obs: return GlobalStep(..., reset_obs=...) with the "
            "observation each finished episode restarts from."
        )
    return out._replace(reward=reward, done=done, terminated=terminated)


def decoupled_rollout(
    z0: torch.Tensor,
    policy: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    global_step: Callable[[torch.Tensor], GlobalStep | tuple[torch.Tensor, torch.Tensor]] | None,
    encode: Callable[[torch.Tensor], torch.Tensor],
    local_next: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    local_reward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    horizon: int,
    decoupled: bool = True,
    obs0: torch.Tensor | None = None,
) -> DecoupledRollout:
    """Roll the policy out for ``horizon`` steps, forward through the global model, backward through the local one.

    Args:
        z0: ``(B, L)`` latent of the first global observation; detached here (the actor loss does not
            train the encoder).
        policy: ``z -> (action (B, A), log_prob (B,) or (B, 1))``, reparameterised (differentiable in ``z``
            and in its parameters).
        global_step: ``action (B, A) -> GlobalStep`` or ``(next_obs, reward)``; called with detached actions.
            ``None`` is allowed only with ``decoupled=False`` (nothing is stepped).
        encode: ``obs -> latent``, applied to the global observations under ``torch.no_grad()``.
        local_next: ``(z, a) -> z'``, the local latent dynamics ``d``.
        local_reward: ``(z, a) -> r`` as a scalar ``(B,)`` or ``(B, 1)`` (decode two-hot logits first).
        horizon: ``H``.
        decoupled: ``True``: ``z_{t+1} = swap(enc(o^g_{t+1}), d(z_t, a_t))``, ``r_t = swap(r^g_t, R(z_t, a_t))``.
            ``False`` (ablation): ``z_{t+1} = d(z_t, a_t)``, ``r_t = R(z_t, a_t)`` from ``z_0``, the global model
            supplying only ``o_0``; if ``global_step`` is given it is still stepped with the imagined
            actions, only to collect transitions for the local model (its values and episode ends do not
            enter the objective, and ``done`` is all False).
        obs0: ``(B, *obs)`` observation of ``z0``; with it, ``observations`` holds each action's observation.

    Episode ends (``GlobalStep.done``): ``next_latents[t]`` is the terminal latent (swapped as above, for the
    bootstrap), while ``latents[t+1] = enc(reset_obs)`` carries no gradient: a new episode does not depend on
    the actions of the previous one.
    """
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    if z0.ndim != 2:
        raise ValueError(f"z0 must be a (batch, latent_dim) tensor, got shape {tuple(z0.shape)}")
    if decoupled and global_step is None:
        raise ValueError("decoupled=True needs a global_step callable: the global model produces the forward pass.")
    batch = z0.shape[0]
    no_episode_end = torch.zeros(batch, dtype=torch.bool, device=z0.device)

    z = z0.detach()
    obs = obs0
    latents, next_latents, actions, log_probs, rewards, dones, terminateds = [z], [], [], [], [], [], []
    observations, next_observations, global_rewards = [], [], []
    for _ in range(horizon):
        action, log_prob = policy(z)
        log_prob = _per_sample(log_prob, batch, "the policy's log_prob")
        z_local = local_next(z, action)
        r_local = _per_sample(local_reward(z, action), batch, "local_reward(z, a)")
        step = None if global_step is None else _as_global_step(global_step(action.detach()), batch)
        done = terminated = no_episode_end
        if decoupled:
            with torch.no_grad():
                z_global = encode(step.next_obs)
            z_next = gradient_swap(z_global, z_local)
            reward = gradient_swap(step.reward, r_local)
            z_continue = z_next
            if step.done is not None:
                done = step.done.to(z0.device)
                terminated = no_episode_end if step.terminated is None else step.terminated.to(z0.device)
                if bool(done.any()):
                    with torch.no_grad():
                        z_reset = encode(step.reset_obs)
                    # torch.where routes no gradient through the unselected branch: the restart is a constant.
                    z_continue = torch.where(done.unsqueeze(-1), z_reset.to(z_next.dtype), z_next)
        else:
            z_next = z_continue = z_local
            reward = r_local
        if step is not None:
            observations.append(obs)
            next_observations.append(step.next_obs)
            global_rewards.append(step.reward.detach().to(reward.dtype))
            obs = step.reset_obs if step.reset_obs is not None else step.next_obs
        actions.append(action)
        log_probs.append(log_prob)
        rewards.append(reward)
        next_latents.append(z_next)
        dones.append(done)
        terminateds.append(terminated)
        latents.append(z_continue)
        z = z_continue

    have_obs = bool(next_observations) and obs0 is not None
    return DecoupledRollout(
        latents=torch.stack(latents),
        next_latents=torch.stack(next_latents),
        actions=torch.stack(actions),
        log_probs=torch.stack(log_probs),
        rewards=torch.stack(rewards),
        done=torch.stack(dones),
        terminated=torch.stack(terminateds),
        observations=torch.stack(observations) if have_obs else None,
        next_observations=torch.stack(next_observations) if next_observations else None,
        global_rewards=torch.stack(global_rewards) if global_rewards else None,
    )


class EnvGlobalModel:
    """A batched TorchRL env as the ``global_step`` callable of :func:`decoupled_rollout`.

    Holds the env's current root tensordict; each call steps every sub-env with the (detached) actions
    and advances with ``env.step_and_maybe_reset``, i.e. ``step_mdp`` plus a partial reset of the
    sub-envs whose episode ended (terminated or truncated). It returns the transition's next observation
    (the terminal one for finished episodes) and reward, the done/terminated flags and the observation the
    next step starts from.

    Args:
        env: a TorchRL env with batch size ``()`` or ``(B,)``, e.g. ``make_env(task, num_envs=B)``.

    Keyword Args:
        tensordict: a root tensordict to start from (default: ``env.reset()``).
        record: keep every transition tensordict; :meth:`pop_transitions` returns them as a ``[B, T]``
            TensorDict (TorchRL's rollout layout, e.g. for a replay buffer).
        observation_key, action_key, reward_key, done_key, terminated_key: the env's keys.

    ``env_steps`` counts sub-env transitions (``B`` per call), ``num_calls`` the batched steps.
    """

    def __init__(
        self,
        env,
        *,
        tensordict: TensorDictBase | None = None,
        record: bool = False,
        observation_key: NestedKey = "observation",
        action_key: NestedKey = "action",
        reward_key: NestedKey = ("next", "reward"),
        done_key: NestedKey = ("next", "done"),
        terminated_key: NestedKey = ("next", "terminated"),
    ):
        if len(env.batch_size) > 1:
            raise ValueError(
                f"EnvGlobalModel needs an env with batch size () or (B,), got {tuple(env.batch_size)}; "
                f"flatten nested batches (e.g. one SerialEnv of all copies)."
            )
        self.env = env
        self.record = bool(record)
        self.observation_key = observation_key
        self.action_key = action_key
        self.reward_key = reward_key
        self.done_key = done_key
        self.terminated_key = terminated_key
        self.batch_size = int(env.batch_size.numel()) if len(env.batch_size) else 1
        self._action_shape = env.action_spec.shape[len(env.batch_size) :]
        self.env_steps = 0
        self.num_calls = 0
        self._transitions: list[TensorDictBase] = []
        self._td = env.reset() if tensordict is None else tensordict

    @property
    def tensordict(self) -> TensorDictBase:
        """The env's current root tensordict (the state the next step starts from)."""
        return self._td

    @property
    def observation(self) -> torch.Tensor:
        """The current observations, ``(B, *obs)``: ``o_0`` of the next rollout."""
        obs = self._td.get(self.observation_key)
        return obs.reshape(self.batch_size, *obs.shape[len(self.env.batch_size) :])

    def reset(self) -> torch.Tensor:
        """Reset every sub-env; returns the new observations."""
        self._td = self.env.reset()
        return self.observation

    @torch.no_grad()
    def __call__(self, action: torch.Tensor) -> GlobalStep:
        expected = (self.batch_size, *self._action_shape)
        if tuple(action.shape) != expected:
            raise ValueError(f"EnvGlobalModel: expected actions of shape {expected}, got {tuple(action.shape)}.")
        td = self._td.set(self.action_key, action.detach().to(self.env.device).reshape(*self.env.batch_size, *self._action_shape))
        transition, self._td = self.env.step_and_maybe_reset(td)
        self.env_steps += self.batch_size
        self.num_calls += 1
        if self.record:
            self._transitions.append(transition.clone())
        device = action.device

        def flat(key, dims=()):
            value = transition.get(key)
            return value.reshape(self.batch_size, *dims).to(device)

        next_obs = transition.get(
            ("next", self.observation_key) if isinstance(self.observation_key, str) else ("next", *self.observation_key)
        )
        next_obs = next_obs.reshape(self.batch_size, *next_obs.shape[len(self.env.batch_size) :]).to(device)
        done = flat(self.done_key).bool()
        terminated = flat(self.terminated_key).bool() if transition.get(self.terminated_key, None) is not None else done
        return GlobalStep(
            next_obs=next_obs,
            reward=flat(self.reward_key),
            done=done,
            terminated=terminated,
            reset_obs=self.observation.to(device),
        )

    def pop_transitions(self) -> TensorDictBase | None:
        """The recorded transitions since the last call, stacked as ``[*env.batch_size, T]``; ``None`` if none."""
        if not self._transitions:
            return None
        out = torch.stack(self._transitions, dim=len(self.env.batch_size))
        self._transitions = []
        return out
