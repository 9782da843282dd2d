"""The 50 MetaWorld tasks under TD-MPC2's names (``mw-reach``, ``mw-door-open``, ...), on metaworld 3.1.1.

As in TD-MPC2: the goal-observable v3 envs (39-dim observations), a new random goal at every reset,
action repeat 2, 100 agent steps per episode, success = ``info["success"]`` of the last sub-step.
metaworld 3.1.1 pins ``mujoco==3.3.0``, which conflicts with dm_control; it is installed with
``--no-deps`` and runs on the project's MuJoCo once :func:`_patch_reset_mocap_welds` is applied.
"""

from __future__ import annotations

import sys

import gymnasium
import numpy as np

from .gymnasium_suite import GymnasiumSuite
from .suite import register_suite

__all__ = ["MetaWorldSuite", "METAWORLD_TASKS"]

# MetaWorld's v3 env names; TD-MPC2's task name is "mw-" + the name.
_METAWORLD_NAMES = (
    "assembly",
    "basketball",
    "bin-picking",
    "box-close",
    "button-press-topdown",
    "button-press-topdown-wall",
    "button-press",
    "button-press-wall",
    "coffee-button",
    "coffee-pull",
    "coffee-push",
    "dial-turn",
    "disassemble",
    "door-close",
    "door-lock",
    "door-open",
    "door-unlock",
    "hand-insert",
    "drawer-close",
    "drawer-open",
    "faucet-open",
    "faucet-close",
    "hammer",
    "handle-press-side",
    "handle-press",
    "handle-pull-side",
    "handle-pull",
    "lever-pull",
    "pick-place-wall",
    "pick-out-of-hole",
    "pick-place",
    "plate-slide",
    "plate-slide-side",
    "plate-slide-back",
    "plate-slide-back-side",
    "peg-insert-side",
    "peg-unplug-side",
    "soccer",
    "stick-push",
    "stick-pull",
    "push",
    "push-wall",
    "push-back",
    "reach",
    "reach-wall",
    "shelf-place",
    "sweep-into",
    "sweep",
    "window-open",
    "window-close",
)
METAWORLD_TASKS = {f"mw-{name}": f"{name}-v3-goal-observable" for name in _METAWORLD_NAMES}


class MetaWorldSuite(GymnasiumSuite):
    """MetaWorld's 50 v3 tasks as ``mw-<name>`` (see the module docstring)."""

    name = "MetaWorld"
    install_hint = (
        "pip install --no-deps metaworld==3.1.1 && pip install -c constraints.txt -e '.[metaworld]' "
        "(--no-deps because metaworld pins mujoco==3.3.0, which conflicts with dm_control; it runs on the "
        "installed MuJoCo with a patch applied at env creation)"
    )
    prefix = "mw-"
    task_ids = METAWORLD_TASKS
    episode_length = 100
    action_repeat = 2

    def import_package(self) -> None:
        from metaworld import env_dict  # noqa: F401  (ImportError if missing, or older than the v3 envs)

        _patch_reset_mocap_welds()

    def make_gymnasium_env(self, env_id: str, *, seed: int) -> gymnasium.Env:
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

        env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[env_id](seed=seed)
        env._freeze_rand_vec = False  # a new goal at every reset, as TD-MPC2
        env.seeded_rand_vec = True  # goals from the env's own seeded generator, not the global np.random
        env.max_path_length = sys.maxsize  # its limit (500 sub-steps) would raise; episodes end in make_env
        return _SeededResets(env)


class _SeededResets(gymnasium.Wrapper):
    """``reset(seed=...)`` seeds the env (MetaWorld's own reset ignores the seed), and each reset ends with
    TD-MPC2's zero-action step, whose observation is dropped: the episode starts from the observation
    before that step, as in TD-MPC2 and MBDPO, so that results stay comparable with theirs."""

    def reset(self, *, seed=None, options=None):
        if seed is not None:
            self.env.unwrapped.seed(seed)
        obs, info = self.env.reset()
        self.env.step(np.zeros(self.action_space.shape, self.action_space.dtype))
        return obs, info


def _patch_reset_mocap_welds() -> None:
    """MuJoCo >= 3.4 has 12 weld parameters (``eq_data`` columns) where MetaWorld writes 11, which makes its
    ``reset_mocap_welds`` fail to broadcast; write the same 11 values and zero the rest. Idempotent."""
    import mujoco
    from metaworld import sawyer_xyz_env

    def reset_mocap_welds(self) -> None:
        if self.model.nmocap > 0 and self.model.eq_data is not None:
            for i in range(self.model.eq_data.shape[0]):
                if self.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                    self.model.eq_data[i][:] = 0.0
                    self.model.eq_data[i][:11] = [0, 0, 0, 0, 0, 0, -1, 0, 0, 0, 5.0]

    sawyer_xyz_env.SawyerMocapBase.reset_mocap_welds = reset_mocap_welds


register_suite(MetaWorldSuite())
