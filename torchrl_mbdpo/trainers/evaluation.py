"""Evaluation episodes, their seeds, and the learning-curve files (``eval.csv``, ``eval.png``)."""
from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

from .run_control import named_seed

__all__ = ["evaluate", "episode_success", "EvalSeeds", "evaluation_seeds", "CsvLog", "EvalLog", "plot_eval_curve",
           "truncate_csv_logs"]

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

    FIELDS = ["step", "episode_reward", "episode_reward_std", "prior_episode_reward", "episode_success", "td_error_replay",
              "td_error_planner", "action_drift_l2", "action_drift_logratio", "env_steps", "wall_time_s"]

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
