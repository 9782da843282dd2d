"""Replay buffer of whole episodes, sampled as (horizon)-long slices that never cross episodes."""
from __future__ import annotations

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
    ("collector", "traj_ids"),
]


def make_replay_buffer(horizon: int, batch_size: int, capacity: int, device="cpu") -> TensorDictReplayBuffer:
    """``TensorDictReplayBuffer`` + ``SliceSampler``: ``rb.sample()`` returns ``batch_size * horizon``
    transitions; ``.reshape(batch_size, horizon)`` gives the ``[B, H]`` layout the losses expect.

    Slices are delimited by the collector's trajectory ids. ``truncated_key=None`` keeps the sampler
    from marking slice ends as done: bootstrapping must follow ``("next", "terminated")`` only.
    """
    sampler = SliceSampler(slice_len=horizon, traj_key=("collector", "traj_ids"), truncated_key=None, strict_length=True)
    return TensorDictReplayBuffer(
        storage=LazyTensorStorage(capacity, device=device), sampler=sampler, batch_size=batch_size * horizon
    )


class EpisodeWriter:
    """Buffers each environment's steps and writes an episode to the replay buffer when it ends.

    Storage then holds every episode contiguously, which is what ``SliceSampler`` needs when several
    environments are collected step by step (their steps would otherwise interleave). This is also the
    official code's protocol: episodes are added whole, at their end.
    """

    def __init__(self, replay_buffer: TensorDictReplayBuffer, keys=None):
        self.replay_buffer = replay_buffer
        self.keys = list(keys or TRANSITION_KEYS)
        self._pending: dict[int, list[TensorDictBase]] = {}

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
                self.replay_buffer.extend(torch.cat(pending))
                pending.clear()
                written += 1
                start = end + 1
            if start < steps.shape[0]:
                pending.append(steps[start:])
        return written

    @property
    def pending_steps(self) -> int:
        return sum(td.shape[0] for chunks in self._pending.values() for td in chunks)
