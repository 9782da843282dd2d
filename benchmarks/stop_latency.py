"""How long a run takes to stop on SIGTERM, in each phase, at the demo's config (``make demo``).

For each phase (evaluation at step 0, seed collection, the update burst on the seed data, training) a
training run is started in this process, SIGTERM is sent from inside it once the phase is reached (the
real handler, stop and checkpoint), and the time from the signal to the end of ``train()`` is measured,
checkpoint write included. Prints a Markdown table; the checkpoint each stop wrote is loaded to check it.

    python benchmarks/stop_latency.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import tempfile
import time
from pathlib import Path

import torch

from torchrl_mbdpo.modules import PlannerConfig
from torchrl_mbdpo.trainers.checkpoint import load_checkpoint
from torchrl_mbdpo.trainers.config import ModelOverrides, TrainConfig
from torchrl_mbdpo.trainers.trainer import make_trainer


def demo_config(work_dir: Path, threads: int) -> TrainConfig:
    """The Makefile's DEMO_ARGS."""
    return TrainConfig(
        task="cartpole-swingup",
        steps=8000,
        seed=1,
        model_size=1,
        batch_size=128,
        seed_steps=1000,
        pretrain_updates=500,
        eval_freq=2000,
        eval_episodes=3,
        checkpoint_freq=2000,
        progress=False,
        threads=threads,
        work_dir=str(work_dir),
        model=ModelOverrides(latent_dim=64, mlp_dim=128, enc_dim=128),
        planner=PlannerConfig(steps=4, num_samples=64, num_elites=8, num_pi_trajs=4),
    )


def arm(trainer, phase: str, sent: list) -> None:
    """Send SIGTERM once ``phase`` is reached, recording when."""

    def send():
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGTERM)

    if phase == "evaluation (step 0)":
        check, calls = trainer.run.control.check, [0]

        def checking():
            calls[0] += 1
            if calls[0] == 100 and not sent:
                send()
            check()

        trainer.run.control.check = checking
    elif phase == "update burst (seed data)":
        step = trainer.optimization_stepper.step

        def stepping(*args):
            if trainer.optimization_stepper.update_count == 100 and not sent:
                send()
            return step(*args)

        trainer.optimization_stepper.step = stepping
    else:
        at = {"seed collection": 700, "training": 1700}[phase]  # mid-episode (episodes of 500 agent steps)

        def on_batch(batch):
            if trainer.collected_frames + batch.numel() == at and not sent:
                send()
            return batch

        trainer.register_op("batch_process", on_batch)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    rows = []
    for phase in ("evaluation (step 0)", "seed collection", "update burst (seed data)", "training"):
        with tempfile.TemporaryDirectory() as tmp:
            trainer = make_trainer(demo_config(Path(tmp) / "run", args.threads))
            sent: list = []
            arm(trainer, phase, sent)
            trainer.train()
            latency = time.perf_counter() - sent[0]
            state = load_checkpoint(Path(tmp) / "run" / "checkpoints" / "latest.pt")
            rows.append((phase, latency, state["step"], state["trainer"]["pending_updates"]))
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}\n")
    print("| phase | SIGTERM to exit (s), checkpoint written | checkpoint step | updates it still owes |")
    print("|---|---:|---:|---:|")
    for phase, latency, step, owed in rows:
        print(f"| {phase} | {latency:.2f} | {step} | {owed} |")


if __name__ == "__main__":
    main()
