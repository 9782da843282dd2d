# Adapted from TD-MPC2, tdmpc2/envs/tasks/reacher.py (https://github.com/nicklashansen/tdmpc2).
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
"""Reacher tasks from TD-MPC2: the stock reacher task on a three-link arm (reacher_three_links.xml).

TD-MPC2's task and physics classes are identical to dm_control's, so those are reused as-is.
"""

import os

from dm_control.rl import control
from dm_control.suite import common, reacher
from dm_control.utils import io as resources


def _three_link_environment(target_size, time_limit, random, environment_kwargs):
    xml = resources.GetResource(os.path.join(os.path.dirname(__file__), "reacher_three_links.xml"))
    physics = reacher.Physics.from_xml_string(xml, common.ASSETS)
    task = reacher.Reacher(target_size=target_size, random=random)
    return control.Environment(physics, task, time_limit=time_limit, **(environment_kwargs or {}))


@reacher.SUITE.add("custom")
def three_easy(time_limit=reacher._DEFAULT_TIME_LIMIT, random=None, environment_kwargs=None):
    """Three-link reacher, sparse reward, 5 cm target."""
    return _three_link_environment(reacher._BIG_TARGET, time_limit, random, environment_kwargs)


@reacher.SUITE.add("custom")
def three_hard(time_limit=reacher._DEFAULT_TIME_LIMIT, random=None, environment_kwargs=None):
    """Three-link reacher, sparse reward, 1.5 cm target."""
    return _three_link_environment(reacher._SMALL_TARGET, time_limit, random, environment_kwargs)
