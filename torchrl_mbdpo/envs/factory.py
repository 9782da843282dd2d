"""``make_env``: any supported task as a torchrl env with the interface MBDPO relies on.

Every env has a flat float32 ``"observation"``, a ``Bounded`` [-1, 1] float32 ``"action"``, a (1,)
float32 reward summed over the action repeat, ``done``/``terminated``/``truncated`` where the time
limit only ever sets ``truncated``, ``step_count``, ``is_init`` and ``episode_reward``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace
from functools import partial

import gymnasium
import torch
from torchrl.data import Bounded, Categorical, OneHot
from torchrl.envs import (
    ActionScaling,
    CatFrames,
    CatTensors,
    Compose,
    DoubleToFloat,
    EnvBase,
    FlattenObservation,
    GymEnv,
    GymWrapper,
    InitTracker,
    ParallelEnv,
    PermuteTransform,
    RenameTransform,
    RewardSum,
    SerialEnv,
    StepCounter,
    TransformedEnv,
    set_gym_backend,
)

from ..config import UserError
from ..modules.functional import discount_from_episode_length
from .dmcontrol import DMC_ACTION_REPEAT, DMC_EPISODE_LENGTH, dmc_task_name, dmc_tasks, make_dmc_env
from .suite import SUITES, suite_of

GYM_PREFIX = "gym:"
DEFAULT_EPISODE_LENGTH = 1000  # for envs that declare no time limit
OBS_TYPES = ("state", "rgb")
FRAME_STACK = 3  # rgb: the last 3 frames, stacked on the channel dim (9, 64, 64), as TD-MPC2


@dataclass(frozen=True)
class TaskSpec:
    """What the agent needs to know about a task before seeing any data."""

    name: str
    episode_length: int  # agent steps (policy actions) per episode
    action_repeat: int
    episodic: bool = False  # True if the env can terminate, not just truncate
    reports_success: bool = False  # the env writes a boolean ("next", "success")

    @property
    def discount(self) -> float:
        """TD-MPC2's heuristic (:func:`~torchrl_mbdpo.modules.functional.discount_from_episode_length`):
        longer episodes get a longer effective horizon (0.99 for 500 steps)."""
        return discount_from_episode_length(self.episode_length)


def available_tasks() -> list[str]:
    """All task names: DMControl (stock and TD-MPC2 custom) and every registered suite's (listed even when
    the suite's package is not installed); any Gymnasium id also works as ``gym:<id>``."""
    return sorted(dmc_tasks()) + sorted(t for suite in SUITES for t in suite.tasks())


def task_spec(task: str) -> TaskSpec:
    """The TaskSpec of a task name; raises ValueError, with close matches, for unknown names."""
    if task.startswith(GYM_PREFIX):
        env_id = task[len(GYM_PREFIX) :]
        try:
            registered = gymnasium.spec(env_id)
        except gymnasium.error.Error as err:
            raise UserError(f"Unknown Gymnasium id {env_id!r} in task {task!r}: {err}") from err
        return TaskSpec(task, registered.max_episode_steps or DEFAULT_EPISODE_LENGTH, action_repeat=1, episodic=True)
    suite = suite_of(task)
    if suite is not None:
        return suite.task_spec(task)
    name = dmc_task_name(task)
    if name is None:
        close = difflib.get_close_matches(task, available_tasks(), n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UserError(
            f"Unknown task {task!r}.{hint} Call torchrl_mbdpo.envs.available_tasks() to list the DMControl "
            f"task names; any Gymnasium id works as 'gym:<id>' (e.g. 'gym:Pendulum-v1')."
        )
    return TaskSpec(name, DMC_EPISODE_LENGTH, DMC_ACTION_REPEAT)


def spec_of(env_or_task) -> TaskSpec:
    """The TaskSpec of a task name, an env (torchrl or Gymnasium) or a zero-arg env factory."""
    if isinstance(env_or_task, str):
        return task_spec(env_or_task)
    if isinstance(getattr(env_or_task, "task_spec", None), TaskSpec):
        return env_or_task.task_spec
    if isinstance(env_or_task, gymnasium.Env):
        registered = env_or_task.spec
        name = f"{GYM_PREFIX}{registered.id}" if registered else type(env_or_task.unwrapped).__name__
        length = registered.max_episode_steps if registered else None
        return TaskSpec(name, length or DEFAULT_EPISODE_LENGTH, action_repeat=1, episodic=True)
    if isinstance(env_or_task, EnvBase):
        base = getattr(env_or_task, "base_env", env_or_task)
        if isinstance(base, GymWrapper) and isinstance(base._env, gymnasium.Env):
            spec = spec_of(base._env)  # GymEnv/GymWrapper: read the TimeLimit of the wrapped env
        else:
            spec = TaskSpec(type(base).__name__, DEFAULT_EPISODE_LENGTH, action_repeat=1, episodic=True)
        counters = [t for t in getattr(env_or_task, "transform", []) if isinstance(t, StepCounter) and t.max_steps]
        return replace(spec, episode_length=counters[0].max_steps) if counters else spec
    if callable(env_or_task):
        return spec_of(env_or_task())
    raise TypeError(f"Expected a task name, an EnvBase, a gymnasium.Env or a zero-arg callable, got {env_or_task!r}.")


def make_env(task, *, seed: int = 0, num_envs: int = 1, device="cpu", parallel: bool = False, obs: str = "state") -> TransformedEnv:
    """Build ``task`` (name, ``gym:<id>``, EnvBase, or zero-arg callable returning an EnvBase/gymnasium.Env).

    ``num_envs > 1`` batches copies seeded ``seed + i`` in a SerialEnv (ParallelEnv if ``parallel``).
    The returned env carries its TaskSpec as ``env.task_spec``. An EnvBase instance is seeded and, if it is
    already a TransformedEnv, extended in place. ``obs="rgb"`` (DMControl tasks): ``"observation"`` is the
    last 3 64x64 RGB frames, uint8 ``(9, 64, 64)``.
    """
    if num_envs < 1:
        raise UserError(f"num_envs must be >= 1, got {num_envs}.")
    if obs not in OBS_TYPES:
        raise UserError(f"obs must be one of {OBS_TYPES}, got {obs!r}")
    if obs == "rgb" and not (isinstance(task, str) and dmc_task_name(task) is not None):
        raise UserError(f"obs='rgb' is available for DMControl tasks (e.g. 'cheetah-run'), not for {task!r}.")
    if num_envs == 1:
        env = standardized_env(task, seed=seed, device=device, obs=obs)
        spec = env.task_spec
    else:
        if isinstance(task, EnvBase):
            raise UserError("num_envs > 1 needs a task name or a zero-arg env factory: an env instance cannot be copied.")
        factories = [partial(standardized_env, task, seed=seed + i, device=device, obs=obs) for i in range(num_envs)]
        env = (ParallelEnv if parallel else SerialEnv)(num_envs, factories, device=device)
        spec = spec_of(task)
    env = _append_transforms(env, [StepCounter(max_steps=spec.episode_length), InitTracker(), RewardSum()])
    env.task_spec = spec
    return env


def observation_size(env: EnvBase) -> int:
    """The world model's ``obs_dim`` for an env from :func:`make_env`: the length of the flat observation,
    or the number of channels of stacked frames (``obs="rgb"``)."""
    shape = env.observation_spec["observation"].shape[len(env.batch_size) :]
    return shape[0] if len(shape) == 3 else shape[-1]


def standardized_env(task, *, seed: int, device="cpu", obs: str = "state") -> TransformedEnv:
    """One seeded env with a flat float32 observation (or stacked uint8 frames) and [-1, 1] actions, but no
    episode bookkeeping."""
    if obs == "rgb":
        spec = task_spec(task)
        base = make_dmc_env(spec.name, seed=seed, device=device, pixels=True)
    else:
        base, spec = _make_base_env(task, seed=seed, device=device)
    _check_action_spec(base.action_spec, spec.name)
    env = _append_transforms(base, _standardizing_transforms(base, pixels=obs == "rgb"))
    env.set_seed(seed)
    env.task_spec = spec
    return env


def _make_base_env(task, *, seed: int, device) -> tuple[EnvBase, TaskSpec]:
    if isinstance(task, str):
        spec = task_spec(task)
        if spec.name.startswith(GYM_PREFIX):
            with set_gym_backend("gymnasium"):
                # rgb_array: a renderer for evaluation videos (save_video); nothing is drawn unless asked
                return GymEnv(spec.name[len(GYM_PREFIX) :], device=device, render_mode="rgb_array"), spec
        suite = suite_of(spec.name)
        if suite is not None:
            return suite.make(spec.name, seed=seed, device=device), spec
        return make_dmc_env(spec.name, seed=seed, device=device), spec
    if isinstance(task, EnvBase):
        return task, spec_of(task)
    if isinstance(task, gymnasium.Env):
        with set_gym_backend("gymnasium"):
            return GymWrapper(task, device=device), spec_of(task)
    if callable(task):
        return _make_base_env(task(), seed=seed, device=device)
    raise TypeError(f"Expected a task name, an EnvBase or a zero-arg env factory, got {task!r}.")


def _check_action_spec(action_spec, name: str) -> None:
    """Fail early and clearly: the planner samples Gaussian actions and clips them to [-1, 1]."""
    if isinstance(action_spec, (Categorical, OneHot)) or not action_spec.dtype.is_floating_point:
        raise UserError(
            f"MBDPO needs a continuous Box action space; task {name!r} has a discrete one "
            f"({type(action_spec).__name__}). Use a continuous-control task (e.g. 'gym:Pendulum-v1') or wrap the "
            f"env so that it exposes a gymnasium.spaces.Box action space with finite bounds."
        )
    if not (isinstance(action_spec, Bounded) and _finite(action_spec.space.low) and _finite(action_spec.space.high)):
        raise UserError(
            f"MBDPO needs a bounded action space; task {name!r} has unbounded actions (infinite low/high). Wrap the "
            f"env with a bounded action space, e.g. a gymnasium.ActionWrapper whose action_space is a Box with finite "
            f"low/high, or a torchrl env with a Bounded action_spec; make_env then rescales it to [-1, 1] "
            f"with ActionScaling."
        )


def _finite(bound) -> bool:
    return bool(torch.isfinite(torch.as_tensor(bound)).all())


def _standardizing_transforms(env: EnvBase, pixels: bool = False) -> list:
    """Flatten and concatenate the observations (in the env's order) into float32 ``"observation"`` (or,
    with ``pixels``, stack the last frames of ``"pixels"`` as uint8 CHW), and rescale actions so the
    policy always sees [-1, 1]."""
    if pixels:
        transforms = [
            PermuteTransform((-1, -3, -2), in_keys=["pixels"]),  # HWC -> CHW
            CatFrames(N=FRAME_STACK, dim=-3, in_keys=["pixels"]),
            RenameTransform(["pixels"], ["observation"]),
        ]
    else:
        batch_dims = len(env.batch_size)
        obs_keys = [key for key in env.observation_spec.keys(True, True) if key != "success"]  # success is not an input
        feature_ndims = {key: len(env.observation_spec[key].shape) - batch_dims for key in obs_keys}
        transforms = [FlattenObservation(-ndim, -1, in_keys=[key]) for key, ndim in feature_ndims.items() if ndim > 1]
        if obs_keys != ["observation"] or transforms:
            transforms.append(CatTensors(obs_keys, out_key="observation", sort=False))
    transforms.append(DoubleToFloat())
    space = env.action_spec.space
    if not (torch.all(space.low == -1) and torch.all(space.high == 1)):
        transforms.append(ActionScaling())
    return transforms


def _append_transforms(env: EnvBase, transforms: list) -> TransformedEnv:
    """Extend an existing TransformedEnv in place rather than nesting one (torchrl warns on nesting)."""
    if isinstance(env, TransformedEnv):
        return env.append_transform(Compose(*transforms))
    return TransformedEnv(env, Compose(*transforms))
