"""Shared fixtures. Helpers used by several test modules live in ``helpers.py`` (this folder is put on
``sys.path`` here); the ones bound to a test's ``tmp_path`` are wrapped as fixtures below."""

import gc
import os
import sys

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("RL_WARNINGS", "0")
sys.path.insert(0, os.path.dirname(__file__))

import pytest
import torch

import helpers


@pytest.fixture(autouse=True)
def _same_start():
    """Every test starts from the same process state, whatever ran before it: the objects earlier tests left are
    collected now (a batched env TorchRL closes on collection raises torch's thread count, which would otherwise
    happen at any moment inside this test and change its numbers), torch runs on one CPU thread, and its global
    generator is seeded."""
    gc.collect()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield


@pytest.fixture
def tiny_config(tmp_path):
    """``tiny_config(root=tmp_path, **overrides)``: the tiny online run of :func:`helpers.tiny_config`."""

    def make(root=None, **overrides):
        return helpers.tiny_config(tmp_path if root is None else root, **overrides)

    return make


@pytest.fixture
def cli(tmp_path):
    """``cli(main, *args)``: the command line ``torchrl_mbdpo.cli.<main>`` in a subprocess run in ``tmp_path``."""

    def run(main, *args, timeout=None):
        return helpers.run_cli(main, *args, cwd=tmp_path, timeout=timeout)

    return run


@pytest.fixture(scope="session")
def tiny_play_data(tmp_path_factory):
    """The folder of a tiny Push-T play dataset (:func:`helpers.write_tiny_play_data`), written once per session;
    tests read it only."""
    path = tmp_path_factory.mktemp("play") / "data"
    helpers.write_tiny_play_data(path)
    return path
