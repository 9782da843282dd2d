"""Write a small multi-task dataset in TD-MPC2's chunk format from real rollouts (``mbdpo-dataset generate``).

Used by the tests and the offline demo, where TD-MPC2's mt30/mt80 files (hundreds of GB) cannot be
downloaded. The behaviour policy is uniform random actions, or a trained checkpoint's planner per task.
"""
from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.task_sets import EPISODE_ROWS, PADDED_DIMS, TASK_SETS
from ..data.tdmpc2_dataset import DatasetError, DatasetInfo, write_chunk, write_metadata
from ..envs import make_env

__all__ = ["generate_dataset", "episode_rows"]


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
    segments = {"obs": torch.stack([obs[s: s + rows_per_episode] for s in starts]),
                "action": torch.stack([action[s: s + rows_per_episode] for s in starts]),
                "reward": torch.stack([reward[s: s + rows_per_episode] for s in starts])}
    segments["action"][:, 0] = float("nan")
    segments["reward"][:, 0] = float("nan")
    return segments


def generate_dataset(out_dir, tasks: list[str], episodes_per_task: int, *, task_set: str = "mt30", seed: int = 0,
                     episodes_per_chunk: int = 1000, progress: bool = True) -> DatasetInfo:
    """Roll out ``episodes_per_task`` random-action episodes of each task and save them as ``chunk_<i>.pt``
    files of ``task_set``'s layout (padding, rows per episode, task indices), with ``metadata.json``."""
    if task_set not in TASK_SETS:
        raise DatasetError(f"task_set must be one of {sorted(TASK_SETS)}, got {task_set!r}")
    unknown = [t for t in tasks if t not in TASK_SETS[task_set]]
    if unknown:
        raise DatasetError(f"{unknown} are not {task_set} tasks; the chunk format indexes tasks by their position in {task_set}.")
    out = Path(out_dir)
    if out.exists() and any(out.glob("chunk_*.pt")):
        raise DatasetError(f"{out} already holds chunk files; choose an empty folder (nothing was overwritten).")
    out.mkdir(parents=True, exist_ok=True)
    info = DatasetInfo.of_set(task_set)
    obs_size, action_size = PADDED_DIMS[task_set]
    rows_per = EPISODE_ROWS[task_set]
    episodes: dict[str, list[torch.Tensor]] = {"obs": [], "action": [], "reward": [], "task": []}
    bar = tqdm(total=len(tasks) * episodes_per_task, desc=f"rollouts -> {out}", disable=not progress)
    for i, task in enumerate(tasks):
        env = make_env(task, seed=seed + 1000 * i)
        index = info.tasks.index(task)
        for _ in range(episodes_per_task):
            rollout = env.rollout(env.task_spec.episode_length, break_when_any_done=False)
            rows = episode_rows(rollout, rows_per, obs_size, action_size)
            for key, value in rows.items():
                episodes[key].append(value)
            episodes["task"].append(torch.full(rows["reward"].shape, index, dtype=torch.int32))
            info.episodes[task] = info.episodes.get(task, 0) + len(rows["reward"])
            bar.update()
        env.close()
    bar.close()
    stacked = {key: torch.cat(values) for key, values in episodes.items()}
    order = torch.randperm(len(stacked["obs"]), generator=torch.Generator().manual_seed(seed))  # tasks mixed across chunks, as TD-MPC2's
    for c, start in enumerate(range(0, len(order), episodes_per_chunk)):
        idx = order[start: start + episodes_per_chunk]
        write_chunk(out / f"chunk_{c}.pt", *(stacked[k][idx] for k in ("obs", "action", "reward", "task")))
        info.chunks.append(f"chunk_{c}.pt")
    write_metadata(out, info)
    return info
