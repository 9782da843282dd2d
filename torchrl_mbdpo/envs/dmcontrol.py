"""DeepMind Control Suite tasks under TD-MPC2's names (``cheetah-run``, ``cup-catch``, ...)."""

from dm_control import suite
from torchrl.envs.libs.dm_control import DMControlWrapper

from . import custom_tasks  # noqa: F401  (registers TD-MPC2's custom tasks with the suite)

DMC_EPISODE_LENGTH = 500  # agent steps, i.e. dm_control's 1000 physics-control steps at action repeat 2
DMC_ACTION_REPEAT = 2

# The first spelling is the TD-MPC2 name; the others are accepted on input.
_DOMAIN_SPELLINGS = {"ball_in_cup": ("cup", "ball_in_cup"), "point_mass": ("point_mass", "pointmass")}
_UNSUPPORTED_DOMAINS = {"lqr"}  # unbounded actions and no fixed horizon


def _lookup_key(name: str) -> str:
    """Lets users write `_` or `-` interchangeably (``walker-run_backwards``, ``point-mass-easy``)."""
    return name.lower().replace("_", "-")


def _build_registry():
    tasks, lookup = {}, {}
    for domain, task in suite.ALL_TASKS:
        if domain in _UNSUPPORTED_DOMAINS:
            continue
        spellings = _DOMAIN_SPELLINGS.get(domain, (domain,))
        name = f"{spellings[0]}-{task.replace('_', '-')}"
        tasks[name] = (domain, task)
        for spelling in spellings:
            lookup[_lookup_key(f"{spelling}-{task}")] = name
    return tasks, lookup


DMC_TASKS, _NAME_LOOKUP = _build_registry()  # TD-MPC2 name -> (dm_control domain, dm_control task)


def dmc_task_name(task: str) -> str | None:
    """The TD-MPC2 name of a DMControl task, or None if ``task`` is not one."""
    return _NAME_LOOKUP.get(_lookup_key(task))


PIXEL_SIZE = 64


def make_dmc_env(name: str, *, seed: int, device="cpu", pixels: bool = False) -> DMControlWrapper:
    """A DMControl env that repeats each action ``DMC_ACTION_REPEAT`` times and sums the rewards.

    dm_control's own time limit is disabled: it would end the episode (and auto-reset on the next
    step) by itself, while the episode length belongs to the ``StepCounter`` added by ``make_env``.
    ``pixels=True``: the observation is only ``"pixels"``, a 64x64 RGB render (uint8, HWC) from camera 0
    (camera 2 for quadruped, as TD-MPC2), rendered without shadows (faster; the scene is otherwise unchanged).
    """
    domain, task = DMC_TASKS[name]
    dm_env = suite.load(domain, task, task_kwargs={"random": seed, "time_limit": float("inf")})
    if not pixels:
        return DMControlWrapper(dm_env, frame_skip=DMC_ACTION_REPEAT, device=device)
    dm_env.physics.model.vis.quality.shadowsize = 0
    camera = 2 if domain == "quadruped" else 0
    render = {"width": PIXEL_SIZE, "height": PIXEL_SIZE, "camera_id": camera}
    return DMControlWrapper(dm_env, from_pixels=True, pixels_only=True, render_kwargs=render, frame_skip=DMC_ACTION_REPEAT, device=device)
