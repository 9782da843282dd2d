"""Benchmark suites that ``make_env`` dispatches task names to (MetaWorld, MyoSuite, ManiSkill, ...).

A suite owns a set of task names (``mw-reach``, ``myo-pose``, ``pick-cube``) and builds, for one of
them, a *base* torchrl env: observations under any keys (``make_env`` flattens and concatenates them
into ``"observation"``), a ``Bounded`` action (rescaled to [-1, 1] by ``make_env``), a reward summed
over the action repeat, ``done``/``terminated``/``truncated`` with ``terminated`` only for true
terminations, a boolean ``"success"`` of shape ``(1,)`` when the suite reports success, and no time
limit of its own (``make_env`` truncates at ``TaskSpec.episode_length``). Suites whose package is
missing stay listed and raise one error that says how to install them.
"""

from __future__ import annotations

import difflib

from ..config import UserError

__all__ = ["Suite", "SUITES", "register_suite", "suite_of", "SuiteUnavailableError"]


class SuiteUnavailableError(UserError):
    """The suite's package (or a system library it needs) is missing; the message says how to install it."""


class Suite:
    """Base class: a name, its task names, and how to build one of them."""

    name: str = ""
    install_hint: str = ""  # e.g. "pip install -e '.[metaworld]'"

    def tasks(self) -> list[str]:
        raise NotImplementedError

    def owns(self, task: str) -> bool:
        return task in self.tasks()

    def task_spec(self, task: str):
        """The ``TaskSpec`` of one of this suite's tasks."""
        raise NotImplementedError

    def make(self, task: str, *, seed: int, device="cpu"):
        """The base torchrl env of one of this suite's tasks (see the module docstring)."""
        raise NotImplementedError

    def unknown(self, task: str) -> UserError:
        close = difflib.get_close_matches(task, self.tasks(), n=3)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        return UserError(f"Unknown {self.name} task {task!r}.{hint} Known: {', '.join(sorted(self.tasks()))}.")


SUITES: list[Suite] = []


def register_suite(suite: Suite) -> Suite:
    SUITES.append(suite)
    return suite


def suite_of(task: str) -> Suite | None:
    """The registered suite that owns ``task``, or None (DMControl and ``gym:`` names are not suites)."""
    for suite in SUITES:
        if suite.owns(task):
            return suite
    return None
