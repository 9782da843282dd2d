# Adapted from TD-MPC2, tdmpc2/envs/tasks/hopper.py (https://github.com/nicklashansen/tdmpc2).
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
"""Hopper task from TD-MPC2: hop backwards (stock hopper model)."""

from dm_control.rl import control
from dm_control.suite import hopper
from dm_control.utils import rewards

_HOP_SPEED = 2


@hopper.SUITE.add("custom")
def hop_backwards(time_limit=hopper._DEFAULT_TIME_LIMIT, random=None, environment_kwargs=None):
    """Hop backwards at 1 m/s or faster while standing."""
    physics = hopper.Physics.from_xml_string(*hopper.get_model_and_assets())
    task = HopBackwards(random=random)
    return control.Environment(
        physics, task, time_limit=time_limit, control_timestep=hopper._CONTROL_TIMESTEP, **(environment_kwargs or {})
    )


class HopBackwards(hopper.Hopper):
    """Stock hopper with the hopping target mirrored to negative x (and half the speed)."""

    def __init__(self, random=None):
        super().__init__(hopping=True, random=random)

    def get_reward(self, physics):
        standing = rewards.tolerance(physics.height(), (hopper._STAND_HEIGHT, 2))
        hopping = rewards.tolerance(
            physics.speed(), bounds=(-float("inf"), -_HOP_SPEED / 2), margin=_HOP_SPEED / 4, value_at_margin=0.5, sigmoid="linear"
        )
        return standing * hopping
