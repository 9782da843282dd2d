"""The world model's held-out open-loop metric (``torchrl_mbdpo.dmo.open_loop``): positions decoded from real
Push-T frames match the simulator's state; a perfect model scores zero and beats copying the frame, a model that
copies the frame does not; the real (untrained) diffusion model runs through it."""

import json
import math

import numpy as np
import pytest
import torch

from torchrl_mbdpo.dmo.diffusion import DiffusionWorldModel
from torchrl_mbdpo.dmo.open_loop import decode_positions, metric_lines, open_loop_metrics
from torchrl_mbdpo.dmo.play_data import _block_centre, load_play_dataset, write_play_dataset

from helpers import tiny_diffusion_config

SIZE, STEPS = 64, 24


@pytest.fixture(scope="module")
def play64(tmp_path_factory):
    """Two real Push-T episodes of 24 steps, 64x64 frames (one random walk, one scripted pusher)."""
    path = tmp_path_factory.mktemp("play64") / "data"
    write_play_dataset(path, episodes=2, image_size=SIZE, episode_length=STEPS, seed=3, progress=False)
    return load_play_dataset(path)


def _model(**overrides):
    torch.manual_seed(0)
    return DiffusionWorldModel(tiny_diffusion_config(image_size=SIZE, **overrides))


def test_decoded_positions_match_the_simulator_state(play64):
    for e in range(2):
        episode = play64.episode(e)
        agent, block = decode_positions(episode["pixels"][:])
        state = episode["state"][:].numpy()
        scale = SIZE / 512  # the workspace is 512 units wide
        agent_error = (agent - torch.as_tensor(state[:, :2]) * scale).norm(dim=-1)
        block_error = (block - torch.from_numpy(np.stack([_block_centre(s) for s in state])).float() * scale).norm(dim=-1)
        assert agent_error.max() < 1.0, agent_error
        assert block_error.max() < 1.5, block_error
    blank = torch.full((1, 3, SIZE, SIZE), 255, dtype=torch.uint8)
    assert torch.isnan(torch.cat(decode_positions(blank))).all()  # nothing drawn: no position


def test_perfect_model_scores_zero_and_beats_copying_a_copying_model_does_not(play64, monkeypatch):
    episodes = [play64.episode(e) for e in range(2)]
    real = torch.stack([ep["pixels"][:] for ep in episodes])
    model = _model()

    monkeypatch.setattr(model, "imagine", lambda frames, actions, future, generator=None: real[:, 1 : 1 + future.shape[1]])
    perfect = open_loop_metrics(model, play64, [0, 1], horizons=(5, 10))
    assert perfect["episodes"] == 2 and perfect["horizons"] == [5, 10]
    for h in (5, 10):
        entry = perfect[f"h{h}"]
        assert all(v["model"] == 0.0 for v in entry.values()), entry
        assert entry["changed_mse"]["copy"] > 0 and entry["agent_px"]["copy"] > 0.5, entry  # the agent moved
    assert all("beats copying" in line for line in metric_lines(perfect))

    first = real[:, :1]
    monkeypatch.setattr(model, "imagine", lambda frames, actions, future, generator=None: first.expand(-1, future.shape[1], -1, -1, -1))
    copying = open_loop_metrics(model, play64, [0, 1], horizons=(5, 10))
    for h in (5, 10):
        assert all(v["model"] == v["copy"] for v in copying[f"h{h}"].values())
    assert all("does not beat copying" in line for line in metric_lines(copying))
    assert open_loop_metrics(model, play64, [0, 1], horizons=(STEPS + 5,)) == {"episodes": 0, "horizons": [STEPS + 5]}


def test_the_real_diffusion_model_runs_through_it(play64):
    """An untrained model's imagined frames: finite errors, and no beating the copy baseline."""
    metrics = open_loop_metrics(_model(), play64, [0, 1], horizons=(3, 6))
    json.dumps(metrics)  # what open_loop.json holds
    for h in (3, 6):
        values = [x for v in metrics[f"h{h}"].values() for x in v.values()]
        assert all(math.isfinite(x) for x in values)
        # noise frames can land near the changed pixels by chance, but place no block where it is
        assert metrics[f"h{h}"]["block_px"]["model"] > metrics[f"h{h}"]["block_px"]["copy"]
        assert not all(v["model"] < v["copy"] for v in metrics[f"h{h}"].values())
