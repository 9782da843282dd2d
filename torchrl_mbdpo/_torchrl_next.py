"""Where this library plugs into TorchRL's own TD-MPC2 stack (torchrl >= 0.15: ``TdMpc2Loss``,
``TdMpc2Planner``, ``TdMpc2Trainer`` and their ConfigStore entries), which the default install's torchrl
0.14.1 lacks. Until 0.15 reaches the package registry, the dated nightlies below provide it."""

from __future__ import annotations

import importlib.util

__all__ = ["NIGHTLY_PINS", "has_torchrl_tdmpc2", "require_tdmpc2"]

NIGHTLY_PINS = ("torchrl-nightly==2026.10.27", "tensordict-nightly==2026.10.26")


def has_torchrl_tdmpc2() -> bool:
    """Whether the installed torchrl ships its TD-MPC2 stack."""
    try:
        return importlib.util.find_spec("torchrl.objectives.tdmpc2") is not None
    except ModuleNotFoundError:
        return False


def require_tdmpc2(what: str) -> None:
    """One clear ImportError, naming the install to make, where TorchRL's TD-MPC2 stack is missing."""
    if has_torchrl_tdmpc2():
        return
    import torchrl

    raise ImportError(
        f"{what} plugs into TorchRL's TD-MPC2 stack (torchrl >= 0.15: TdMpc2Planner, TdMpc2Loss, TdMpc2Trainer), which this "
        f"environment's torchrl {torchrl.__version__} lacks. Install the torchrl-next environment: `make setup-next` (a .venv-next "
        f"with {' and '.join(NIGHTLY_PINS)}, see README.md, 'TorchRL's TD-MPC2 pipeline'). Everything else of torchrl_mbdpo "
        "works on this install."
    )
