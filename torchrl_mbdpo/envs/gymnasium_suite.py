"""What the Gymnasium-based suites (MetaWorld, MyoSuite) share: TD-MPC2's action repeat, success flag and
never-ending episodes, and the wrapping of one of their envs as a base torchrl env (see ``suite.py``)."""

from __future__ import annotations

import gymnasium
import numpy as np
import torch
from torchrl.data import Categorical
from torchrl.envs import GymWrapper, default_info_dict_reader, set_gym_backend

from .factory import TaskSpec
from .suite import Suite, SuiteUnavailableError

__all__ = ["GymnasiumSuite", "RepeatActionReportSuccess"]


class GymnasiumSuite(Suite):
    """A suite of Gymnasium envs under TD-MPC2's prefixed names (``mw-reach`` -> ``reach-v3-goal-observable``).

    Subclasses set the class attributes and implement :meth:`import_package` and :meth:`make_gymnasium_env`.
    Every task has the same episode length and action repeat, reports success, and never terminates.
    """

    prefix: str = ""  # every name with this prefix belongs to the suite, so typos get its close matches
    task_ids: dict[str, str] = {}  # TD-MPC2 name -> the package's env id
    episode_length: int = 100
    action_repeat: int = 1
    success_key: str = "success"  # the key of the package's success flag in a step's info

    def tasks(self) -> list[str]:
        return list(self.task_ids)

    def owns(self, task: str) -> bool:
        return task.startswith(self.prefix)

    def task_spec(self, task: str) -> TaskSpec:
        """The ``TaskSpec`` of ``task``; a ValueError with close matches if the suite has no such task."""
        self._check_known(task)
        return TaskSpec(task, self.episode_length, self.action_repeat, episodic=False, reports_success=True)

    def make(self, task: str, *, seed: int, device="cpu") -> GymWrapper:
        """A torchrl ``GymWrapper`` of the task with action repeat and a boolean ``"success"`` of shape (1,)."""
        self._check_known(task)
        try:
            self.import_package()
        except ImportError as err:
            raise SuiteUnavailableError(
                f"Task {task!r} needs {self.name}, which could not be imported ({err}). Install it with: {self.install_hint}"
            ) from err
        gym_env = RepeatActionReportSuccess(self.make_gymnasium_env(self.task_ids[task], seed=seed), self.action_repeat, self.success_key)
        with set_gym_backend("gymnasium"):
            env = GymWrapper(gym_env, device=device)
        success_spec = Categorical(2, shape=(1,), dtype=torch.bool, device=device)
        return env.set_info_dict_reader(default_info_dict_reader(["success"], spec=[success_spec]))

    def import_package(self) -> None:
        """Import (and, if needed, patch) the suite's package; raises ImportError if it is missing."""
        raise NotImplementedError

    def make_gymnasium_env(self, env_id: str, *, seed: int):
        """The package's Gymnasium env ``env_id``, with no time limit of its own."""
        raise NotImplementedError

    def _check_known(self, task: str) -> None:
        if task not in self.task_ids:
            raise self.unknown(task)


class RepeatActionReportSuccess(gymnasium.Wrapper):
    """Repeats each action ``action_repeat`` times and sums the rewards; ``info["success"]`` is the success
    flag of the last sub-step as a bool array of shape (1,); observations are float32 in an unbounded Box
    (MetaWorld's own bounds are narrower than its observations); and the episode never ends by itself:
    TD-MPC2 ignores these suites' termination and truncation signals, and the time limit belongs to
    ``make_env``."""

    def __init__(self, env, action_repeat: int, success_key: str):
        super().__init__(env)
        self.action_repeat = action_repeat
        self.success_key = success_key
        self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, env.observation_space.shape, np.float32)

    def reset(self, *, seed=None, options=None):
        obs, _ = self.env.reset(seed=seed, options=options)
        return obs.astype(np.float32), {}

    def step(self, action):
        total_reward = 0.0
        for _ in range(self.action_repeat):
            obs, reward, _, _, info = self.env.step(action)
            total_reward += float(reward)
        success = np.array([bool(info[self.success_key])])
        return obs.astype(np.float32), total_reward, False, False, {"success": success}
