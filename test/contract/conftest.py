"""The contract suite: every console command keeps the user's contract (see README.md, "The contract").

- ``test_contract_commands.py``: every console command, every ``sota-implementations`` script, every example and
  the README's commands and snippets run to the end at tiny settings;
- ``test_contract_bad_input.py``: every class of bad input gets one line on stderr naming the problem and the fix,
  exit 2, and the working folder untouched;
- ``test_contract_signals.py``: SIGTERM in each phase of each long-running command leaves a loadable checkpoint,
  one line saying where it stopped and how to resume, and exit 143; the resumed run ends as an uninterrupted one.

The commands run as subprocesses of ``contract_hook.py`` (:func:`contract_cases.run`); the inputs later commands
need are made once per session, each by its own command."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import contract_cases as C  # noqa: E402


def _made(out, what):
    assert out.returncode == 0, f"{what}: {C.explain(out)}"


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("contract")


@pytest.fixture(scope="session")
def online_run(workspace):
    """A finished online MBDPO run (``mbdpo-train``)."""
    out = C.run(workspace, "mbdpo-train", *C.ONLINE, "work_dir=online")
    _made(out, "mbdpo-train (online)")
    return workspace / "online"


@pytest.fixture(scope="session")
def dataset(workspace):
    """A TD-MPC2 chunk dataset of random-action cartpole-balance episodes (``mbdpo-dataset generate``)."""
    out = C.run(workspace, "mbdpo-dataset", "generate", "out=data", "tasks=[cartpole-balance]", "episodes_per_task=2")
    _made(out, "mbdpo-dataset generate")
    return workspace / "data"


@pytest.fixture(scope="session")
def offline_run(workspace, dataset):
    """A finished offline multi-task run (``mbdpo-train mode=offline``)."""
    out = C.run(workspace, "mbdpo-train", *C.OFFLINE, f"data_dir={dataset}", "work_dir=offline")
    _made(out, "mbdpo-train mode=offline")
    return workspace / "offline"


@pytest.fixture(scope="session")
def play_data(workspace):
    """A Push-T play dataset of 64x64 frames (``mbdpo-dmo dataset``)."""
    out = C.run(workspace, "mbdpo-dmo", "dataset", "out=play", *C.PLAY)
    _made(out, "mbdpo-dmo dataset")
    return workspace / "play"


@pytest.fixture(scope="session")
def pixel_models(workspace, play_data):
    """The diffusion world model and the energy reward of the play data (``mbdpo-dmo world_model``, ``reward``)."""
    _made(C.run(workspace, "mbdpo-dmo", "world_model", f"data={play_data}", "work_dir=wm", *C.WORLD_MODEL), "mbdpo-dmo world_model")
    _made(C.run(workspace, "mbdpo-dmo", "reward", f"data={play_data}", "work_dir=rw", *C.REWARD), "mbdpo-dmo reward")
    return [
        f"world_model={workspace / 'wm' / 'checkpoints' / 'latest.pt'}",
        f"reward={workspace / 'rw' / 'checkpoints' / 'latest.pt'}",
        f"data={play_data}",
    ]
