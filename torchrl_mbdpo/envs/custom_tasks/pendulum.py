# Adapted from TD-MPC2, tdmpc2/envs/tasks/pendulum.py (https://github.com/nicklashansen/tdmpc2).
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
"""Pendulum task from TD-MPC2: spin the pendulum as fast as possible (stock model)."""

import numpy as np
from dm_control.rl import control
from dm_control.suite import pendulum
from dm_control.utils import rewards

_TARGET_SPEED = 9.0


@pendulum.SUITE.add("custom")
def spin(time_limit=pendulum._DEFAULT_TIME_LIMIT, random=None, environment_kwargs=None):
    """Spin at 9 rad/s or faster, either direction; reward in [0, 1]."""
    physics = pendulum.Physics.from_xml_string(*pendulum.get_model_and_assets())
    return control.Environment(physics, Spin(random=random), time_limit=time_limit, **(environment_kwargs or {}))


class Spin(pendulum.SwingUp):
    """Swing-up's random initial angle and observations, with an angular-speed reward."""

    def get_reward(self, physics):
        return rewards.tolerance(
            np.linalg.norm(physics.angular_velocity()),
            bounds=(_TARGET_SPEED, float("inf")),
            margin=_TARGET_SPEED / 2,
            value_at_margin=0.5,
            sigmoid="linear",
        )
