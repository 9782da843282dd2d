"""Replay buffer of whole episodes, sampled as (horizon)-long slices that never cross episodes."""

from __future__ import annotations

import warnings

import torch
from tensordict import TensorDictBase
from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer

__all__ = ["TRANSITION_KEYS", "make_replay_buffer", "EpisodeWriter"]

# What the losses read; the planner's ``plan`` and other collector outputs are not stored.
TRANSITION_KEYS = [
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "terminated"),
    ("next", "truncated"),
    ("next", "done"),
]


def make_replay_buffer(horizon: int, batch_size: int, capacity: int, device="cpu") -> TensorDictReplayBuffer:
    """``TensorDictReplayBuffer`` + ``SliceSampler``: ``rb.sample()`` returns ``batch_size * horizon``
    transitions; ``.reshape(batch_size, horizon)`` gives the ``[B, H]`` layout the losses expect.

    Slices are delimited by the ``episode`` ids that :class:`EpisodeWriter` assigns. ``truncated_key=None``
    keeps the sampler from marking slice ends as done: bootstrapping follows ``("next", "terminated")`` only.
    """
    sampler = SliceSampler(slice_len=horizon, traj_key="episode", truncated_key=None, strict_length=True)
    return TensorDictReplayBuffer(storage=LazyTensorStorage(capacity, device=device), sampler=sampler, batch_size=batch_size * horizon)


class EpisodeWriter:
    """Buffers each environment's steps and writes an episode to the replay buffer when it ends.

    Storage then holds every episode contiguously, which is what ``SliceSampler`` needs when several
    environments are collected step by step (their steps would otherwise interleave). This is also the
    official code's protocol: episodes are added whole, at their end. Each stored episode gets a fresh
    ``episode`` id from a counter that survives checkpoints, so ids never repeat within a run. Episodes
    with a non-finite observation or reward are dropped (and counted), never stored.

    ``deferred=True``: finished episodes wait for :meth:`flush`, so the buffer changes only when the run
    says so (at its resumable points, where every environment starts a new episode).
    """

    def __init__(self, replay_buffer: TensorDictReplayBuffer, keys=None, deferred: bool = False):
        self.replay_buffer = replay_buffer
        self.keys = list(keys or TRANSITION_KEYS)
        self.deferred = deferred
        self._pending: dict[int, list[TensorDictBase]] = {}
        self._finished: list[TensorDictBase] = []
        self.episodes_written = 0
        self.episodes_dropped = 0

    def __call__(self, batch: TensorDictBase) -> int:
        """Stage a collector batch (``[T]`` or ``[num_envs, T]``); returns the number of episodes written."""
        keys = [k for k in self.keys if k in batch.keys(True)]
        batch = batch.select(*keys)
        if batch.ndim == 1:
            batch = batch.unsqueeze(0)
        written = 0
        for env_idx in range(batch.shape[0]):
            steps = batch[env_idx]
            pending = self._pending.setdefault(env_idx, [])
            start = 0
            for end in steps["next", "done"].reshape(-1).nonzero().flatten().tolist():
                pending.append(steps[start : end + 1])
                episode = torch.cat(pending)
                if self.deferred:
                    self._finished.append(episode)
                else:
                    written += self._store(episode)
                pending.clear()
                start = end + 1
            if start < steps.shape[0]:
                pending.append(steps[start:])
        return written

    def flush(self, close_pending: bool = False) -> int:
        """Write the finished episodes; with ``close_pending``, also each unfinished one, ended as truncated
        (its environment is being reset: a time-limit-like cut, so its last step still bootstraps).
        Returns the number of episodes written."""
        episodes, self._finished = self._finished, []
        if close_pending:
            for pending in self._pending.values():
                if pending:
                    episode = torch.cat(pending)
                    for key in (("next", "truncated"), ("next", "done")):
                        if key in episode.keys(True):
                            episode[key][-1] = True
                    episodes.append(episode)
            self._pending.clear()
        return sum(self._store(episode) for episode in episodes)

    def _store(self, episode: TensorDictBase) -> int:
        checked = [k for k in ("observation", ("next", "observation"), ("next", "reward")) if k in episode.keys(True)]
        finite = all(torch.isfinite(episode.get(k)).all() for k in checked)
        if not finite:
            self.episodes_dropped += 1
            warnings.warn(f"Dropped an episode with a non-finite observation or reward ({self.episodes_dropped} so far).", stacklevel=3)
            return 0
        episode.set("episode", torch.full(episode.shape, self.episodes_written, dtype=torch.long))
        self.replay_buffer.extend(episode)
        self.episodes_written += 1
        return 1

    def discard_pending(self) -> None:
        """Forget unfinished episodes (their environments are being reset)."""
        self._pending.clear()

    def state_dict(self) -> dict:
        return {"episodes_written": self.episodes_written, "episodes_dropped": self.episodes_dropped}

    def load_state_dict(self, state: dict) -> None:
        self.episodes_written = state["episodes_written"]
        self.episodes_dropped = state["episodes_dropped"]
