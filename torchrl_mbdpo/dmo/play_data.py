"""A play dataset of Push-T image episodes in a TorchRL memory-mapped storage, and its loader.

DMO learns its world models from *play data*: episodes of the real env under behaviour that moves things
around without solving the task. :func:`write_play_dataset` (``mbdpo-dmo dataset out=<dir> episodes=N``) rolls
out :func:`~torchrl_mbdpo.envs.pusht.make_pusht_env` under two behaviours, chosen per episode:

- ``random``: :class:`RandomWalkPolicy`, a random walk of the commanded agent position with occasional jumps;
- ``scripted``: :class:`NoisyPusher`, noisy scripted pushing: go around the block to behind it along a push
  direction (towards the goal with probability ``goal_prob``, else random), then push through its centre;
  Gaussian noise on every commanded position.

``pixels=False`` (``mbdpo-dmo dataset pixels=false``) renders no frame: the rows hold the states only, the data of
the state-space pipeline (:mod:`~torchrl_mbdpo.dmo.state_model`), written about 10x faster.

Nothing is downloaded. The folder holds

- ``storage/``: a :class:`~torchrl.data.LazyMemmapStorage` (one ``.memmap`` file per key) of **rows**, one per
  frame: an episode of ``T`` steps is ``T + 1`` consecutive rows. Row ``t`` holds the frame ``"pixels"`` ``o_t``
  (uint8 ``(3, H, W)``; absent with ``pixels=False``), ``"state"`` ``s_t`` (float32 ``(5,)``, the simulator's
  state), the action ``"action"``
  ``a_t`` taken there (float32 ``(2,)`` in [-1, 1]; zeros on the episode's final row, ``"last"`` True) and its
  outcome ``("next", "reward")``, ``("next", "success")`` (gym-pusht's success test) and
  ``("next", "terminated")``; the frame ``o_{t+1}`` is the next row's. ``"episode"`` (int64), ``"step"`` (int64)
  and ``"policy"`` (0 random, 1 scripted) index the rows;
- ``metadata.json``: :class:`PlayDatasetInfo` (image size, counts, behaviours, seed).

:func:`load_play_dataset` opens it (memory-mapped, nothing is copied) as a :class:`PlayDataset`, whose
:meth:`PlayDataset.windows` cut ``(k frames, k actions) -> next frame`` training windows (padded at episode
starts by repeating the first frame, with zero actions, so that a model can also start from one real frame).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyMemmapStorage, TensorStorage
from tqdm.auto import tqdm

from ..config import UserError
from .config import PlayDataConfig

__all__ = [
    "PLAY_FORMAT_VERSION",
    "BEHAVIOURS",
    "PlayDataConfig",
    "PlayDatasetError",
    "PlayDatasetInfo",
    "PlayDataset",
    "RandomWalkPolicy",
    "NoisyPusher",
    "write_play_dataset",
    "load_play_dataset",
]

PLAY_FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
STORAGE_DIR = "storage"
BEHAVIOURS = ("random", "scripted")
_BLOCK_COG = np.array([0.0, 45.0])  # the T's centre of mass in its body frame (gym-pusht's add_tee, scale 30)
_MARGIN = 20.0  # commanded positions stay this far inside the [0, 512] workspace


class PlayDatasetError(UserError):
    """A play dataset that is missing or cannot be used as asked; the message says what to do."""


@dataclass
class PlayDatasetInfo:
    """What a play dataset folder holds (``metadata.json``)."""

    image_size: int
    episodes: int
    rows: int  # frames stored: transitions + episodes
    transitions: int
    episode_length: int  # the longest an episode may be (steps); episodes that succeed end earlier
    behaviours: dict[str, int] = field(default_factory=dict)  # episodes per behaviour
    scripted_fraction: float = 0.5
    noise: float = 20.0
    seed: int = 0
    env: str = "pusht"
    format_version: int = PLAY_FORMAT_VERSION
    seconds: float = 0.0  # time taken to write it
    pixels: bool = True  # false: states only (no frame was rendered; image_size is 0)

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (3, self.image_size, self.image_size)


# ------------------------------------------------------------------------------------------ behaviours
def _block_centre(state: np.ndarray) -> np.ndarray:
    angle = state[4]
    c, s = math.cos(angle), math.sin(angle)
    return state[2:4] + np.array([c * _BLOCK_COG[0] - s * _BLOCK_COG[1], s * _BLOCK_COG[0] + c * _BLOCK_COG[1]])


def _to_action(position: np.ndarray) -> torch.Tensor:
    from ..envs.pusht import WORKSPACE, position_to_action

    return torch.as_tensor(position_to_action(np.clip(position, _MARGIN, WORKSPACE - _MARGIN)), dtype=torch.float32)


class RandomWalkPolicy:
    """A random walk of the commanded agent position: ``p <- p + N(0, step^2)``, with probability ``jump`` a
    new uniformly drawn position. A TorchRL policy: reads ``"state"``, writes ``"action"``."""

    def __init__(self, rng: np.random.Generator, step: float = 30.0, jump: float = 0.05):
        self.rng, self.step, self.jump = rng, float(step), float(jump)
        self.position = None

    def reset(self) -> None:
        self.position = None

    def __call__(self, td: TensorDictBase) -> TensorDictBase:
        state = td["state"].numpy()
        if self.position is None:
            self.position = state[:2].astype(np.float64)
        if self.rng.random() < self.jump:
            self.position = self.rng.uniform(_MARGIN, 512 - _MARGIN, 2)
        else:
            self.position = np.clip(self.position + self.rng.normal(0.0, self.step, 2), _MARGIN, 512 - _MARGIN)
        td["action"] = _to_action(self.position)
        return td


class NoisyPusher:
    """Noisy scripted pushing (see the module docstring). Each push: pick a direction ``d`` (towards the
    goal's centre with probability ``goal_prob``, else uniform), go behind the block's centre ``c`` (around it,
    by a point 110 units beside it on the agent's side, while the agent is not yet behind it: a straight
    approach would plough through the block and push it the other way), command the contact point ``c - 70 d``
    until the agent is within 25 units of it, then command ``c + 30 d`` for ``push_steps`` steps (drawn in the
    given range; a push towards the goal ends when the block is there); an approach that takes more than
    ``approach_steps`` steps is given up for a new push. Every command gets ``N(0, noise^2)`` noise. A TorchRL
    policy: reads ``"state"``, writes ``"action"``.

    Measured on 60 episodes of 100 steps (all scripted, noise 20): the mean reward (goal coverage) of the play
    transitions is 0.081, against 0.0098 for the former straight approach with 50-unit pushes, which ploughed
    through the block and drove it away from the goal (its centre 118 -> 282 units from the goal's)."""

    def __init__(
        self,
        rng: np.random.Generator,
        noise: float = 20.0,
        goal_prob: float = 0.7,
        push_steps: tuple[int, int] = (4, 10),
        approach_steps: int = 30,
    ):
        from ..envs.pusht import PUSHT_GOAL

        self.rng, self.noise, self.goal_prob = rng, float(noise), float(goal_prob)
        self.push_steps, self.approach_steps = push_steps, int(approach_steps)
        self.goal_centre = _block_centre(np.array([0.0, 0.0, *PUSHT_GOAL]))
        self.reset()

    def reset(self) -> None:
        self.phase, self.left, self.direction, self.to_goal = "plan", 0, None, False

    def _plan(self, centre: np.ndarray) -> None:
        to_goal = self.goal_centre - centre
        self.to_goal = self.rng.random() < self.goal_prob and np.linalg.norm(to_goal) > 10
        if self.to_goal:
            self.direction = to_goal / np.linalg.norm(to_goal)
        else:
            angle = self.rng.uniform(-math.pi, math.pi)
            self.direction = np.array([math.cos(angle), math.sin(angle)])
        self.phase, self.left = "approach", self.approach_steps

    def __call__(self, td: TensorDictBase) -> TensorDictBase:
        state = td["state"].numpy().astype(np.float64)
        centre = _block_centre(state)
        if self.phase == "plan":
            self._plan(centre)
        if self.phase == "approach":
            d = self.direction
            contact = centre - 70.0 * d
            rel = state[:2] - centre
            self.left -= 1
            if np.linalg.norm(state[:2] - contact) < 25.0:
                self.phase, self.left = "push", int(self.rng.integers(self.push_steps[0], self.push_steps[1] + 1))
            elif self.left <= 0:
                self._plan(centre)
            if rel @ d > -50.0:  # not behind the block yet: go around it on the agent's side
                normal = np.array([-d[1], d[0]])
                target = centre + 110.0 * (1.0 if rel @ normal >= 0 else -1.0) * normal - 80.0 * d
            else:
                target = contact
        if self.phase == "push":
            target = centre + 30.0 * self.direction
            self.left -= 1
            if self.left <= 0 or (self.to_goal and (self.goal_centre - centre) @ self.direction < 10.0):
                self.phase = "plan"  # pushed for long enough, or a push towards the goal has got there
        td["action"] = _to_action(target + self.rng.normal(0.0, self.noise, 2))
        return td


# ------------------------------------------------------------------------------------------ writing
def _episode_rows(rollout: TensorDictBase, episode: int, behaviour: int) -> TensorDict:
    """A rollout of ``T`` steps as ``T + 1`` rows (module docstring)."""
    T = rollout.shape[0]
    last = rollout[-1]["next"]
    state = torch.cat([rollout["state"], last["state"][None]])
    action = torch.cat([rollout["action"], torch.zeros(1, rollout["action"].shape[-1])])
    pad = lambda x: torch.cat([x, torch.zeros_like(x[:1])])  # noqa: E731
    is_last = torch.zeros(T + 1, dtype=torch.bool)
    is_last[-1] = True
    rows = TensorDict(
        {
            "state": state.float(),
            "action": action.float(),
            "next": {
                "reward": pad(rollout["next", "reward"].float()),
                "success": pad(rollout["next", "success"]),
                "terminated": pad(rollout["next", "terminated"]),
            },
            "episode": torch.full((T + 1,), episode, dtype=torch.int64),
            "step": torch.arange(T + 1),
            "policy": torch.full((T + 1,), behaviour, dtype=torch.int64),
            "last": is_last,
        },
        batch_size=[T + 1],
    )
    if "pixels" in rollout.keys():
        rows["pixels"] = torch.cat([rollout["pixels"], last["pixels"][None]])
    return rows


def write_play_dataset(
    out,
    episodes: int,
    *,
    image_size: int = 64,
    episode_length: int = 100,
    scripted_fraction: float = 0.5,
    noise: float = 20.0,
    seed: int = 0,
    progress: bool = True,
    pixels: bool = True,
) -> PlayDatasetInfo:
    """Roll out ``episodes`` play episodes of at most ``episode_length`` steps on Push-T rendered at
    ``image_size`` pixels and write them to the new folder ``out`` (module docstring). ``pixels=False`` renders
    nothing: the rows hold the states only (the state-space pipeline's data, about 10x faster to write)."""
    from ..envs.pusht import make_pusht_env

    if episodes < 1 or episode_length < 1:
        raise PlayDatasetError(f"episodes and episode_length must be >= 1, got {episodes} and {episode_length}.")
    if not 0.0 <= scripted_fraction <= 1.0:
        raise PlayDatasetError(f"scripted_fraction must lie in [0, 1], got {scripted_fraction}.")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise PlayDatasetError(f"{out} is not empty; choose a new folder for the play dataset (nothing was overwritten).")
    start = time.perf_counter()
    env = make_pusht_env(image_size=image_size, pixels=pixels, seed=seed, max_episode_steps=episode_length)
    rng = np.random.default_rng(seed)
    policies = [RandomWalkPolicy(rng), NoisyPusher(rng, noise=noise)]
    storage = LazyMemmapStorage(episodes * (episode_length + 1), scratch_dir=out / STORAGE_DIR)
    cursor, counts = 0, {name: 0 for name in BEHAVIOURS}
    with tqdm(total=episodes, desc=f"play episodes -> {out}", disable=not progress) as bar:
        for episode in range(episodes):
            behaviour = int(rng.random() < scripted_fraction)
            policy = policies[behaviour]
            policy.reset()
            rollout = env.rollout(episode_length, policy=policy, break_when_any_done=True)
            rows = _episode_rows(rollout, episode, behaviour)
            storage.set(torch.arange(cursor, cursor + len(rows)), rows)
            cursor += len(rows)
            counts[BEHAVIOURS[behaviour]] += 1
            bar.update()
    env.close()
    info = PlayDatasetInfo(
        image_size=image_size if pixels else 0,
        episodes=episodes,
        rows=cursor,
        transitions=cursor - episodes,
        episode_length=episode_length,
        behaviours=counts,
        scripted_fraction=scripted_fraction,
        noise=noise,
        seed=seed,
        seconds=round(time.perf_counter() - start, 2),
        pixels=pixels,
    )
    (out / METADATA_FILE).write_text(json.dumps(asdict(info), indent=1))
    return info


# ------------------------------------------------------------------------------------------ reading
class PlayDataset:
    """A play dataset opened by :func:`load_play_dataset`: ``rows`` (a memory-mapped TensorDict of the module
    docstring's rows, also as a TorchRL ``storage``), ``info``, and per-episode ``episode_start`` /
    ``episode_steps``."""

    def __init__(self, path: Path, info: PlayDatasetInfo, rows: TensorDictBase):
        self.path, self.info, self.rows = Path(path), info, rows
        self.storage = TensorStorage(rows)
        episode = rows["episode"]
        self.episode_start = torch.searchsorted(episode, torch.arange(info.episodes))
        ends = torch.cat([self.episode_start[1:], torch.tensor([len(rows)])])
        self.episode_steps = ends - self.episode_start - 1
        self._row_start = self.episode_start[episode]  # the first row of each row's episode
        self._transition = ~rows["last"]

    def __len__(self) -> int:
        return self.info.transitions

    @property
    def image_size(self) -> int:
        return self.info.image_size

    def split(self, held_out: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Episode indices ``(train, held_out)``: the last ``held_out`` episodes are held out (behaviours are drawn
        per episode, so these are a fair sample)."""
        n = self.info.episodes
        if not 0 <= held_out < n:
            raise PlayDatasetError(f"held_out must lie in [0, {n - 1}] for a dataset of {n} episodes, got {held_out}.")
        return torch.arange(n - held_out), torch.arange(n - held_out, n)

    def transition_rows(self, episodes: torch.Tensor | None = None) -> torch.Tensor:
        """The rows that start a transition (``o_t, a_t -> o_{t+1}``) in ``episodes`` (default: all)."""
        mask = self._transition.clone()
        if episodes is not None:
            mask &= torch.isin(self.rows["episode"], torch.as_tensor(episodes))
        return mask.nonzero().squeeze(-1)

    def obs_shape(self, key: str) -> tuple[int, ...]:
        """The shape of one ``key`` observation (``"pixels"``: ``(3, H, W)``; ``"state"``: ``(5,)``)."""
        self.check_key(key)
        return tuple(self.rows[key].shape[1:])

    def check_key(self, key: str) -> None:
        if key not in ("pixels", "state"):
            raise PlayDatasetError(f"Observations are 'pixels' or 'state', got {key!r}.")
        if key == "pixels" and not self.info.pixels:
            raise PlayDatasetError(
                f"The play dataset at {self.path} holds states only (written with pixels=false): use the state pipeline (obs=state), "
                "or write a dataset with frames (mbdpo-dmo dataset out=<new dir>)."
            )

    def windows(self, rows: torch.Tensor, context: int, key: str = "pixels") -> TensorDict:
        """Training windows at transition rows ``rows`` (``(N,)``) of ``key`` observations (``"pixels"``: frames,
        ``"state"``: states): ``"frames"`` ``o_{t-k+1..t}`` (``(N, k, *shape)``), ``"actions"`` ``a_{t-k+1..t}``
        (``(N, k, 2)``), ``"target"`` ``o_{t+1}``, ``"target_state"`` ``s_{t+1}``, ``"reward"`` and ``"success"`` of
        the transition; before the episode's start the first observation is repeated and the actions are zero
        (``"valid"`` ``(N, k)`` marks the real ones)."""
        self.check_key(key)
        if context < 1:
            raise PlayDatasetError(f"context must be >= 1 frame, got {context}.")
        rows = torch.as_tensor(rows, dtype=torch.int64)
        if (~self._transition[rows]).any():
            raise PlayDatasetError("windows() needs transition rows (see transition_rows()); an episode's last row has no action.")
        offsets = torch.arange(-(context - 1), 1)
        wanted = rows[:, None] + offsets
        start = self._row_start[rows][:, None]
        valid = wanted >= start
        index = torch.maximum(wanted, start)
        actions = self.rows["action"][index.reshape(-1)].reshape(*index.shape, -1) * valid[..., None]
        observations = self.rows[key]
        frames = observations[index.reshape(-1)].reshape(*index.shape, *observations.shape[1:])
        nxt = rows + 1
        return TensorDict(
            {
                "frames": frames,
                "actions": actions.float(),
                "valid": valid,
                "target": observations[nxt],
                "target_state": self.rows["state"][nxt],
                "reward": self.rows["next", "reward"][rows],
                "success": self.rows["next", "success"][rows],
            },
            batch_size=[len(rows)],
        )

    def sample(
        self, n: int, context: int, generator: torch.Generator, episodes: torch.Tensor | None = None, key: str = "pixels"
    ) -> TensorDict:
        """``n`` windows of ``key`` observations at transition rows drawn uniformly (with replacement) from ``episodes``."""
        candidates = self.transition_rows(episodes)
        pick = torch.randint(len(candidates), (n,), generator=generator)
        return self.windows(candidates[pick], context, key)

    def progress_pairs(self, n: int, generator: torch.Generator, episodes: torch.Tensor | None = None, key: str = "pixels") -> TensorDict:
        """``n`` observation pairs (``key``: frames or states) for a progress (Bradley-Terry) reward, from the
        observations alone (no actions): in an episode
        drawn uniformly from ``episodes`` (those with >= 2 steps), a start row ``s``, a goal row ``g >= s + 2`` and
        two distinct rows ``i < j`` in ``[s, g]``. ``"earlier"`` ``o_i``, ``"later"`` ``o_j``, ``"start"`` ``o_s``,
        ``"goal"`` ``o_g`` (``(n, *shape)``) and the rows themselves (``"rows"``, ``(n, 4)``: s, i, j, g)."""
        self.check_key(key)
        episodes = torch.arange(self.info.episodes) if episodes is None else torch.as_tensor(episodes)
        episodes = episodes[self.episode_steps[episodes] >= 2]
        if len(episodes) == 0:
            raise PlayDatasetError("progress_pairs() needs episodes of at least 2 steps.")
        e = episodes[torch.randint(len(episodes), (n,), generator=generator)]
        T, first = self.episode_steps[e], self.episode_start[e]
        u = torch.rand(n, 4, generator=generator, dtype=torch.float64)
        s = (u[:, 0] * (T - 1)).long()  # [0, T - 2]
        g = s + 2 + (u[:, 1] * (T - s - 1)).long()  # [s + 2, T]
        length = g - s + 1
        a = (u[:, 2] * length).long()
        b = (u[:, 3] * (length - 1)).long()
        b = b + (b >= a).long()  # distinct from a
        i, j = torch.minimum(a, b) + s, torch.maximum(a, b) + s
        rows = torch.stack([s, i, j, g], 1) + first[:, None]
        observations = self.rows[key]
        pixels = observations[rows.reshape(-1)].reshape(n, 4, *observations.shape[1:])
        return TensorDict(
            {"start": pixels[:, 0], "earlier": pixels[:, 1], "later": pixels[:, 2], "goal": pixels[:, 3], "rows": rows}, batch_size=[n]
        )

    def episode(self, index: int) -> TensorDictBase:
        """The rows of one episode (``T + 1`` of them)."""
        if not 0 <= index < self.info.episodes:
            raise PlayDatasetError(f"episode {index} does not exist; the dataset has {self.info.episodes} episodes.")
        s = int(self.episode_start[index])
        return self.rows[s : s + int(self.episode_steps[index]) + 1]


def load_play_dataset(path, *, image_size: int | None = None) -> PlayDataset:
    """Open the play dataset folder ``path``; ``image_size`` (if given) must be the dataset's. Raises
    :class:`PlayDatasetError` for a missing folder, a folder that is not a play dataset, a damaged storage,
    another format version or another image size."""
    path = Path(path)
    meta_path, storage_path = path / METADATA_FILE, path / STORAGE_DIR
    write_hint = f"write one with: mbdpo-dmo dataset out={path} episodes=200"
    if not path.exists():
        raise PlayDatasetError(f"No play dataset at {path}: the folder does not exist; {write_hint}")
    if not meta_path.is_file() or not storage_path.is_dir():
        raise PlayDatasetError(f"{path} is not a play dataset (it lacks {METADATA_FILE} or {STORAGE_DIR}/); {write_hint}")
    try:
        info = PlayDatasetInfo(**json.loads(meta_path.read_text()))
    except (TypeError, json.JSONDecodeError) as err:
        raise PlayDatasetError(f"{meta_path} is not a play dataset description ({err}); {write_hint}") from err
    if info.format_version != PLAY_FORMAT_VERSION:
        raise PlayDatasetError(
            f"{path} has play dataset format {info.format_version}, this library reads {PLAY_FORMAT_VERSION}; {write_hint}"
        )
    if image_size is not None and not info.pixels:
        raise PlayDatasetError(
            f"The play dataset at {path} holds states only (written with pixels=false), but {image_size}x{image_size} frames "
            "were asked for: use the state pipeline (obs=state), or write a dataset with frames (mbdpo-dmo dataset out=<new dir>)."
        )
    if image_size is not None and int(image_size) != info.image_size:
        raise PlayDatasetError(
            f"The play dataset at {path} holds {info.image_size}x{info.image_size} frames, but {image_size}x{image_size} were asked "
            f"for: pass image_size={info.image_size}, or write a dataset of that size (mbdpo-dmo dataset out=<new dir> "
            f"image_size={image_size})."
        )
    try:
        rows = TensorDict.load_memmap(storage_path)
    except Exception as err:  # noqa: BLE001 - any unreadable storage gets the same message
        raise PlayDatasetError(
            f"{storage_path} cannot be read as a TorchRL memmap storage ({type(err).__name__}: {err}); {write_hint}"
        ) from err
    key, shape = ("pixels", info.frame_shape) if info.pixels else ("state", (5,))
    if len(rows) < info.rows or key not in rows.keys() or tuple(rows[key].shape[1:]) != shape:
        found = tuple(rows[key].shape[1:]) if key in rows.keys() else "no"
        raise PlayDatasetError(
            f"{storage_path} holds {len(rows)} rows of {found} {key}, but {meta_path} "
            f"promises {info.rows} rows of {shape}: the dataset is damaged; {write_hint}"
        )
    return PlayDataset(path, info, rows[: info.rows])
