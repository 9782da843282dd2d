# Adapted from TD-MPC2, tdmpc2/envs/tasks/cheetah.py (https://github.com/nicklashansen/tdmpc2).
# MIT License. Copyright (c) 2023 Nicklas Hansen.
# Permission is hereby granted, free of charge, to any person obtaining a copy of this software and
# associated documentation files (the "Software"), to deal in the Software without restriction,
# including without limitation the rights to use, copy, modify, merge, publish, distribute,
# sublicense, and/or sell copies of the Software, and to permit persons to whom the Software is
# furnished to do so, subject to the following conditions: The above copyright notice and this
# permission notice shall be included in all copies or substantial portions of the Software.
# THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED, INCLUDING BUT
# NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR PURPOSE AND
# NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM,
# DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT
# OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.
"""Cheetah tasks from TD-MPC2: run backwards, run on the front or back legs, and jump.

They use TD-MPC2's cheetah.xml (stock model with a longer rendered floor, see the XML header).
"""

import os

from dm_control.rl import control
from dm_control.suite import cheetah, common
from dm_control.utils import io as resources
from dm_control.utils import rewards

_JUMP_HEIGHT = 1.2


def _environment(goal, move_speed, time_limit, random, environment_kwargs):
    xml = resources.GetResource(os.path.join(os.path.dirname(__file__), "cheetah.xml"))
    physics = cheetah.Physics.from_xml_string(xml, common.ASSETS)
    task = CustomCheetah(goal, move_speed, random=random)
    return control.Environment(physics, task, time_limit=time_limit, **(environment_kwargs or {}))


@cheetah.SUITE.add("custom")
def run_backwards(time_limit=cheetah._DEFAULT_TIME_LIMIT, random=None, environment_kwargs=None):
    """Run backwards, full reward at 8 m/s (0.8x the forward run speed)."""
    return _environment("run_backwards", cheetah._RUN_SPEED * 0.8, time_limit, random, environment_kwargs)


@cheetah.SUITE.add("custom")
def run_front(time_limit=cheetah._DEFAULT_TIME_LIMIT, random=None, environment_kwargs=None):
    """Run forwards on the front leg (back foot up), full speed reward at 6 m/s."""
    return _environment("run_front", cheetah._RUN_SPEED * 0.6, time_limit, random, environment_kwargs)


@cheetah.SUITE.add("custom")
def run_back(time_limit=cheetah._DEFAULT_TIME_LIMIT, random=None, environment_kwargs=None):
    """Run forwards on the back leg (front foot up), full speed reward at 6 m/s."""
    return _environment("run_back", cheetah._RUN_SPEED * 0.6, time_limit, random, environment_kwargs)


@cheetah.SUITE.add("custom")
def jump(time_limit=cheetah._DEFAULT_TIME_LIMIT, random=None, environment_kwargs=None):
    """Stand up on either leg and stay nearly in place (|speed| < 0.5 m/s)."""
    return _environment("jump", 0.5, time_limit, random, environment_kwargs)


class CustomCheetah(cheetah.Cheetah):
    """Stock cheetah dynamics and observations; only the reward changes with `goal`."""

    def __init__(self, goal, move_speed, random=None):
        super().__init__(random=random)
        self._goal = goal
        self._move_speed = move_speed

    def get_reward(self, physics):
        return getattr(self, f"_{self._goal}_reward")(physics)

    def _run_backwards_reward(self, physics):
        return rewards.tolerance(
            physics.speed(), bounds=(-float("inf"), -self._move_speed), margin=self._move_speed, value_at_margin=0, sigmoid="linear"
        )

    def _stand_one_foot_reward(self, physics, raised_foot):
        torso_height = physics.named.data.xpos["torso", "z"]
        foot_height = physics.named.data.xpos[raised_foot, "z"]
        height = rewards.tolerance((torso_height + foot_height) / 2, bounds=(_JUMP_HEIGHT, float("inf")), margin=_JUMP_HEIGHT / 2)
        still = rewards.tolerance(
            physics.speed(), bounds=(-self._move_speed, self._move_speed), margin=self._move_speed, value_at_margin=0, sigmoid="linear"
        )
        return (5 * height + still) / 6

    def _jump_reward(self, physics):
        return (self._stand_one_foot_reward(physics, "bfoot") + self._stand_one_foot_reward(physics, "ffoot")) / 2

    def _run_one_foot_reward(self, physics, raised_foot):
        torso_up = rewards.tolerance(physics.named.data.xpos["torso", "z"], bounds=(_JUMP_HEIGHT, float("inf")), margin=_JUMP_HEIGHT / 2)
        foot_up = rewards.tolerance(physics.named.data.xpos[raised_foot, "z"], bounds=(_JUMP_HEIGHT, float("inf")), margin=_JUMP_HEIGHT / 2)
        up = (3 * foot_up + 2 * torso_up) / 5
        speed = rewards.tolerance(
            physics.speed(), bounds=(self._move_speed, float("inf")), margin=self._move_speed, value_at_margin=0, sigmoid="linear"
        )
        return up * (5 * speed + 1) / 6

    def _run_front_reward(self, physics):
        return self._run_one_foot_reward(physics, "bfoot")

    def _run_back_reward(self, physics):
        return self._run_one_foot_reward(physics, "ffoot")
