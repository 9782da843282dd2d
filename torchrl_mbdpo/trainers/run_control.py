"""The run lifecycle every long-running command shares: named seeds, signals, phases, the refuse-or-resume
decision, resumable states, checkpoint files, the final evaluation and the exit code. The online, offline and
fine-tuning trainers are ``torchrl.trainers.Trainer`` objects with a :class:`RunControl` hooked on; the DMO trainings
(the simulator-forward DMO, the pixel world model, the reward, DMO and PPO in the world model) hold one.

Nothing lost, exactly: a run's state is *resumable* where it can be written and continued as if never
stopped. Offline and in the DMO trainings, that is after every update or iteration. Online, it is at
*resumable points* (every environment starts a new episode from a seed of ``(seed, step)``; finished
episodes enter the replay buffer there) and until the next environment step, so through the updates and the
evaluation that follow a point. Points come when every environment ends an episode, and at the latest
``episode_length`` steps after the last one (unfinished episodes are then stored as truncated). At each point
the run keeps an in-memory snapshot of its state (the replay buffer only changes at points, so it is not
copied).

- ``checkpoint_freq``: the first point at or after each multiple writes ``checkpoints/latest.pt`` (the file it
  replaces stays as ``previous.pt``).
- SIGTERM/SIGINT, in any phase (setup, seed collection, updates, an evaluation, the final evaluation, the
  shutdown): the step in progress finishes (an evaluation is abandoned), a consistent checkpoint is written (the
  current state if resumable, else the last snapshot; once all training is done, the final state with its final
  evaluation owed) and the process exits with 128+signal after one line saying where it stopped and how to
  resume. A second Ctrl-C stops at once.
- SIGKILL: ``resume=true`` continues from the last written checkpoint.
- ``resume=true`` continues a run; without it, a work dir that holds a run is refused (:func:`decide_resume`).

Bitwise resume: a resumed run ends bitwise equal to an uninterrupted one on the same machine, device and
library versions, under the same number of torch CPU threads (``threads=``; the default is torch's, pinned for
the whole run, see :meth:`RunControl.pin_threads`). A checkpoint records the thread count it was written under,
and a resume under another one is allowed with a warning: reductions split over another number of threads round
differently, so the numbers then differ in their last bits.
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

from ..config import config_warning
from .checkpoint import CheckpointError, check_compatible, load_latest, save_run_checkpoint
from .config import RESUMABLE_FIELDS, TrainConfig, to_container

__all__ = [
    "SEED_STREAMS",
    "PHASES",
    "SIGNALS",
    "named_seed",
    "seed_everything",
    "rng_state",
    "set_rng_state",
    "decide_resume",
    "warn_if_other_threads",
    "run_to_resume",
    "RunControl",
    "RunInterrupted",
    "RunStopped",
]

# Every seed a run derives from its ``seed`` and the agent step: one place, so that an uninterrupted run
# and a resumed one (and the different trainers) draw the same streams.
SEED_STREAMS = {
    "train_envs": lambda seed, step: seed + 7919 * step,  # training envs, re-seeded at every resumable point
    "eval_envs": lambda seed, step: seed + 10_000 + step,  # evaluation episodes at ``step``
    "eval_torch": lambda seed, step: seed * 1_000_003 + step,  # the planner's draws during that evaluation
    "data_parallel": lambda seed, rank: seed + 7919 * rank,  # each process's slice sampling (torchrun)
}

# The phases of a run, as the stop line names them.
PHASES = {
    "setup": "setup",
    "seed": "seed collection",
    "pretrain": "the updates on the seed data",
    "train": "training",
    "eval": "an evaluation",
    "final_eval": "the final evaluation",
    "shutdown": "the shutdown",
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


# ------------------------------------------------------------------------------------------ signals
class _Signals:
    """SIGTERM and SIGINT while a command or a run is active: recorded and passed to the listeners (the runs,
    which stop at their next step), not fatal. The one place this library installs signal handlers; nested
    uses share one installation, so a signal that arrives while a command sets a run up reaches the run."""

    def __init__(self):
        self.received: int | None = None
        self._depth = 0
        self._previous: dict = {}
        self._listeners: list[Callable[[int], None]] = []

    @contextlib.contextmanager
    def catching(self, listener: Callable[[int], None] | None = None):
        """Catch the signals inside the block (the outermost block starts with none received); ``listener``
        is called with each signal, at once if one already came."""
        if self._depth == 0:
            self.received = None
            self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        self._depth += 1
        if listener is not None:
            self._listeners.append(listener)
            if self.received is not None:
                listener(self.received)
        try:
            yield self
        finally:
            if listener is not None:
                self._listeners.remove(listener)
            self._depth -= 1
            if self._depth == 0:
                for s, handler in self._previous.items():
                    signal.signal(s, handler)

    def _handle(self, signum, _frame):
        if signum == signal.SIGINT and self.received == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.received = signum
        for listener in list(self._listeners):
            listener(signum)


SIGNALS = _Signals()


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


# ------------------------------------------------------------------------------------------ resume
def _threads_of(threads: int | None) -> int:
    return int(threads) if threads else torch.get_num_threads()


def decide_resume(work_dir, resume: bool, *, what: str = "run") -> tuple[dict, Path] | None:
    """Refuse or resume: the checkpoint ``resume=true`` continues (``latest.pt``, or ``previous.pt`` with a
    warning where the latest is damaged), or None for a new run. A new run never overwrites one; a resume needs
    a checkpoint (the caller checks its settings, then :func:`warn_if_other_threads`)."""
    checkpoints = Path(work_dir) / "checkpoints"
    held = [p for p in (checkpoints / "latest.pt", checkpoints / "previous.pt") if p.exists()]
    if not resume:
        if held:
            raise CheckpointError(
                f"{work_dir} already holds a {what}. Pass resume=true to continue it, or another work_dir= for a new one."
            )
        return None
    if not held:
        raise CheckpointError(f"resume=true, but {work_dir} holds no checkpoint to continue: drop resume=true to start a new {what} there.")
    try:
        state, path = load_latest(checkpoints)
    except CheckpointError as err:
        raise CheckpointError(f"resume=true, but {err} (drop resume=true and pass another work_dir= to start a new {what}.)") from err
    return state, path


def warn_if_other_threads(state: dict, path, threads: int | None) -> None:
    """A resume under another number of torch threads than the checkpoint's continues, but not bitwise."""
    saved = state.get("lifecycle", {}).get("threads")
    if saved is not None and saved != _threads_of(threads):
        config_warning(
            f"resuming {path} under {_threads_of(threads)} torch threads; it was written under {saved}: the run continues, "
            f"but not bitwise equal to an uninterrupted one (pass threads={saved} for that)."
        )


def run_to_resume(cfg: TrainConfig, work_dir: Path) -> dict | None:
    """The checkpoint ``resume=true`` continues (its config checked against ``cfg``: only
    :data:`~torchrl_mbdpo.trainers.config.RESUMABLE_FIELDS` may change), or None for a new run."""
    found = decide_resume(work_dir, cfg.resume)
    if found is None:
        return None
    state, path = found
    saved, requested = state["config"], to_container(cfg)
    keep = [k for k in saved if k not in RESUMABLE_FIELDS]
    check_compatible({k: saved[k] for k in keep}, {k: requested.get(k) for k in keep}, "config", path)
    warn_if_other_threads(state, path, cfg.threads)
    return state


class RunInterrupted(Exception):
    """Raised inside long work (an evaluation) when a stop was requested; the work is abandoned."""


class RunStopped(Exception):
    """A run of several (a comparison) stopped early with a checkpoint; ``code`` is its exit code."""

    def __init__(self, code: int):
        super().__init__(f"a run stopped with exit code {code}")
        self.code = code


# ------------------------------------------------------------------------------------------ the lifecycle
class RunControl:
    """The lifecycle of one run: signals, phases, resumable states, snapshots, checkpoint files, the final
    evaluation and the exit code.

    Args:
        work_dir: the run's folder (``checkpoints/latest.pt``, ``previous.pt``).
        checkpoint_freq: steps between checkpoints (written at the first resumable point at or after each
            multiple).
        state_fn: the run's whole state, as a checkpoint holds it (``step`` included).
        unit: what a step is, for messages ("agent steps", "updates", "iterations").
        writer: whether this process writes the files (data-parallel runs: the main process only).
        threads: torch CPU threads of the run (default: torch's at the start), pinned for the whole run.
    """

    def __init__(
        self,
        work_dir,
        checkpoint_freq: int,
        state_fn: Callable[[], dict],
        unit: str = "step",
        writer: bool = True,
        threads: int | None = None,
    ):
        self.work_dir = Path(work_dir)
        self.writer = writer
        self.checkpoint_freq = max(int(checkpoint_freq), 1)
        self.state_fn = state_fn
        self.unit = unit
        self.next_checkpoint = self.checkpoint_freq
        self.signal: int | None = None
        self.stop_message = ""
        self.phase = "setup"
        self.resumable = True  # whether the current state can be written and continued exactly
        self.checkpoint_path: Path | None = None  # the last file written, and the step it holds
        self.checkpoint_step: int | None = None
        self.signal_phase: str | None = None  # the phase the stop request came in
        self._threads = int(threads) if threads else None
        self._snapshot: dict | None = None
        self._on_stop_request: Callable[[str], None] | None = None

    # ----------------------------------------------------------------- phases and threads
    def enter(self, phase: str) -> None:
        """The run enters ``phase`` (a key of :data:`PHASES`)."""
        if phase not in PHASES:
            raise ValueError(f"Unknown phase {phase!r}; known: {list(PHASES)}")
        self.phase = phase

    @contextlib.contextmanager
    def in_phase(self, phase: str):
        """``phase`` for the block, then the phase before it (an evaluation inside the final one stays the final one)."""
        before = self.phase
        if not (phase == "eval" and before == "final_eval"):
            self.enter(phase)
        try:
            yield
        finally:
            self.phase = before

    def pin_threads(self) -> None:
        """Keep the run's torch thread count: TorchRL raises it when a batched env closes (another run's,
        garbage-collected at any moment), which would oversubscribe the CPU and change the numbers."""
        if self._threads is None:
            self._threads = torch.get_num_threads()
        elif torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)

    # ----------------------------------------------------------------- signals
    @contextlib.contextmanager
    def handle_signals(self, on_request: Callable[[str], None] | None = None):
        """SIGTERM/SIGINT set :attr:`signal` and call ``on_request(reason)`` (e.g. ``trainer.request_stop``)
        inside the block; a signal that came before (while the command set the run up) counts too."""

        def request(signum: int) -> None:
            if self.signal is None:
                self.signal_phase = self.phase
            self.signal = signum
            if on_request is not None:
                on_request(f"received signal {signum}")

        self.pin_threads()
        try:
            with SIGNALS.catching(request):
                yield self
        finally:  # the envs the run closed raised torch's thread count (TorchRL does): the caller's is the run's
            self.pin_threads()

    @property
    def stop_requested(self) -> bool:
        return self.signal is not None

    def check(self) -> None:
        """Raise :class:`RunInterrupted` if a stop was requested (call it inside long work)."""
        self.pin_threads()
        if self.stop_requested:
            raise RunInterrupted

    # ----------------------------------------------------------------- resumable states
    def point(self, step: int, keep_snapshot: bool = True) -> None:
        """The current state is resumable (a resumable point): keep it as the snapshot a stop writes later,
        and write it if a checkpoint is due. ``keep_snapshot=False``: no snapshot (the caller marks every
        state it leaves resumable, e.g. after every offline update)."""
        self.pin_threads()
        self.resumable = True
        due = step >= self.next_checkpoint
        if due:  # before the state is taken, so that the checkpoint records the next one
            self.next_checkpoint = (step // self.checkpoint_freq + 1) * self.checkpoint_freq
        if keep_snapshot:
            self._snapshot = self._copy_state()
            if due and self.writer:
                self._write(self._snapshot, step)
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

    def _write(self, state: dict, step: int) -> Path | None:
        state = {**state, "lifecycle": {"threads": torch.get_num_threads()}}
        path = save_run_checkpoint(state, self.work_dir, step)
        if path is not None:
            self.checkpoint_path, self.checkpoint_step = path, step
        return path

    def save(self, step: int | None = None) -> Path | None:
        """Write the current state (it must be resumable) to ``checkpoints/latest.pt``."""
        if not self.writer:
            return None
        state = self.state_fn()
        return self._write(state, state["step"] if step is None else step)

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
        return self._write(snapshot, snapshot["step"]) if self.writer else None

    # ----------------------------------------------------------------- the end
    def finish(self, step: int, *, complete: bool, final_eval: Callable[[], object] | None = None, reason: str = "") -> Path | None:
        """End the run: the final evaluation (unless a stop came, or ``final_eval`` is None because it was
        done), then the checkpoint and the stop line.

        ``complete``: all training steps are done (the final state is then written even if a signal comes
        during the final evaluation, which the resumed run still owes). ``reason``: why the run stopped
        early without a signal (non-finite updates), or "". Returns the checkpoint written."""
        if final_eval is not None and complete and not self.stop_requested and not reason:
            self.enter("final_eval")
            if self.writer:
                print(f"final evaluation at {self.unit.rstrip('s')} {step} ...", flush=True)
            try:
                final_eval()
            except RunInterrupted:
                pass  # abandoned: the checkpoint below owes it
        self.enter("shutdown")
        stopped = self.stop_requested or bool(reason)
        path = self.save_on_stop() if stopped and not complete else self.save()
        if self.stop_requested:
            unit = self.unit.rstrip("s")
            self.stop_message = (
                f"Received signal {self.signal} ({_signal_name(self.signal)}) during {PHASES[self.signal_phase or self.phase]} at "
                f"{unit} {step}: checkpoint written, stopping ({self.checkpoint_path}, {unit} {self.checkpoint_step}); "
                "resume with resume=true (the same command and work_dir)."
            )
        elif reason:
            self.stop_message = reason
        return path

    @property
    def exit_code(self) -> int:
        """0 for a run that ended as asked, 128+signal after a signal, 1 after another early stop."""
        if self.signal is not None:
            return 128 + self.signal
        return 1 if self.stop_message else 0

    def state_dict(self) -> dict:
        return {"next_checkpoint": self.next_checkpoint}

    def load_state_dict(self, state: dict) -> None:
        self.next_checkpoint = state["next_checkpoint"]
        self.resumable = True
        self._snapshot = None
