"""How the contract suite runs a console command: ``run_command(name, args, phase)`` calls the command's entry
(``torchrl_mbdpo.cli.main``, what its console script calls) in this process; with a ``phase``, SIGTERM is sent to
the process the first time a run enters that phase (``setup``: when the run's lifecycle is built), so that each
phase of each command can be interrupted on purpose. ``python contract_hook.py <command> args...`` does the same
from a shell, with the phase from ``CONTRACT_SIGNAL_PHASE``.

``contract_cases`` registers ``gym:ShortPendulum-v1`` (Pendulum with 20-step episodes) in this process too."""

import os
import signal
import sys

import contract_cases  # noqa: F401  (gym:ShortPendulum-v1)


def _signal_in(phase: str) -> None:
    from torchrl_mbdpo.trainers.run_control import RunControl

    sent = []

    def send():
        if not sent:
            sent.append(phase)
            os.kill(os.getpid(), signal.SIGTERM)

    enter, init = RunControl.enter, RunControl.__init__

    def entering(self, name):
        enter(self, name)
        if name == phase:
            send()

    def built(self, *args, **kwargs):
        init(self, *args, **kwargs)
        if phase == "setup":
            send()

    RunControl.enter, RunControl.__init__ = entering, built


def run_command(name: str, args: list[str], phase: str | None = None) -> None:
    from torchrl_mbdpo.cli import main

    if phase:
        _signal_in(phase)
    main(name, list(args))


if __name__ == "__main__":
    run_command(sys.argv[1], sys.argv[2:], os.environ.get("CONTRACT_SIGNAL_PHASE") or None)
