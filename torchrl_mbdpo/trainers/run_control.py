"""What every training run of this library shares: named seeds, signals, resumable states, checkpoint
files and resume. The online, offline and fine-tuning trainers are ``torchrl.trainers.Trainer``s; a
:class:`RunControl` hooked onto one gives it this behaviour.

Nothing lost, exactly: a run's state is *resumable* where it can be written and continued as if never
stopped. Offline, that is after every update. Online, it is at *resumable points* (every environment
starts a new episode from a seed of ``(seed, step)``; finished episodes enter the replay buffer there)
and until the next environment step, so through the updates and the evaluation that follow a point.
Points come when every environment ends an episode, and at the latest ``episode_length`` steps after the
last one (unfinished episodes are then stored as truncated). At each point the run keeps an in-memory
snapshot of its state (the replay buffer only changes at points, so it is not copied).

- ``checkpoint_freq``: the first point at or after each multiple writes ``checkpoints/latest.pt``.
- SIGTERM/SIGINT: the current update or environment step finishes (an evaluation is abandoned), then the
  current state is written if it is resumable, else the last snapshot; the process exits with 128+signal.
- SIGKILL: ``resume=true`` continues from the last written checkpoint.
Either way the resumed run ends bitwise equal to an uninterrupted one on CPU, and ``eval.csv`` and the
logger's CSV scalars keep no row written after the checkpoint.
"""

from __future__ import annotations

import contextlib
import copy
import random
import signal
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .checkpoint import CheckpointError, check_compatible, load_latest, save_run_checkpoint
from .config import RESUMABLE_FIELDS, TrainConfig, to_container

__all__ = ["SEED_STREAMS", "named_seed", "seed_everything", "rng_state", "set_rng_state", "run_to_resume", "RunControl", "RunInterrupted"]

# Every seed a run derives from its ``seed`` and the agent step: one place, so that an uninterrupted run
# and a resumed one (and the different trainers) draw the same streams.
SEED_STREAMS = {
    "train_envs": lambda seed, step: seed + 7919 * step,  # training envs, re-seeded at every resumable point
    "eval_envs": lambda seed, step: seed + 10_000 + step,  # evaluation episodes at ``step``
    "eval_torch": lambda seed, step: seed * 1_000_003 + step,  # the planner's draws during that evaluation
    "data_parallel": lambda seed, rank: seed + 7919 * rank,  # each process's slice sampling (torchrun)
}


def named_seed(stream: str, seed: int, step: int = 0) -> int:
    """The seed of a named random stream (:data:`SEED_STREAMS`) of a run with ``seed`` at ``step``."""
    try:
        return SEED_STREAMS[stream](seed, step)
    except KeyError:
        raise ValueError(f"Unknown seed stream {stream!r}; known: {sorted(SEED_STREAMS)}") from None


def seed_everything(seed: int) -> None:
    """Seed every global generator a run draws from (torch, numpy, Python), so that a run does not depend on
    what ran before it in the process."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def run_to_resume(cfg: TrainConfig, work_dir: Path) -> dict | None:
    """The checkpoint ``resume=true`` continues (its config checked against ``cfg``), or None for a new run;
    a new run never overwrites an existing one."""
    if not cfg.resume:
        if (work_dir / "checkpoints" / "latest.pt").exists():
            raise ValueError(f"{work_dir} already holds a run. Pass resume=true to continue it, or another work_dir=.")
        return None
    try:
        state, path = load_latest(work_dir / "checkpoints")
    except CheckpointError as err:
        raise CheckpointError(f"resume=true, but {err} (Drop resume=true to start a new run in {work_dir}.)") from err
    saved, requested = state["config"], to_container(cfg)
    keep = [k for k in saved if k not in RESUMABLE_FIELDS]
    check_compatible({k: saved[k] for k in keep}, {k: requested.get(k) for k in keep}, "config", path)
    return state


class RunInterrupted(Exception):
    """Raised inside long work (an evaluation) when a stop was requested; the work is abandoned."""


class RunControl:
    """Signals, resumable states, snapshots and checkpoint files of one run.

    Args:
        work_dir: the run's folder (``checkpoints/latest.pt``, ``previous.pt``).
        checkpoint_freq: steps between checkpoints (written at the first resumable point at or after each
            multiple).
        state_fn: the run's whole state, as a checkpoint holds it (``step`` included).
        unit: what a step is, for messages.
        writer: whether this process writes the files (data-parallel runs: the main process only).
    """

    def __init__(self, work_dir, checkpoint_freq: int, state_fn: Callable[[], dict], unit: str = "step", writer: bool = True):
        self.work_dir = Path(work_dir)
        self.writer = writer
        self.checkpoint_freq = max(int(checkpoint_freq), 1)
        self.state_fn = state_fn
        self.unit = unit
        self.next_checkpoint = self.checkpoint_freq
        self.signal: int | None = None
        self.stop_message = ""
        self.resumable = True  # whether the current state can be written and continued exactly
        self._snapshot: dict | None = None
        self._on_stop_request: Callable[[str], None] | None = None

    # ----------------------------------------------------------------- signals
    @contextlib.contextmanager
    def handle_signals(self, on_request: Callable[[str], None]):
        """SIGTERM/SIGINT set :attr:`signal` and call ``on_request(reason)`` (e.g. ``trainer.request_stop``);
        previous handlers come back on exit."""

        def request(signum, _frame):
            self.signal = signum
            on_request(f"received signal {signum}")

        previous = {s: signal.signal(s, request) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @property
    def stop_requested(self) -> bool:
        return self.signal is not None

    def check(self) -> None:
        """Raise :class:`RunInterrupted` if a stop was requested (call it inside long work)."""
        if self.stop_requested:
            raise RunInterrupted

    # ----------------------------------------------------------------- resumable states
    def point(self, step: int, keep_snapshot: bool = True) -> None:
        """The current state is resumable (a resumable point): keep it as the snapshot a stop writes later,
        and write it if a checkpoint is due. ``keep_snapshot=False``: no snapshot (the caller marks every
        state it leaves resumable, e.g. after every offline update)."""
        self.resumable = True
        due = step >= self.next_checkpoint
        if due:  # before the state is taken, so that the checkpoint records the next one
            self.next_checkpoint = (step // self.checkpoint_freq + 1) * self.checkpoint_freq
        if keep_snapshot:
            self._snapshot = self._copy_state()
            if due and self.writer:
                save_run_checkpoint(self._snapshot, self.work_dir, step)
        elif due:
            self.save(step)

    def left_point(self) -> None:
        """The state moved on from the last point (an environment step): a stop then writes the snapshot."""
        self.resumable = False

    def _copy_state(self) -> dict:
        state = self.state_fn()
        # The replay buffer changes only at points, so the snapshot can share it (copying it would cost
        # memory and time at every point).
        shared = {k: state.pop(k) for k in ("replay_buffer",) if k in state}
        snapshot = copy.deepcopy(state)
        snapshot.update(shared)
        return snapshot

    def save(self, step: int | None = None) -> Path | None:
        """Write the current state (it must be resumable) to ``checkpoints/latest.pt``."""
        if not self.writer:
            return None
        state = self.state_fn()
        return save_run_checkpoint(state, self.work_dir, state["step"] if step is None else step)

    def save_on_stop(self) -> Path | None:
        """What a stop writes: the current state if resumable, else the last snapshot."""
        if self.resumable or self._snapshot is None:
            if not self.resumable:
                warnings.warn(
                    "Stopping between resumable points with no snapshot: the checkpoint holds the current state, "
                    "and a resumed run continues from fresh episodes.",
                    stacklevel=2,
                )
            return self.save()
        snapshot, self._snapshot = self._snapshot, None
        return save_run_checkpoint(snapshot, self.work_dir, snapshot["step"])

    def state_dict(self) -> dict:
        return {"next_checkpoint": self.next_checkpoint}

    def load_state_dict(self, state: dict) -> None:
        self.next_checkpoint = state["next_checkpoint"]
        self.resumable = True
        self._snapshot = None
