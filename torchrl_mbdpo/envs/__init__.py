"""Environments for MBDPO: DMControl (incl. TD-MPC2's custom tasks), MetaWorld, MyoSuite, ManiSkill,
Gymnasium and user-provided envs."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before dm_control is imported

from .factory import TaskSpec, available_tasks, make_env, spec_of, task_spec  # noqa: E402
# Importing a suite module registers its tasks; the suite's own package is imported on first use.
from . import metaworld  # noqa: E402, F401
from . import myosuite  # noqa: E402, F401
from . import maniskill  # noqa: E402, F401

__all__ = ["TaskSpec", "available_tasks", "make_env", "spec_of", "task_spec"]
