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

from torchrl_mbdpo.modules import PlannerConfig
from torchrl_mbdpo.trainers.checkpoint import load_checkpoint
from torchrl_mbdpo.trainers.config import ModelOverrides, TrainConfig
from torchrl_mbdpo.trainers.trainer import make_trainer

# Pendulum: 200-step episodes; 2 envs end their episodes together every 400 agent steps.
RUN = [
    "task=gym:Pendulum-v1",
    "steps=800",
    "threads=1",
    "seed=5",
    "num_envs=2",
    "seed_steps=200",
    "pretrain_updates=20",
    "eval_freq=400",
    "eval_episodes=2",
    "checkpoint_freq=400",
    "batch_size=16",
    "progress=false",
    "model_size=1",
    "model.latent_dim=16",
    "model.mlp_dim=32",
    "model.enc_dim=32",
    "planner.steps=2",
    "planner.num_samples=8",
    "planner.num_elites=2",
    "planner.num_pi_trajs=2",
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
def test_sigterm_writes_a_checkpoint_and_exits_with_128_plus_signal(tmp_path):
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
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] < 800
    resumed = _train(tmp_path / "run", "resume=true")
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    assert [int(r["step"]) for r in _eval_rows(tmp_path / "run")] == [0, 400, 800]


# In-process: the signal is sent from inside the run at a chosen moment of each phase (the handler,
# the stop and the checkpoint are the real ones). Pendulum, 2 envs: random steps until 202, the first
# episodes end (a resumable point) at 400, where the 20 seed updates run, then the evaluation.
def _config(work_dir, resume=False):
    values = dict(arg.split("=", 1) for arg in RUN)
    cfg = TrainConfig(
        task=values["task"],
        steps=800,
        seed=5,
        threads=1,
        num_envs=2,
        seed_steps=200,
        pretrain_updates=20,
        eval_freq=400,
        eval_episodes=2,
        checkpoint_freq=400,
        batch_size=16,
        progress=False,
        model_size=1,
        work_dir=str(work_dir),
        resume=resume,
        model=ModelOverrides(latent_dim=16, mlp_dim=32, enc_dim=32),
        planner=PlannerConfig(steps=2, num_samples=8, num_elites=2, num_pi_trajs=2),
    )
    return cfg


def _signal_at(trainer, phase):
    """Arrange for SIGTERM to arrive in ``phase``; returns a list that records the step it came at."""
    sent = []

    def send():
        sent.append(trainer.collected_frames)
        os.kill(os.getpid(), signal.SIGTERM)

    if phase in ("seed collection", "training"):
        at = 100 if phase == "seed collection" else 600  # both mid-episode, after the points at 0 and 400

        def on_batch(batch):
            if trainer.collected_frames + batch.numel() == at:
                send()
            return batch

        trainer.register_op("batch_process", on_batch)
    elif phase == "update burst":
        step = trainer.optimization_stepper.step

        def stepping(*args):
            if trainer.optimization_stepper.update_count == 10 and not sent:
                send()
            return step(*args)

        trainer.optimization_stepper.step = stepping
    else:  # evaluation: after a few evaluation steps at step 400
        check, calls = trainer.run.control.check, [0]

        def checking():
            if trainer.collected_frames == 400:
                calls[0] += 1
                if calls[0] == 5 and not sent:
                    send()
            check()

        trainer.run.control.check = checking
    return sent


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("straight")
    make_trainer(_config(work_dir)).train()
    return work_dir


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["seed collection", "update burst", "evaluation", "training"])
def test_stop_in_each_phase_then_resume_ends_bitwise_equal(uninterrupted, tmp_path, phase):
    trainer = make_trainer(_config(tmp_path))
    sent = _signal_at(trainer, phase)
    trainer.train()
    assert sent and trainer.run.control.signal == signal.SIGTERM
    assert "checkpoint written, stopping" in trainer.stop_message
    stopped = load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    expected_step = {"seed collection": 0, "update burst": 400, "evaluation": 400, "training": 400}[phase]
    assert stopped["step"] == expected_step, stopped["step"]  # the last resumable state
    if phase == "update burst":
        assert stopped["trainer"]["pending_updates"] == 9  # the update in progress finished; 9 of 20 are owed

    make_trainer(_config(tmp_path, resume=True)).train()
    a, b = load_checkpoint(uninterrupted / "checkpoints" / "latest.pt"), load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    assert a["step"] == b["step"] == 800
    for part in ("world_model", "loss"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    assert _eval_rows(uninterrupted) == _eval_rows(tmp_path)
