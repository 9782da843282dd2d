"""The 10 MyoSuite hand tasks under TD-MPC2's names (``myo-reach``, ``myo-pose-hard``, ...), on myosuite 3.0.0.

As in TD-MPC2: the ``-hard`` variants are MyoSuite's ``Random`` envs, the others its ``Fixed`` envs;
100 agent steps per episode whatever the env registers, no action repeat, success = ``info["solved"]``.
"""

from __future__ import annotations

import gymnasium

from .gymnasium_suite import GymnasiumSuite
from .suite import register_suite

__all__ = ["MyoSuiteSuite", "MYOSUITE_TASKS"]

_MYOSUITE_NAMES = {"reach": "Reach", "pose": "Pose", "obj-hold": "ObjHold", "key-turn": "KeyTurn", "pen-twirl": "PenTwirl"}
MYOSUITE_TASKS = {
    f"myo-{name}{suffix}": f"myoHand{env_name}{variant}-v0"
    for name, env_name in _MYOSUITE_NAMES.items()
    for suffix, variant in (("", "Fixed"), ("-hard", "Random"))
}


class MyoSuiteSuite(GymnasiumSuite):
    """MyoSuite's 10 hand tasks as ``myo-<name>[-hard]`` (see the module docstring)."""

    name = "MyoSuite"
    install_hint = "pip install -c constraints.txt -e '.[myosuite]'"
    prefix = "myo-"
    task_ids = MYOSUITE_TASKS
    episode_length = 100
    action_repeat = 1
    success_key = "solved"

    def import_package(self) -> None:
        import myosuite  # noqa: F401  (registers the envs with Gymnasium)

    def make_gymnasium_env(self, env_id: str, *, seed: int) -> gymnasium.Env:
        # The bare env: its registered TimeLimit (50 to 200 steps by task) would end episodes that TD-MPC2
        # runs for 100 steps; seeding goes through reset(seed=...), which make_env's set_seed calls.
        return gymnasium.make(env_id).unwrapped


register_suite(MyoSuiteSuite())
