# Adapted from TD-MPC2, tdmpc2/envs/tasks/ball_in_cup.py (https://github.com/nicklashansen/tdmpc2).
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
"""Ball-in-cup task from TD-MPC2: swing the ball around the cup fast and far (stock model)."""

import numpy as np
from dm_control.rl import control
from dm_control.suite import ball_in_cup, base
from dm_control.utils import rewards

_DIST_TARGET = 0.5
_TARGET_SPEED = 6.0


@ball_in_cup.SUITE.add("custom")
def spin(time_limit=ball_in_cup._DEFAULT_TIME_LIMIT, random=None, environment_kwargs=None):
    """Spin the ball around the cup; reward in [0, 1]."""
    physics = ball_in_cup.Physics.from_xml_string(*ball_in_cup.get_model_and_assets())
    task = CupSpin(random=random)
    return control.Environment(
        physics, task, time_limit=time_limit, control_timestep=ball_in_cup._CONTROL_TIMESTEP, **(environment_kwargs or {})
    )


class CupSpin(ball_in_cup.BallInCup):
    """Starts with the ball in the cup 90% of the time, so the agent must first get it out."""

    def initialize_episode(self, physics):
        penetrating, valid_pos = True, False
        init_out_of_target = self.random.uniform() < 0.1
        while penetrating or not valid_pos:
            physics.named.data.qpos["ball_x"] = self.random.uniform(-0.2, 0.2)
            physics.named.data.qpos["ball_z"] = self.random.uniform(0.2, 0.5)
            physics.after_reset()
            penetrating = physics.data.ncon > 0
            valid_pos = bool(physics.in_target()) or init_out_of_target
        base.Task.initialize_episode(self, physics)  # skip BallInCup's own placement loop

    def get_reward(self, physics):
        dist = np.linalg.norm(physics.ball_to_target())
        ball_vel = np.linalg.norm(physics.named.data.qvel[["ball_x", "ball_z"]])
        dist_reward = rewards.tolerance(
            dist, bounds=(_DIST_TARGET, float("inf")), margin=_DIST_TARGET / 2, value_at_margin=0.5, sigmoid="linear"
        )
        vel_reward = rewards.tolerance(
            ball_vel, bounds=(_TARGET_SPEED, float("inf")), margin=_TARGET_SPEED / 2, value_at_margin=0.5, sigmoid="linear"
        )
        return (1 - physics.in_target()) * (dist_reward + 2 * vel_reward) / 3
