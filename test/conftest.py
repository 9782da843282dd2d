import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("RL_WARNINGS", "0")

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
