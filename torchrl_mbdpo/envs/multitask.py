"""Multi-task envs, TD-MPC2 style: one world model for many tasks with different dimensions.

Every task of a set is presented with the same shapes: ``"observation"`` zero-padded to the set's largest
observation, an ``"action"`` of the set's largest action dim (the env only receives its own first dims) and a
long ``"task"`` entry holding the task's index, written on reset and on every step. The transforms are
named classes, not lambdas, so the envs can be pickled into ``ParallelEnv`` workers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchrl.data import Bounded, Composite, Unbounded
from torchrl.envs import TensorDictPrimer, Transform, TransformedEnv

from .factory import _append_transforms, make_env, observation_size

__all__ = ["PadObservation", "PadAction", "TaskPrimer", "make_multitask_env"]


def _check_size(size: int, what: str) -> int:
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"The padded {what} size must be a positive int, got {size!r}.")
    return size


class PadObservation(Transform):
    """Zero-pads the last dim of ``"observation"`` to ``size``."""

    def __init__(self, size: int):
        super().__init__(in_keys=["observation"], out_keys=["observation"])
        self.size = _check_size(size, "observation")

    def _apply_transform(self, obs: torch.Tensor) -> torch.Tensor:
        return F.pad(obs, (0, self.size - obs.shape[-1]))

    def _reset(self, tensordict, tensordict_reset):
        return self._call(tensordict_reset)

    def transform_observation_spec(self, observation_spec: Composite) -> Composite:
        spec = observation_spec["observation"]
        extra = self.size - spec.shape[-1]
        if extra < 0:
            raise ValueError(
                f"PadObservation({self.size}) cannot pad an observation of {spec.shape[-1]} dims: pass a size >= {spec.shape[-1]}."
            )
        shape = (*spec.shape[:-1], self.size)
        if isinstance(spec, Bounded):  # the padded entries are always 0, so [0, 0] bounds them exactly
            padded = Bounded(
                low=F.pad(spec.space.low, (0, extra)),
                high=F.pad(spec.space.high, (0, extra)),
                shape=shape,
                dtype=spec.dtype,
                device=spec.device,
            )
        else:
            padded = Unbounded(shape=shape, dtype=spec.dtype, device=spec.device)
        observation_spec["observation"] = padded
        return observation_spec


class PadAction(Transform):
    """Shows the policy a [-1, 1] ``"action"`` of ``size`` dims and passes the env only its own first dims.

    The padded dims keep [-1, 1] bounds (not [0, 0]) so that random and planner actions, which sample every
    dim in [-1, 1], stay inside the spec; their values are simply dropped.
    """

    def __init__(self, size: int):
        super().__init__(in_keys_inv=["action"], out_keys_inv=["action"])
        self.size = _check_size(size, "action")
        self._env_dim = None  # read from the parent's action spec, lazily: the transform is built unattached

    @property
    def env_dim(self) -> int:
        if self._env_dim is None:
            if self.parent is None:
                raise RuntimeError("PadAction must be attached to an env before it is used.")
            self._env_dim = self.parent.action_spec.shape[-1]
        return self._env_dim

    def _inv_apply_transform(self, action: torch.Tensor) -> torch.Tensor:
        return action[..., : self.env_dim]

    def transform_action_spec(self, action_spec: Composite) -> Composite:
        spec = action_spec["action"]
        self._env_dim = spec.shape[-1]
        if self._env_dim > self.size:
            raise ValueError(f"PadAction({self.size}) cannot pad an action of {self._env_dim} dims: pass a size >= {self._env_dim}.")
        action_spec["action"] = Bounded(low=-1.0, high=1.0, shape=(*spec.shape[:-1], self.size), dtype=spec.dtype, device=spec.device)
        return action_spec


class TaskPrimer(TensorDictPrimer):
    """Writes the long scalar ``"task"`` = ``task_index`` (one per env of a batch) on reset and on every step."""

    def __init__(self, task_index: int):
        if not isinstance(task_index, int) or task_index < 0:
            raise ValueError(f"task_index must be a non-negative int, got {task_index!r}.")
        super().__init__(task=Unbounded((), dtype=torch.long), default_value=task_index, expand_specs=True)
        self.task_index = task_index


def make_multitask_env(
    task, task_index: int, obs_size: int, action_size: int, *, seed: int = 0, num_envs: int = 1, device="cpu"
) -> TransformedEnv:
    """``make_env(task)`` padded to ``obs_size``/``action_size`` and tagged with ``"task"`` = ``task_index``.

    Besides ``env.task_spec``, the env carries ``task_index``, ``obs_dim`` and ``action_dim`` (the task's own,
    unpadded dims) as attributes. Raises ValueError if the task does not fit in the padded sizes.
    """
    env = make_env(task, seed=seed, num_envs=num_envs, device=device)
    spec = env.task_spec
    obs_dim, action_dim = observation_size(env), env.action_spec.shape[-1]
    if obs_dim > obs_size or action_dim > action_size:
        env.close()
        raise ValueError(
            f"Task {spec.name!r} has obs dim {obs_dim} and action dim {action_dim}, which do not fit in the padded "
            f"sizes obs_size={obs_size}, action_size={action_size}. Pad to at least the largest dims of the task set "
            f"(torchrl_mbdpo.data.task_sets.PADDED_DIMS, e.g. (39, 6) for mt80)."
        )
    env = _append_transforms(env, [PadObservation(obs_size), PadAction(action_size), TaskPrimer(task_index)])
    env.task_spec = spec  # set again in case appending a transform ever returns a new env
    env.task_index, env.obs_dim, env.action_dim = task_index, obs_dim, action_dim
    return env
