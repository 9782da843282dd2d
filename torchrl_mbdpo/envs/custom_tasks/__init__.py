# Custom DMControl tasks adapted from TD-MPC2 (https://github.com/nicklashansen/tdmpc2, tdmpc2/envs/tasks/).
# MIT License. Copyright (c) 2023 Nicklas Hansen. The full notice is in each task module.
"""TD-MPC2's custom DMControl tasks, registered into dm_control's suite on import.

Like TD-MPC2, each module adds its tasks to the stock domain's ``SUITE`` under the ``"custom"`` tag, so
``dm_control.suite.load(domain, task)`` finds them without editing site-packages; the suite's task lists
are extended so that listing helpers see them too.
"""

from dm_control import suite

from . import ball_in_cup, cheetah, hopper, pendulum, reacher, walker  # noqa: F401  (import registers the tasks)

CUSTOM_TASKS = suite._get_tasks("custom")

if not set(CUSTOM_TASKS) <= set(suite.ALL_TASKS):
    suite.ALL_TASKS = suite.ALL_TASKS + CUSTOM_TASKS
    suite.TASKS_BY_DOMAIN = suite._get_tasks_by_domain(suite.ALL_TASKS)
