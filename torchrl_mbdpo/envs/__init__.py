"""Environments for MBDPO: DMControl (incl. TD-MPC2's custom tasks), Gymnasium and user-provided envs."""
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must be set before dm_control is imported

from .factory import TaskSpec, available_tasks, make_env, spec_of, task_spec  # noqa: E402

__all__ = ["TaskSpec", "available_tasks", "make_env", "spec_of", "task_spec"]
