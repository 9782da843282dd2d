"""Environments for MBDPO: DMControl (incl. TD-MPC2's custom tasks), MetaWorld, MyoSuite, ManiSkill,
Push-T (``pusht``; with pixels: ``pusht.make_pusht_env``), Gymnasium and user-provided envs. (MUJOCO_GL is
chosen per platform when a DMControl env is first made, or by the console commands, unless it is set:
:mod:`torchrl_mbdpo._rendering`.)"""

from .factory import TaskSpec, available_tasks, make_env, observation_size, spec_of, task_spec
from .multitask import make_multitask_env

# Importing a suite module registers its tasks (after the factory, in this order); the suite's own package
# is imported on first use.
# isort: off
from . import metaworld  # noqa: E402, F401
from . import myosuite  # noqa: E402, F401
from . import maniskill  # noqa: E402, F401
from . import pusht  # noqa: E402, F401
# isort: on

__all__ = ["TaskSpec", "available_tasks", "make_env", "make_multitask_env", "observation_size", "spec_of", "task_spec"]
