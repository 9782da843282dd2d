# Adapted from TD-MPC2, tdmpc2/envs/tasks/walker.py (https://github.com/nicklashansen/tdmpc2).
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
"""Walker tasks from TD-MPC2: walk and run backwards.

They use TD-MPC2's walker.xml (stock model with a longer rendered floor, see the XML header).
"""

import os

from dm_control.rl import control
from dm_control.suite import common, walker
from dm_control.utils import io as resources
from dm_control.utils import rewards


def _environment(move_speed, time_limit, random, environment_kwargs):
    xml = resources.GetResource(os.path.join(os.path.dirname(__file__), "walker.xml"))
    physics = walker.Physics.from_xml_string(xml, common.ASSETS)
    task = BackwardsPlanarWalker(move_speed=move_speed, random=random)
    return control.Environment(
        physics, task, time_limit=time_limit, control_timestep=walker._CONTROL_TIMESTEP, **(environment_kwargs or {})
    )


@walker.SUITE.add("custom")
def walk_backwards(time_limit=walker._DEFAULT_TIME_LIMIT, random=None, environment_kwargs=None):
    """Walk backwards at 1 m/s or faster while standing upright."""
    return _environment(walker._WALK_SPEED, time_limit, random, environment_kwargs)


@walker.SUITE.add("custom")
def run_backwards(time_limit=walker._DEFAULT_TIME_LIMIT, random=None, environment_kwargs=None):
    """Run backwards at 8 m/s or faster while standing upright."""
    return _environment(walker._RUN_SPEED, time_limit, random, environment_kwargs)


class BackwardsPlanarWalker(walker.PlanarWalker):
    """Stock walker reward with the velocity target mirrored to negative x."""

    def get_reward(self, physics):
        standing = rewards.tolerance(physics.torso_height(), bounds=(walker._STAND_HEIGHT, float("inf")), margin=walker._STAND_HEIGHT / 2)
        upright = (1 + physics.torso_upright()) / 2
        stand_reward = (3 * standing + upright) / 4
        move_reward = rewards.tolerance(
            physics.horizontal_velocity(),
            bounds=(-float("inf"), -self._move_speed),
            margin=self._move_speed / 2,
            value_at_margin=0.5,
            sigmoid="linear",
        )
        return stand_reward * (5 * move_reward + 1) / 6
