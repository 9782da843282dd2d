"""Evaluation episodes, their seeds, their videos (``videos/*.mp4``) and the learning-curve files (``eval.csv``, ``eval.png``)."""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torchrl.data import Unbounded
from torchrl.envs.transforms import Compose, Transform, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.record import VideoRecorder
from torchrl.record.loggers import Logger

from .run_control import named_seed

__all__ = [
    "evaluate",
    "episode_success",
    "EvalSeeds",
    "evaluation_seeds",
    "CsvLog",
    "EvalLog",
    "plot_eval_curve",
    "truncate_csv_logs",
    "video_enabled",
    "find_renderer",
    "RenderedPixels",
    "MP4FileLogger",
    "video_recording",
    "record_video",
]


class EvalSeeds(NamedTuple):
    torch: int  # torch's global RNG, inside ``torch.random.fork_rng`` (planner noise)
    env: int  # ``eval_env.set_seed(...)`` (initial states)


def evaluation_seeds(seed: int, step: int) -> EvalSeeds:
    """The seeds of the evaluation at ``step`` of a run seeded ``seed``: ``torch = seed * 1_000_003 + step``,
    ``env = seed + 10_000 + step``. They depend on nothing else, so an evaluation gives the same numbers
    whether the run was resumed or not; build the eval env with ``evaluation_seeds(seed, 0).env``. Every
    trainer uses this one function::

        seeds = evaluation_seeds(cfg.seed, step)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds.torch)
            eval_env.set_seed(seeds.env)
            returns = evaluate(eval_env, policy, ...)
    """
    return EvalSeeds(torch=named_seed("eval_torch", int(seed), int(step)), env=named_seed("eval_envs", int(seed), int(step)))


class CsvLog:
    """An append-only CSV file of rows keyed by a step column, which a resumed run cuts back to its
    checkpoint. The one implementation of the logs' append/truncate::

        log = CsvLog(work_dir / "eval.csv", ["step", "episode_reward"])
        log.append({"step": 0, "episode_reward": -3.0})   # a dict or an iterable of dicts
        log.truncate(step)                                # drop the rows written after ``step``
        log.rows()                                        # list of dicts (strings)

    Args:
        path: the file; its folder is created on the first append.
        fields: the columns, in order; extra keys of a row are ignored, missing ones left empty.
        header: ``False`` for header-less files (TorchRL's CSV logger writes ``step,value`` lines).
        step_field: the column :meth:`truncate` compares with (default: the first).
    """

    def __init__(self, path: str | Path, fields: list[str], *, header: bool = True, step_field: str | None = None):
        self.path = Path(path)
        self.fields = list(fields)
        self.header = header
        self.step_field = step_field or self.fields[0]
        if self.step_field not in self.fields:
            raise ValueError(f"step_field {self.step_field!r} is not one of the fields {self.fields}")

    def append(self, rows: Mapping | Iterable[Mapping]) -> None:
        rows = [rows] if isinstance(rows, Mapping) else list(rows)
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            if new and self.header:
                writer.writeheader()
            writer.writerows(rows)
            f.flush()

    def rows(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, newline="") as f:
            if self.header:
                return list(csv.DictReader(f))
            return list(csv.DictReader(f, fieldnames=self.fields))

    def truncate(self, step: int) -> None:
        """Drop the rows whose step is after ``step`` (written by a run killed after its last checkpoint), so
        a resumed run leaves no duplicated or missing rows. Kept rows are left byte for byte; blank lines go."""
        if not self.path.exists():
            return
        lines = self.path.read_text().splitlines(keepends=True)
        head, body = (lines[:1], lines[1:]) if self.header else ([], lines)
        column = self.fields.index(self.step_field)
        if self.header and head:
            names = next(csv.reader(io.StringIO(head[0])))
            column = names.index(self.step_field) if self.step_field in names else column
        kept = [line for line in body if line.strip() and int(float(next(csv.reader(io.StringIO(line)))[column])) <= step]
        self.path.write_text("".join(head + kept))


class _Checked:
    """A policy that calls ``check()`` before every step (which may raise to abandon the rollout)."""

    def __init__(self, policy, check):
        self.policy, self.check = policy, check

    def __call__(self, td):
        self.check()
        return self.policy(td)


@torch.no_grad()
def evaluate(env, policy, episodes: int, max_steps: int, transitions: list | None = None, check=None) -> list[float]:
    """Deterministic returns of ``episodes`` episodes (one per sub-env per rollout; a return counts the
    rewards up to and including the first ``done`` of each sub-env). With a ``transitions`` list, the
    played steps (flat TensorDicts) are appended to it. ``check()``, if given, runs before every step: it
    may raise to abandon the evaluation (a stop request)."""
    returns: list[float] = []
    if check is not None:
        policy = _Checked(policy, check)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        while len(returns) < episodes:
            td = env.rollout(max_steps, policy, break_when_any_done=False)
            if td.ndim == 1:
                td = td.unsqueeze(0)
            done = td["next", "done"].squeeze(-1)
            before_first_done = (done.long().cumsum(-1) - done.long()) == 0
            ret = (td["next", "reward"].squeeze(-1) * before_first_done).sum(-1)
            returns.extend(ret.tolist())
            if transitions is not None:
                transitions.append(td[before_first_done])
    return returns[:episodes]


def episode_success(played) -> float:
    """Success rate of the episodes in ``played`` (flat steps from :func:`evaluate`): the ``success`` flag
    at each episode's last step, as TD-MPC2 reports it; NaN for tasks without a success flag."""
    if ("next", "success") not in played.keys(True):
        return math.nan
    last = played["next", "done"].reshape(-1)
    return played["next", "success"].reshape(-1)[last].float().mean().item()


class EvalLog:
    """``eval.csv`` (``step`` in agent steps; a :class:`CsvLog` of :attr:`FIELDS`) and its PNG learning
    curve, redrawn after each row."""

    FIELDS = [
        "step",
        "episode_reward",
        "episode_reward_std",
        "prior_episode_reward",
        "episode_success",
        "td_error_replay",
        "td_error_planner",
        "action_drift_l2",
        "action_drift_logratio",
        "env_steps",
        "wall_time_s",
    ]

    def __init__(self, work_dir: str | Path, title: str = ""):
        self.csv_path = Path(work_dir) / "eval.csv"
        self.png_path = Path(work_dir) / "eval.png"
        self.title = title
        self.log = CsvLog(self.csv_path, self.FIELDS)

    def append(self, row: dict) -> None:
        self.log.append(row)
        plot_eval_curve(self.csv_path, self.png_path, self.title)

    def rows(self) -> list[dict]:
        return self.log.rows()

    def truncate(self, step: int) -> None:
        self.log.truncate(step)


def plot_eval_curve(csv_path, png_path, title: str = "") -> None:
    """Planner and policy-prior returns against agent steps (+-1 sd band for the planner) and, when
    logged, the diagnostics: TD error on replay vs on the planner's transitions, and action drift."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return

    def column(name):
        values = [r.get(name) for r in rows]
        return None if any(v in (None, "") for v in values) else [float(v) for v in values]

    step = [int(float(r["step"])) for r in rows]
    ret, sd = column("episode_reward"), column("episode_reward_std") or [0.0] * len(rows)
    diagnostics = column("td_error_replay") is not None
    fig, axes = plt.subplots(1, 3 if diagnostics else 1, figsize=(15 if diagnostics else 6, 4), dpi=100, squeeze=False)
    ax = axes[0, 0]
    ax.plot(step, ret, "o-", label="planner")
    ax.fill_between(step, [m - s for m, s in zip(ret, sd)], [m + s for m, s in zip(ret, sd)], alpha=0.2)
    if column("prior_episode_reward") is not None:
        ax.plot(step, column("prior_episode_reward"), "s--", label="policy prior alone")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    if diagnostics:
        axes[0, 1].plot(step, column("td_error_replay"), "o-", label="replay transitions")
        axes[0, 1].plot(step, column("td_error_planner"), "s-", label="planner's transitions (cross)")
        axes[0, 1].set_ylabel("mean |TD error|")
        axes[0, 2].plot(step, column("action_drift_logratio"), "o-", color="C3")
        axes[0, 2].set_ylabel("action drift: log-ratio per dim")
        axes[0, 2].set_title("planner vs policy prior")
    for ax in axes[0]:
        ax.set_xlabel("agent steps")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def truncate_csv_logs(work_dir, step: int, keep_last: bool = True) -> None:
    """Drop the log rows written after ``step`` (by a run killed after its last checkpoint), so a resumed
    run leaves no duplicated or missing rows: ``eval.csv`` and TorchRL's CSV scalars
    (``logs/**/scalars/*.csv``, header-less ``step,value`` lines), each with :meth:`CsvLog.truncate`.
    ``keep_last=False`` also drops the rows at ``step`` itself (the checkpoint was taken before that step's
    evaluation and logging, so the resumed run makes them again)."""
    work_dir = Path(work_dir)
    last = step if keep_last else step - 1
    CsvLog(work_dir / "eval.csv", EvalLog.FIELDS).truncate(last)
    for scalars in (work_dir / "logs").glob("**/scalars/*.csv"):
        CsvLog(scalars, ["step", "value"], header=False).truncate(last)


def video_enabled(save_video: bool | None) -> bool:
    """The ``save_video`` option: ``True``/``False``, or ``None`` (auto): on where a CUDA GPU is present (MuJoCo
    renders there through EGL in a few ms per frame), off on CPU (software rendering, ~50 ms per 256x256 frame)."""
    return torch.cuda.is_available() if save_video is None else bool(save_video)


def find_renderer(env, size: int | tuple[int, int] = 256, camera: int | None = None):
    """A zero-argument function returning the current frame of ``env``'s simulator as a uint8 ``(H, W, 3)``
    array: the MuJoCo renderer of DMControl tasks (camera 0; 2 for quadruped, as TD-MPC2), or ``render()`` of a
    Gymnasium env made with ``render_mode="rgb_array"``. Raises ValueError for a batched env or one without a
    renderer."""
    if tuple(getattr(env, "batch_size", ())):
        raise ValueError(f"Videos record one env, got a batch of {tuple(env.batch_size)}: pass a single env (num_envs=1).")
    height, width = (size, size) if isinstance(size, int) else size
    base = env
    while hasattr(base, "base_env") and base.base_env is not base:
        base = base.base_env
    inner = getattr(base, "_env", None)
    physics = getattr(inner, "physics", None)
    if physics is not None:  # dm_control
        if camera is None:
            camera = 2 if "quadruped" in type(physics).__module__ else 0
        return lambda: physics.render(height=height, width=width, camera_id=camera)
    if inner is not None and getattr(inner, "render_mode", None) == "rgb_array":
        os.environ.setdefault("SDL_AUDIODRIVER", "dummy")  # pygame-drawn envs: no sound device to complain about
        return inner.render
    raise ValueError(
        f"save_video: {type(base).__name__} ({type(inner).__name__}) offers no renderer this library knows "
        "(DMControl tasks, or Gymnasium envs made with render_mode='rgb_array'); run with save_video=false."
    )


class RenderedPixels(Transform):
    """Writes the simulator's frame (``render()``, uint8 ``(H, W, 3)``) at ``"pixels"`` after every reset and
    step: pixels for :class:`~torchrl.record.VideoRecorder` from a state-observation task."""

    def __init__(self, render, out_key="pixels"):
        super().__init__(in_keys=[], out_keys=[out_key])
        self.render = render

    def _call(self, next_tensordict):
        return next_tensordict.set(self.out_keys[0], torch.as_tensor(self.render().copy()))

    def _reset(self, tensordict, tensordict_reset):
        return self._call(tensordict_reset)

    def transform_observation_spec(self, observation_spec):
        frame = self.render()
        observation_spec[self.out_keys[0]] = Unbounded(shape=frame.shape, dtype=torch.uint8, device=observation_spec.device)
        return observation_spec


class MP4FileLogger(Logger):
    """A TorchRL logger that only logs videos, each to one MP4 file (H.264 through imageio's bundled ffmpeg,
    written to a temporary file and renamed): ``path`` itself, or ``<path stem>_<step>.mp4`` if ``per_step``."""

    def __init__(self, path, per_step: bool = False):
        self.path, self.per_step, self.written = Path(path), per_step, []
        super().__init__(exp_name=self.path.stem, log_dir=str(self.path.parent))

    def _create_experiment(self):
        return None

    def log_video(self, name: str, video, step: int | None = None, **kwargs) -> None:
        import imageio.v2 as imageio

        frames = torch.as_tensor(video)
        frames = frames.reshape(-1, *frames.shape[-3:]) if frames.ndim > 4 else frames  # (T, C, H, W)
        if frames.shape[1] in (1, 3) and frames.shape[-1] not in (1, 3):
            frames = frames.permute(0, 2, 3, 1)
        path = self.path.with_name(f"{self.path.stem}_{step}{self.path.suffix}") if self.per_step and step is not None else self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
        try:
            imageio.mimwrite(
                tmp,
                frames.to(torch.uint8).cpu().numpy(),
                format="FFMPEG",
                fps=kwargs.get("fps", 30),
                codec="libx264",
                macro_block_size=1,
                ffmpeg_log_level="error",
            )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self.written.append(path)

    def log_scalar(self, name, value, step=None):
        pass

    def log_hparams(self, cfg):
        pass

    def log_histogram(self, name, data, **kwargs):
        pass

    def __repr__(self):
        return f"MP4FileLogger({self.path})"


@contextlib.contextmanager
def video_recording(
    env, path, *, fps: int = 30, size: int | tuple[int, int] = 256, camera: int | None = None, logger=None, tag: str | None = None
):
    """``env`` wrapped so that every frame of the episodes played in the block is recorded (TorchRL's
    ``VideoRecorder`` over :class:`RenderedPixels`) and written, when the block ends without error, as one MP4
    at ``path`` (or logged to a TorchRL ``logger`` under ``tag``, e.g. the run's wandb/tensorboard logger).
    ``env`` itself is not changed (the wrapper is a separate ``TransformedEnv``)."""
    renderer = find_renderer(env, size, camera)
    path = Path(path)
    logger = logger if logger is not None else MP4FileLogger(path)
    recorder = VideoRecorder(logger, tag=tag or path.stem, in_keys=["pixels"], skip=1, make_grid=False, fps=fps)
    wrapped = TransformedEnv(env, Compose(RenderedPixels(renderer), recorder), auto_unwrap=False)
    yield wrapped
    recorder.dump()


def record_video(
    env,
    policy,
    path,
    *,
    episodes: int = 1,
    max_steps: int | None = None,
    fps: int = 30,
    size: int | tuple[int, int] = 256,
    camera: int | None = None,
    seed: int | None = None,
    logger=None,
    check=None,
) -> Path:
    """Play ``episodes`` deterministic episodes of ``policy`` and write them as one MP4 at ``path``
    (``episodes * (max_steps + 1)`` frames: each episode's reset frame and one per step, fewer for episodes
    that end early).

    ``env``: a single (unbatched) env, or a zero-argument factory of one (then closed after). ``max_steps``:
    default the env's episode length (``env.task_spec``). ``seed`` seeds the policy's noise; the global RNG
    state is restored afterwards, so recording perturbs no training run. A planner's warm-start primer is
    added when the env lacks it. ``check``: as :func:`evaluate`'s."""
    own = not hasattr(env, "rollout") and callable(env)
    env = env() if own else env
    try:
        if max_steps is None:
            spec = getattr(env, "task_spec", None)
            max_steps = spec.episode_length if spec is not None else 1000
        primer_env = env
        if hasattr(policy, "make_tensordict_primer") and getattr(policy, "plan_key", None) not in env.observation_spec.keys(True, True):
            primer_env = TransformedEnv(env, policy.make_tensordict_primer(), auto_unwrap=False)
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            with video_recording(primer_env, path, fps=fps, size=size, camera=camera, logger=logger) as recording:
                evaluate(recording, policy, episodes, max_steps, check=check)
    finally:
        if own:
            env.close()
    return Path(path)
