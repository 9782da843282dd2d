"""Nothing lost: a training subprocess killed with SIGKILL and resumed ends where an uninterrupted run ends."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from torchrl_mbdpo.trainers.checkpoint import load_checkpoint

# Pendulum: 200-step episodes; 2 envs end their episodes together every 400 agent steps.
RUN = [
    "task=gym:Pendulum-v1", "steps=800", "threads=1", "seed=5", "num_envs=2", "seed_steps=200", "pretrain_updates=20",
    "eval_freq=400", "eval_episodes=2", "checkpoint_freq=400", "batch_size=16", "progress=false",
    "model_size=1", "model.latent_dim=16", "model.mlp_dim=32", "model.enc_dim=32",
    "planner.steps=2", "planner.num_samples=8", "planner.num_elites=2", "planner.num_pi_trajs=2",
]


def _train(work_dir, *extra):
    cmd = [sys.executable, "-c", "from torchrl_mbdpo.cli import train_main; train_main()", *RUN, f"work_dir={work_dir}", *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "MUJOCO_GL": "egl"})


def _eval_rows(work_dir):
    return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(open(Path(work_dir) / "eval.csv"))]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    straight = _train(tmp_path / "straight")
    killed = _train(tmp_path / "killed")
    checkpoint = tmp_path / "killed" / "checkpoints" / "latest.pt"
    deadline = time.time() + 300
    while time.time() < deadline and not (checkpoint.exists() and load_checkpoint(checkpoint)["step"] >= 400):
        assert killed.poll() is None, killed.communicate()[1][-3000:]
        time.sleep(0.2)
    time.sleep(1.0)  # let it run on past the checkpoint, then kill it without warning
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert load_checkpoint(checkpoint)["step"] < 800

    resumed = _train(tmp_path / "killed", "resume=true")
    for proc in (straight, resumed):
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]

    a = load_checkpoint(tmp_path / "straight" / "checkpoints" / "latest.pt")
    b = load_checkpoint(checkpoint)
    assert a["step"] == b["step"] == 800
    for key, value in a["world_model"].items():
        assert torch.equal(value, b["world_model"][key]), key  # bitwise
    for key, value in a["loss"].items():
        assert torch.equal(value, b["loss"][key]), key
    assert _eval_rows(tmp_path / "straight") == _eval_rows(tmp_path / "killed")  # no duplicated or missing rows
    assert [int(r["step"]) for r in _eval_rows(tmp_path / "killed")] == [0, 400, 800]


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_stops_cleanly(tmp_path):
    proc = _train(tmp_path / "run")
    eval_csv = tmp_path / "run" / "eval.csv"
    deadline = time.time() + 300
    while time.time() < deadline and not (eval_csv.exists() and len(eval_csv.read_text().splitlines()) >= 2):
        assert proc.poll() is None
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM and "checkpoint written, stopping" in out
    stopped_at = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"]
    assert 0 < stopped_at < 800
    resumed = _train(tmp_path / "run", "resume=true")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert [int(r["step"]) for r in _eval_rows(tmp_path / "run")] == [0, 400, 800]
