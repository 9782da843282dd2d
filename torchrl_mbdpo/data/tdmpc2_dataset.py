"""TD-MPC2's multi-task datasets (``mt30``, ``mt80``) as a TorchRL replay buffer (official
``MBDPO/trainer/offline_trainer.py``; TD-MPC2, arXiv 2310.16828, multi-task datasets).

A dataset folder holds ``chunk_<i>.pt`` files, each one ``TensorDict`` of ``[episodes, rows]``:
``obs`` (float32, zero-padded to the set's largest observation), ``action`` (float32, padded to 6 dims),
``reward`` (float32) and ``task`` (int, index into ``TASK_SETS[set]``). Row 0 of an episode holds the
first observation with NaN action and reward; row ``t`` holds ``o_t`` and the ``a_{t-1}, r_{t-1}`` that
led to it. mt30 stores 501-row episodes, mt80 101-row segments.

:func:`validate_dataset` checks a folder and reports every problem with the file it is in.
:func:`load_dataset` copies the selected episodes once into memory-mapped storage (a cache folder, reused
by later runs), with the task names and per-task dimensions written beside it (``metadata.json``), and
returns a ``ReplayBuffer`` whose ``SliceSampler`` draws ``horizon + 1``-row slices within one
episode; its transform turns each slice into the ``[B, horizon]`` transitions the losses read.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import ReplayBuffer, SliceSampler, TensorStorage
from torchrl.data.replay_buffers.writers import ImmutableDatasetWriter
from torchrl.envs import Transform

from ..config import UserError
from ..modules.functional import discount_from_episode_length
from .task_sets import EPISODE_ROWS, PADDED_DIMS, TASK_SETS, task_dims

__all__ = [
    "DOWNLOAD_URL",
    "NUM_CHUNKS",
    "DatasetError",
    "DatasetInfo",
    "ChunkRowsToTransitions",
    "describe_dataset",
    "validate_dataset",
    "load_dataset",
    "write_chunk",
    "write_metadata",
    "tdmpc2_discount",
]

DOWNLOAD_URL = "https://huggingface.co/datasets/nicklashansen/tdmpc2/resolve/main/{task_set}/chunk_{index}.pt"
NUM_CHUNKS = {"mt30": 4, "mt80": 20}
METADATA_FILE = "metadata.json"
CHUNK_KEYS = ("obs", "action", "reward", "task")
_CHUNK_NAME = re.compile(r"chunk_(\d+)\.pt$")
_CACHE_VERSION = 1


class DatasetError(UserError):
    """A dataset folder that cannot be used as it is; the message lists every problem found."""


# The per-task discount heuristic, under its old name here (trainers/finetune.py imports it).
tdmpc2_discount = discount_from_episode_length


@dataclass
class DatasetInfo:
    """What a dataset holds. ``tasks`` is the index space of the ``task`` column (the set's order);
    ``episodes`` counts the stored episodes (or segments) per present task."""

    task_set: str
    tasks: list[str]
    obs_dims: list[int]
    action_dims: list[int]
    episode_lengths: list[int]
    padded_obs_dim: int
    padded_action_dim: int
    rows_per_episode: int
    chunks: list[str] = field(default_factory=list)
    episodes: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of_set(cls, task_set: str) -> "DatasetInfo":
        if task_set not in TASK_SETS:
            raise DatasetError(f"Unknown task set {task_set!r}; TD-MPC2's datasets are {sorted(TASK_SETS)}.")
        tasks = list(TASK_SETS[task_set])
        dims = [task_dims(t) for t in tasks]
        obs, act = PADDED_DIMS[task_set]
        return cls(task_set, tasks, [d[0] for d in dims], [d[1] for d in dims], [d[2] for d in dims], obs, act, EPISODE_ROWS[task_set])

    @property
    def present_tasks(self) -> list[str]:
        return [t for t in self.tasks if self.episodes.get(t)]

    def discounts(self) -> torch.Tensor:
        """One discount per task index."""
        return torch.tensor([discount_from_episode_length(length) for length in self.episode_lengths])


def write_metadata(folder: Path, info: DatasetInfo) -> None:
    (Path(folder) / METADATA_FILE).write_text(json.dumps(asdict(info), indent=1))


def read_metadata(folder: Path) -> DatasetInfo | None:
    path = Path(folder) / METADATA_FILE
    if not path.exists():
        return None
    try:
        return DatasetInfo(**json.loads(path.read_text()))
    except (TypeError, json.JSONDecodeError) as err:
        raise DatasetError(
            f"{path} is not a valid dataset description ({err}). Delete it to fall back to the TD-MPC2 task tables."
        ) from err


def write_chunk(path: Path, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, task: torch.Tensor) -> None:
    """Save episodes in TD-MPC2's chunk layout (``[episodes, rows]``, row 0 action/reward NaN)."""
    chunk = TensorDict(
        {"obs": obs.float(), "action": action.float(), "reward": reward.float(), "task": task.to(torch.int32)}, batch_size=obs.shape[:2]
    )
    torch.save(chunk, path)


def _chunk_files(folder: Path) -> list[Path]:
    files = [p for p in folder.iterdir() if _CHUNK_NAME.search(p.name)]
    return sorted(files, key=lambda p: int(_CHUNK_NAME.search(p.name).group(1)))


def _open_chunk(path: Path) -> TensorDictBase:
    try:
        chunk = torch.load(path, mmap=True, weights_only=False)  # mmap: a 5 GB mt80 chunk is not read until used
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear message
        raise DatasetError(f"{path}: cannot be read as a torch file ({type(err).__name__}: {err}). Download it again.") from err
    if not isinstance(chunk, TensorDictBase):
        raise DatasetError(f"{path}: holds a {type(chunk).__name__}, not the TensorDict of a TD-MPC2 chunk.")
    return chunk


def _check_chunk(path: Path, chunk: TensorDictBase, info: DatasetInfo) -> tuple[list[str], torch.Tensor | None]:
    """Problems of one chunk, and the task index of each of its episodes (None if unreadable)."""
    name = path.name
    missing = [k for k in CHUNK_KEYS if k not in chunk.keys()]
    if missing:
        return [f"{name}: no {missing} entries (has {sorted(chunk.keys())}); a TD-MPC2 chunk has {list(CHUNK_KEYS)}."], None
    if chunk.batch_dims != 2:
        return [f"{name}: batch_size {tuple(chunk.batch_size)}; expected [episodes, rows]."], None
    n, rows = chunk.batch_size
    expected = {
        "obs": (n, info.rows_per_episode, info.padded_obs_dim),
        "action": (n, info.rows_per_episode, info.padded_action_dim),
        "reward": (n, info.rows_per_episode),
        "task": (n, info.rows_per_episode),
    }
    problems = [
        f"{name}: {k} has shape {tuple(chunk[k].shape)}, expected {shape} for {info.task_set} "
        f"({info.rows_per_episode} rows per episode, observations padded to {info.padded_obs_dim}, "
        f"actions to {info.padded_action_dim})."
        for k, shape in expected.items()
        if tuple(chunk[k].shape) != shape
    ]
    if problems:
        return problems, None
    task = chunk["task"]
    if task.dtype.is_floating_point:
        return [f"{name}: task has dtype {task.dtype}; expected an integer index into the {info.task_set} task list."], None
    episode_task = task[:, 0].long()
    if (task != task[:, :1]).any():
        problems.append(f"{name}: the task index changes inside {int((task != task[:, :1]).any(1).sum())} episode(s).")
    bad = (episode_task < 0) | (episode_task >= len(info.tasks))
    if bad.any():
        problems.append(
            f"{name}: task indices {sorted(set(episode_task[bad].tolist()))[:5]} are outside the {info.task_set} set "
            f"(0..{len(info.tasks) - 1}); is this a chunk of another task set?"
        )
    for key in ("action", "reward"):
        nonfinite = ~torch.isfinite(chunk[key][:, 1:])
        if nonfinite.any():
            episodes = nonfinite.flatten(1).any(1).nonzero().flatten()
            problems.append(
                f"{name}: {key} has {int(nonfinite.sum())} NaN/inf values outside row 0, in episode(s) "
                f"{episodes[:5].tolist()}{' ...' if len(episodes) > 5 else ''}."
            )
    nonfinite_obs = ~torch.isfinite(chunk["obs"])
    if nonfinite_obs.any():
        problems.append(f"{name}: obs has {int(nonfinite_obs.sum())} NaN/inf values.")
    return problems, episode_task.clamp(0, len(info.tasks) - 1)


def describe_dataset(data_dir) -> DatasetInfo:
    """A dataset's task set and dimensions without reading its data: its ``metadata.json``, else the TD-MPC2
    set whose padding the first chunk has (``episodes`` is then empty)."""
    folder = Path(data_dir)
    files = _chunk_files(folder) if folder.is_dir() else []
    if not files:
        raise DatasetError(f"{folder} has no chunk_<i>.pt files. {download_hint('mt30', folder)}")
    info = read_metadata(folder)
    if info is not None:
        return info
    obs_dim = _open_chunk(files[0])["obs"].shape[-1]
    matches = [s for s, (obs, _) in PADDED_DIMS.items() if obs == obs_dim]
    if not matches:
        raise DatasetError(
            f"{files[0]}: observations of size {obs_dim} match no TD-MPC2 set "
            f"({', '.join(f'{s}: {d[0]}' for s, d in PADDED_DIMS.items())}), and {folder} has no {METADATA_FILE}."
        )
    return DatasetInfo.of_set(matches[0])


def validate_dataset(data_dir, task_set: str | None = None, progress: bool = False) -> DatasetInfo:
    """Check a dataset folder: chunk files present and numbered 0..n-1 (all 4 / 20 of a downloaded set), the
    chunk layout and shapes of the set, task indices in range and constant per episode, no NaN outside
    row 0, and (with ``task_set``) that the data is of that set. Raises :class:`DatasetError` listing every
    problem with its file; returns the :class:`DatasetInfo` with the episode count per task."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise DatasetError(f"Dataset folder {folder} does not exist. {download_hint(task_set or 'mt30', folder)}")
    files = _chunk_files(folder)
    if not files:
        raise DatasetError(f"{folder} has no chunk_<i>.pt files. {download_hint(task_set or 'mt30', folder)}")
    info = describe_dataset(folder)
    problems = []
    if task_set is not None and task_set != info.task_set:
        problems.append(f"{folder} holds {info.task_set} data (task list and padding), but task={task_set} was asked for.")
    indices = [int(_CHUNK_NAME.search(p.name).group(1)) for p in files]
    expected_count = len(info.chunks) or NUM_CHUNKS[info.task_set]
    gaps = sorted(set(range(max(expected_count, max(indices) + 1))) - set(indices))
    if gaps:
        problems.append(
            f"{folder}: missing {', '.join(f'chunk_{i}.pt' for i in gaps)} (found {len(files)} of {expected_count}). "
            + download_hint(info.task_set, folder)
        )
    counts = torch.zeros(len(info.tasks), dtype=torch.long)
    from tqdm.auto import tqdm

    for path in tqdm(files, desc=f"checking {folder}", disable=not progress, leave=False):
        try:
            chunk = _open_chunk(path)
        except DatasetError as err:
            problems.append(str(err))
            continue
        chunk_problems, episode_task = _check_chunk(path, chunk, info)
        problems += chunk_problems
        if episode_task is not None:
            counts += torch.bincount(episode_task, minlength=len(info.tasks))
    if problems:
        raise DatasetError(f"{len(problems)} problem(s) in dataset {folder}:\n  - " + "\n  - ".join(problems))
    info.chunks = [p.name for p in files]
    info.episodes = {t: int(c) for t, c in zip(info.tasks, counts) if c}
    return info


def download_hint(task_set: str, folder) -> str:
    n = NUM_CHUNKS.get(task_set, 4)
    url = DOWNLOAD_URL.format(task_set=task_set, index="{i}")
    return (
        f"Download TD-MPC2's {task_set} ({n} files): "
        f"for i in $(seq 0 {n - 1}); do wget -c -P {folder} {url.replace('{i}', '$i')}; done "
        f"-- or write a small dataset from real rollouts: mbdpo-dataset generate out={folder}"
    )


class ChunkRowsToTransitions(Transform):
    """Sampled ``[B * (H + 1)]`` chunk rows -> ``[B, H]`` transitions in TorchRL layout (``observation``,
    ``action``, ``("next", observation|reward|terminated|truncated|done)``, ``task``, and the task's
    ``discount``). The dataset has no terminations (as TD-MPC2's): ``terminated`` is False."""

    def __init__(self, horizon: int, discounts: torch.Tensor):
        super().__init__()
        self.horizon = horizon
        self.register_buffer("discounts", discounts.float())

    def forward(self, rows: TensorDictBase) -> TensorDictBase:
        rows = rows.reshape(-1, self.horizon + 1)
        obs, task = rows["observation"], rows["task"][:, : self.horizon].long()
        no_end = torch.zeros(*task.shape, 1, dtype=torch.bool)
        return TensorDict(
            {
                "observation": obs[:, :-1],
                "action": rows["action"][:, 1:],
                "task": task,
                "discount": self.discounts[task].unsqueeze(-1),
                "episode": rows["episode"][:, :-1],
                "next": {
                    "observation": obs[:, 1:],
                    "reward": rows["reward"][:, 1:].unsqueeze(-1),
                    "terminated": no_end,
                    "truncated": no_end.clone(),
                    "done": no_end.clone(),
                },
            },
            batch_size=task.shape,
        )

    def _inv_call(self, tensordict):
        raise RuntimeError("This dataset is read-only.")


def _fingerprint(files: list[Path], tasks: list[str]) -> dict:
    return {"version": _CACHE_VERSION, "tasks": list(tasks), "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]}


def _build_cache(folder: Path, info: DatasetInfo, tasks: list[str], cache: Path, progress: bool) -> TensorDictBase:
    from tqdm.auto import tqdm

    keep = torch.zeros(len(info.tasks), dtype=torch.bool)
    keep[[info.tasks.index(t) for t in tasks]] = True
    rows_per = info.rows_per_episode
    total = sum(info.episodes.get(t, 0) for t in tasks) * rows_per
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "complete.json").unlink(missing_ok=True)
    storage = TensorDict(batch_size=[total]).memmap_(cache / "rows", existsok=True)
    for key, shape, dtype in (
        ("observation", (info.padded_obs_dim,), torch.float32),
        ("action", (info.padded_action_dim,), torch.float32),
        ("reward", (), torch.float32),
        ("task", (), torch.int32),
        ("episode", (), torch.int64),
    ):
        storage.make_memmap(key, shape=(total, *shape), dtype=dtype)
    start, episode = 0, 0
    for name in tqdm(info.chunks, desc=f"copying {folder} to {cache}", disable=not progress):
        chunk = _open_chunk(folder / name)
        selected = keep[chunk["task"][:, 0].long()].nonzero().flatten()
        if not len(selected):
            continue
        part = chunk[selected]
        n = len(selected) * rows_per
        stop = start + n
        storage["observation"][start:stop] = part["obs"].reshape(n, -1)
        storage["action"][start:stop] = part["action"].reshape(n, -1)
        storage["reward"][start:stop] = part["reward"].reshape(n)
        storage["task"][start:stop] = part["task"].reshape(n).to(torch.int32)
        storage["episode"][start:stop] = torch.arange(episode, episode + len(selected)).repeat_interleave(rows_per)
        start, episode = stop, episode + len(selected)
    return storage


def load_dataset(
    data_dir,
    horizon: int,
    batch_size: int,
    *,
    tasks: list[str] | None = None,
    task_set: str | None = None,
    cache_dir=None,
    progress: bool = True,
    info: DatasetInfo | None = None,
) -> tuple[ReplayBuffer, DatasetInfo]:
    """The episodes of ``tasks`` (default: every task in the data) as a replay buffer whose ``sample()``
    returns ``[batch_size, horizon]`` transitions, and the dataset's :class:`DatasetInfo`.

    The first call validates the folder and copies the selected episodes to memory-mapped storage in
    ``cache_dir`` (default ``<data_dir>/memmap``); later calls with the same files (names, sizes, times)
    and tasks open that copy without reading the chunks again. ``info``: the result of a
    :func:`validate_dataset` call already made on this folder (not repeated).
    """
    folder = Path(data_dir)
    cache = Path(cache_dir) if cache_dir is not None else folder / "memmap"
    done = cache / "complete.json"
    checked, info = info, None
    if done.exists() and folder.is_dir():
        recorded = json.loads(done.read_text())
        cached = read_metadata(cache)
        if recorded == _fingerprint(_chunk_files(folder), tasks or recorded["tasks"]) and task_set in (None, cached.task_set):
            info, tasks = cached, recorded["tasks"]
            storage = TensorDict.load_memmap(cache / "rows")
    if info is None:
        info = checked or validate_dataset(folder, task_set, progress=progress)
        tasks = list(tasks) if tasks else info.present_tasks
        absent = [t for t in tasks if not info.episodes.get(t)]
        if absent:
            raise DatasetError(f"{folder} has no episodes of {absent}; it holds {info.present_tasks}.")
        storage = _build_cache(folder, info, tasks, cache, progress)
        write_metadata(cache, info)
        done.write_text(json.dumps(_fingerprint([folder / name for name in info.chunks], tasks)))
    if info.rows_per_episode < horizon + 1:
        raise DatasetError(f"Episodes of {info.rows_per_episode} rows are shorter than a slice of horizon + 1 = {horizon + 1}.")
    sampler = SliceSampler(slice_len=horizon + 1, traj_key="episode", truncated_key=None, strict_length=True, cache_values=True)
    buffer = ReplayBuffer(
        storage=TensorStorage(storage),
        sampler=sampler,
        writer=ImmutableDatasetWriter(),
        batch_size=batch_size * (horizon + 1),
        transform=ChunkRowsToTransitions(horizon, info.discounts()),
    )
    return buffer, info


def transitions_in(info: DatasetInfo, tasks: list[str]) -> int:
    """Number of stored transitions of ``tasks`` (rows minus each episode's first row)."""
    return sum(info.episodes.get(t, 0) for t in tasks) * (info.rows_per_episode - 1)
