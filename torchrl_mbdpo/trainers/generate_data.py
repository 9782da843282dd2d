"""Write multi-task datasets in TD-MPC2's chunk format: from random-action rollouts (``mbdpo-dataset
generate``, used by the tests and the offline demo, where TD-MPC2's mt30/mt80 files cannot be downloaded)
or from the replay buffers of online runs (``mbdpo-dataset export``: the episodes a learning agent
collected, of mixed quality, like TD-MPC2's own datasets).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tensordict import TensorDict
from tqdm.auto import tqdm

from ..data.task_sets import EPISODE_ROWS, PADDED_DIMS, TASK_SETS
from ..data.tdmpc2_dataset import DatasetError, DatasetInfo, write_chunk, write_metadata
from ..envs import make_env
from .checkpoint import load_checkpoint

__all__ = ["generate_dataset", "export_replay", "episode_rows"]


def episode_rows(rollout, rows_per_episode: int, obs_size: int, action_size: int) -> dict[str, torch.Tensor]:
    """One rollout (``[T]`` TorchRL transitions) -> TD-MPC2 rows, cut into ``rows_per_episode``-row
    segments that each start with an observation and a NaN action/reward row (mt80 stores a 500-step
    DMC episode as five 101-row segments)."""
    obs = torch.cat([rollout["observation"][:1], rollout["next", "observation"]])
    nan = torch.full((1, action_size), float("nan"))
    action = torch.cat([nan, torch.nn.functional.pad(rollout["action"], (0, action_size - rollout["action"].shape[-1]))])
    reward = torch.cat([nan[:, 0], rollout["next", "reward"].reshape(-1)])
    obs = torch.nn.functional.pad(obs, (0, obs_size - obs.shape[-1]))
    step = rows_per_episode - 1
    if len(rollout) % step:
        raise DatasetError(f"An episode of {len(rollout)} steps does not split into {rows_per_episode}-row segments.")
    starts = range(0, len(rollout), step)
    segments = {
        "obs": torch.stack([obs[s : s + rows_per_episode] for s in starts]),
        "action": torch.stack([action[s : s + rows_per_episode] for s in starts]),
        "reward": torch.stack([reward[s : s + rows_per_episode] for s in starts]),
    }
    segments["action"][:, 0] = float("nan")
    segments["reward"][:, 0] = float("nan")
    return segments


def _new_dataset(out_dir, tasks: list[str], task_set: str) -> tuple[Path, DatasetInfo]:
    if task_set not in TASK_SETS:
        raise DatasetError(f"task_set must be one of {sorted(TASK_SETS)}, got {task_set!r}")
    unknown = [t for t in tasks if t not in TASK_SETS[task_set]]
    if unknown:
        raise DatasetError(f"{unknown} are not {task_set} tasks; the chunk format indexes tasks by their position in {task_set}.")
    out = Path(out_dir)
    if out.exists() and any(out.glob("chunk_*.pt")):
        raise DatasetError(f"{out} already holds chunk files; choose an empty folder (nothing was overwritten).")
    return out, DatasetInfo.of_set(task_set)


class _ChunkWriter:
    """Collects episodes (TorchRL transitions) as TD-MPC2 rows, then writes shuffled chunks and metadata."""

    def __init__(self, out: Path, info: DatasetInfo):
        self.out, self.info = out, info
        self.rows: dict[str, list[torch.Tensor]] = {"obs": [], "action": [], "reward": [], "task": []}

    def add(self, task: str, transitions) -> None:
        obs_size, action_size = PADDED_DIMS[self.info.task_set]
        rows = episode_rows(transitions, EPISODE_ROWS[self.info.task_set], obs_size, action_size)
        for key, value in rows.items():
            self.rows[key].append(value)
        self.rows["task"].append(torch.full(rows["reward"].shape, self.info.tasks.index(task), dtype=torch.int32))
        self.info.episodes[task] = self.info.episodes.get(task, 0) + len(rows["reward"])

    def write(self, episodes_per_chunk: int, seed: int) -> DatasetInfo:
        if not self.rows["obs"]:
            raise DatasetError("No complete episode to write.")
        self.out.mkdir(parents=True, exist_ok=True)
        stacked = {key: torch.cat(values) for key, values in self.rows.items()}
        # tasks mixed across chunks, as TD-MPC2's
        order = torch.randperm(len(stacked["obs"]), generator=torch.Generator().manual_seed(seed))
        for c, start in enumerate(range(0, len(order), episodes_per_chunk)):
            idx = order[start : start + episodes_per_chunk]
            write_chunk(self.out / f"chunk_{c}.pt", *(stacked[k][idx] for k in ("obs", "action", "reward", "task")))
            self.info.chunks.append(f"chunk_{c}.pt")
        write_metadata(self.out, self.info)
        return self.info


def generate_dataset(
    out_dir,
    tasks: list[str],
    episodes_per_task: int,
    *,
    task_set: str = "mt30",
    seed: int = 0,
    episodes_per_chunk: int = 1000,
    progress: bool = True,
) -> DatasetInfo:
    """Roll out ``episodes_per_task`` random-action episodes of each task and save them as ``chunk_<i>.pt``
    files of ``task_set``'s layout (padding, rows per episode, task indices), with ``metadata.json``."""
    out, info = _new_dataset(out_dir, tasks, task_set)
    writer = _ChunkWriter(out, info)
    bar = tqdm(total=len(tasks) * episodes_per_task, desc=f"rollouts -> {out}", disable=not progress)
    for i, task in enumerate(tasks):
        env = make_env(task, seed=seed + 1000 * i)
        for _ in range(episodes_per_task):
            writer.add(task, env.rollout(env.task_spec.episode_length, break_when_any_done=False))
            bar.update()
        env.close()
    bar.close()
    return writer.write(episodes_per_chunk, seed)


def export_replay(checkpoints: list, out_dir, *, task_set: str = "mt30", seed: int = 0, episodes_per_chunk: int = 1000) -> DatasetInfo:
    """The complete episodes stored in online runs' checkpoints (``<work_dir>/checkpoints/latest.pt``), as a
    dataset of ``task_set``'s layout. Each checkpoint's task must belong to the set."""
    states = [load_checkpoint(path) for path in checkpoints]
    tasks = [state["config"]["task"] for state in states]
    out, info = _new_dataset(out_dir, sorted(set(tasks)), task_set)
    writer, complete = _ChunkWriter(out, info), 0
    for path, task, state in zip(checkpoints, tasks, states):
        storage = state["replay_buffer"]["_storage"]
        if not storage.get("_len"):  # a run that stored no episode yet
            continue
        rows = TensorDict(dict(storage["_storage"]), batch_size=[]).unflatten_keys(".")
        rows = rows.auto_batch_size_(1)[: storage["_len"]]
        episode = rows["episode"]
        ends = torch.nonzero(episode[1:] != episode[:-1]).flatten().add(1).tolist()
        for start, stop in zip([0, *ends], [*ends, len(rows)]):
            length = stop - start
            if length == info.episode_lengths[info.tasks.index(task)]:  # complete episodes only
                writer.add(task, rows[start:stop])
                complete += 1
    if not complete:
        lengths = ", ".join(f"{t}: {info.episode_lengths[info.tasks.index(t)]} steps" for t in sorted(set(tasks)))
        raise DatasetError(
            f"{', '.join(map(str, checkpoints))} hold(s) no complete episode ({lengths}): export runs that trained past "
            "their first episodes, or train this one further (resume=true steps=<more>)."
        )
    return writer.write(episodes_per_chunk, seed)
