"""TD-MPC2's multi-task sets and each task's dimensions, without building any env.

``mt30`` is 30 DMControl tasks (the 19 stock ones, then the 11 TD-MPC2 custom ones) and ``mt80`` is ``mt30``
followed by 50 MetaWorld tasks, both in TD-MPC2's order: a task's position is its task index, which the
released multi-task checkpoints and datasets depend on. ``TASK_DIMS`` was measured by building every task
once with ``torchrl_mbdpo.envs.make_env``; ``test/test_multitask_env.py`` re-measures a few of them so the
table cannot drift silently. This module imports nothing from ``torchrl_mbdpo.envs`` so data tools can use
it without MuJoCo.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["TASK_SETS", "TASK_DIMS", "PADDED_DIMS", "EPISODE_ROWS", "task_set_of", "task_dims"]

_MT30 = [
    "walker-stand",
    "walker-walk",
    "walker-run",
    "cheetah-run",
    "reacher-easy",
    "reacher-hard",
    "acrobot-swingup",
    "pendulum-swingup",
    "cartpole-balance",
    "cartpole-balance-sparse",
    "cartpole-swingup",
    "cartpole-swingup-sparse",
    "cup-catch",
    "finger-spin",
    "finger-turn-easy",
    "finger-turn-hard",
    "fish-swim",
    "hopper-stand",
    "hopper-hop",
    "walker-walk-backwards",
    "walker-run-backwards",
    "cheetah-run-backwards",
    "cheetah-run-front",
    "cheetah-run-back",
    "cheetah-jump",
    "hopper-hop-backwards",
    "reacher-three-easy",
    "reacher-three-hard",
    "cup-spin",
    "pendulum-spin",
]

TASK_SETS: dict[str, list[str]] = {
    "mt30": _MT30,
    "mt80": _MT30
    + [
        "mw-assembly",
        "mw-basketball",
        "mw-button-press-topdown",
        "mw-button-press-topdown-wall",
        "mw-button-press",
        "mw-button-press-wall",
        "mw-coffee-button",
        "mw-coffee-pull",
        "mw-coffee-push",
        "mw-dial-turn",
        "mw-disassemble",
        "mw-door-open",
        "mw-door-close",
        "mw-drawer-close",
        "mw-drawer-open",
        "mw-faucet-open",
        "mw-faucet-close",
        "mw-hammer",
        "mw-handle-press-side",
        "mw-handle-press",
        "mw-handle-pull-side",
        "mw-handle-pull",
        "mw-lever-pull",
        "mw-peg-insert-side",
        "mw-peg-unplug-side",
        "mw-pick-out-of-hole",
        "mw-pick-place",
        "mw-pick-place-wall",
        "mw-plate-slide",
        "mw-plate-slide-side",
        "mw-plate-slide-back",
        "mw-plate-slide-back-side",
        "mw-push-back",
        "mw-push",
        "mw-push-wall",
        "mw-reach",
        "mw-reach-wall",
        "mw-shelf-place",
        "mw-soccer",
        "mw-stick-push",
        "mw-stick-pull",
        "mw-sweep-into",
        "mw-sweep",
        "mw-window-open",
        "mw-window-close",
        "mw-bin-picking",
        "mw-box-close",
        "mw-door-lock",
        "mw-door-unlock",
        "mw-hand-insert",
    ],
}

# name: (obs_dim, action_dim, episode_length) as make_env builds it (episode length in agent steps).
TASK_DIMS: dict[str, tuple[int, int, int]] = {
    # DMControl, stock
    "walker-stand": (24, 6, 500),
    "walker-walk": (24, 6, 500),
    "walker-run": (24, 6, 500),
    "cheetah-run": (17, 6, 500),
    "reacher-easy": (6, 2, 500),
    "reacher-hard": (6, 2, 500),
    "acrobot-swingup": (6, 1, 500),
    "pendulum-swingup": (3, 1, 500),
    "cartpole-balance": (5, 1, 500),
    "cartpole-balance-sparse": (5, 1, 500),
    "cartpole-swingup": (5, 1, 500),
    "cartpole-swingup-sparse": (5, 1, 500),
    "cup-catch": (8, 2, 500),
    "finger-spin": (9, 2, 500),
    "finger-turn-easy": (12, 2, 500),
    "finger-turn-hard": (12, 2, 500),
    "fish-swim": (24, 5, 500),
    "hopper-stand": (15, 4, 500),
    "hopper-hop": (15, 4, 500),
    # DMControl, TD-MPC2 custom tasks
    "walker-walk-backwards": (24, 6, 500),
    "walker-run-backwards": (24, 6, 500),
    "cheetah-run-backwards": (17, 6, 500),
    "cheetah-run-front": (17, 6, 500),
    "cheetah-run-back": (17, 6, 500),
    "cheetah-jump": (17, 6, 500),
    "hopper-hop-backwards": (15, 4, 500),
    "reacher-three-easy": (8, 3, 500),
    "reacher-three-hard": (8, 3, 500),
    "cup-spin": (8, 2, 500),
    "pendulum-spin": (3, 1, 500),
    # MetaWorld
    "mw-assembly": (39, 4, 100),
    "mw-basketball": (39, 4, 100),
    "mw-button-press-topdown": (39, 4, 100),
    "mw-button-press-topdown-wall": (39, 4, 100),
    "mw-button-press": (39, 4, 100),
    "mw-button-press-wall": (39, 4, 100),
    "mw-coffee-button": (39, 4, 100),
    "mw-coffee-pull": (39, 4, 100),
    "mw-coffee-push": (39, 4, 100),
    "mw-dial-turn": (39, 4, 100),
    "mw-disassemble": (39, 4, 100),
    "mw-door-open": (39, 4, 100),
    "mw-door-close": (39, 4, 100),
    "mw-drawer-close": (39, 4, 100),
    "mw-drawer-open": (39, 4, 100),
    "mw-faucet-open": (39, 4, 100),
    "mw-faucet-close": (39, 4, 100),
    "mw-hammer": (39, 4, 100),
    "mw-handle-press-side": (39, 4, 100),
    "mw-handle-press": (39, 4, 100),
    "mw-handle-pull-side": (39, 4, 100),
    "mw-handle-pull": (39, 4, 100),
    "mw-lever-pull": (39, 4, 100),
    "mw-peg-insert-side": (39, 4, 100),
    "mw-peg-unplug-side": (39, 4, 100),
    "mw-pick-out-of-hole": (39, 4, 100),
    "mw-pick-place": (39, 4, 100),
    "mw-pick-place-wall": (39, 4, 100),
    "mw-plate-slide": (39, 4, 100),
    "mw-plate-slide-side": (39, 4, 100),
    "mw-plate-slide-back": (39, 4, 100),
    "mw-plate-slide-back-side": (39, 4, 100),
    "mw-push-back": (39, 4, 100),
    "mw-push": (39, 4, 100),
    "mw-push-wall": (39, 4, 100),
    "mw-reach": (39, 4, 100),
    "mw-reach-wall": (39, 4, 100),
    "mw-shelf-place": (39, 4, 100),
    "mw-soccer": (39, 4, 100),
    "mw-stick-push": (39, 4, 100),
    "mw-stick-pull": (39, 4, 100),
    "mw-sweep-into": (39, 4, 100),
    "mw-sweep": (39, 4, 100),
    "mw-window-open": (39, 4, 100),
    "mw-window-close": (39, 4, 100),
    "mw-bin-picking": (39, 4, 100),
    "mw-box-close": (39, 4, 100),
    "mw-door-lock": (39, 4, 100),
    "mw-door-unlock": (39, 4, 100),
    "mw-hand-insert": (39, 4, 100),
}

# (obs, action) sizes every task of a set is zero-padded to: the largest of its tasks.
PADDED_DIMS: dict[str, tuple[int, int]] = {"mt30": (24, 6), "mt80": (39, 6)}

# Rows per stored episode in TD-MPC2's chunk files, fixed per set (its offline trainer reshapes the chunks
# by it): a reset row plus 500 or 100 steps.
EPISODE_ROWS: dict[str, int] = {"mt30": 501, "mt80": 101}


def task_set_of(names: Iterable[str]) -> str | None:
    """The name of the smallest task set that contains every name, or None if no set does."""
    wanted = set(names)
    for set_name, tasks in sorted(TASK_SETS.items(), key=lambda item: len(item[1])):
        if wanted <= set(tasks):
            return set_name
    return None


def task_dims(name: str) -> tuple[int, int, int]:
    """``(obs_dim, action_dim, episode_length)`` of a task of ``mt80``; ValueError for other names."""
    try:
        return TASK_DIMS[name]
    except KeyError:
        close = difflib.get_close_matches(name, TASK_DIMS, n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(
            f"No recorded dimensions for task {name!r}.{hint} TASK_DIMS covers the {len(TASK_DIMS)} tasks of "
            f"TASK_SETS['mt80'] only; for another task build it with torchrl_mbdpo.envs.make_env and read "
            f"observation_size(env) and env.action_spec."
        ) from None
