import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("RL_WARNINGS", "0")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
