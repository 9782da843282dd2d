"""DeepMind Control Suite tasks under TD-MPC2's names (``cheetah-run``, ``cup-catch``, ...).

dm_control is imported on first use, not with this module: its rendering backend is chosen then
(``MUJOCO_GL``, unless already set: :mod:`torchrl_mbdpo._rendering`), so importing the library changes nothing in the
process environment.
"""

from __future__ import annotations

import functools

from torchrl.envs.libs.dm_control import DMControlWrapper

from .._rendering import choose_mujoco_gl

DMC_EPISODE_LENGTH = 500  # agent steps, i.e. dm_control's 1000 physics-control steps at action repeat 2
DMC_ACTION_REPEAT = 2

# The first spelling is the TD-MPC2 name; the others are accepted on input.
_DOMAIN_SPELLINGS = {"ball_in_cup": ("cup", "ball_in_cup"), "point_mass": ("point_mass", "pointmass")}
_UNSUPPORTED_DOMAINS = {"lqr"}  # unbounded actions and no fixed horizon


@functools.cache
def dm_control_suite():
    """``dm_control.suite`` with TD-MPC2's custom tasks registered, imported on first use (``MUJOCO_GL`` chosen first,
    where it is not set yet: :func:`torchrl_mbdpo._rendering.choose_mujoco_gl`)."""
    choose_mujoco_gl()
    from dm_control import suite

    from . import custom_tasks  # noqa: F401  (registers TD-MPC2's custom tasks with the suite)

    return suite


def _lookup_key(name: str) -> str:
    """Lets users write `_` or `-` interchangeably (``walker-run_backwards``, ``point-mass-easy``)."""
    return name.lower().replace("_", "-")


@functools.cache
def _registry() -> tuple[dict, dict]:
    tasks, lookup = {}, {}
    for domain, task in dm_control_suite().ALL_TASKS:
        if domain in _UNSUPPORTED_DOMAINS:
            continue
        spellings = _DOMAIN_SPELLINGS.get(domain, (domain,))
        name = f"{spellings[0]}-{task.replace('_', '-')}"
        tasks[name] = (domain, task)
        for spelling in spellings:
            lookup[_lookup_key(f"{spelling}-{task}")] = name
    return tasks, lookup


def dmc_tasks() -> dict[str, tuple[str, str]]:
    """TD-MPC2 name -> (dm_control domain, dm_control task), for every supported task."""
    return _registry()[0]


def dmc_task_name(task: str) -> str | None:
    """The TD-MPC2 name of a DMControl task, or None if ``task`` is not one."""
    return _registry()[1].get(_lookup_key(task))


PIXEL_SIZE = 64


def make_dmc_env(name: str, *, seed: int, device="cpu", pixels: bool = False) -> DMControlWrapper:
    """A DMControl env that repeats each action ``DMC_ACTION_REPEAT`` times and sums the rewards.

    dm_control's own time limit is disabled: it would end the episode (and auto-reset on the next
    step) by itself, while the episode length belongs to the ``StepCounter`` added by ``make_env``.
    ``pixels=True``: the observation is only ``"pixels"``, a 64x64 RGB render (uint8, HWC) from camera 0
    (camera 2 for quadruped, as TD-MPC2), rendered without shadows (faster; the scene is otherwise unchanged).
    """
    domain, task = dmc_tasks()[name]
    dm_env = dm_control_suite().load(domain, task, task_kwargs={"random": seed, "time_limit": float("inf")})
    if not pixels:
        return DMControlWrapper(dm_env, frame_skip=DMC_ACTION_REPEAT, device=device)
    dm_env.physics.model.vis.quality.shadowsize = 0
    camera = 2 if domain == "quadruped" else 0
    render = {"width": PIXEL_SIZE, "height": PIXEL_SIZE, "camera_id": camera}
    return DMControlWrapper(dm_env, from_pixels=True, pixels_only=True, render_kwargs=render, frame_skip=DMC_ACTION_REPEAT, device=device)
