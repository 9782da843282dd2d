"""Evaluation episodes and the learning-curve files (``eval.csv``, ``eval.png``)."""
from __future__ import annotations

import csv
import math
from pathlib import Path

import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

__all__ = ["evaluate", "episode_success", "EvalLog", "plot_eval_curve"]


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
    """Append-only ``eval.csv`` (``step`` in agent steps); rewritten PNG learning curve."""

    FIELDS = ["step", "episode_reward", "episode_reward_std", "prior_episode_reward", "episode_success", "td_error_replay", "td_error_planner",
              "action_drift_l2", "action_drift_logratio", "env_steps", "wall_time_s"]

    def __init__(self, work_dir: str | Path, title: str = ""):
        self.csv_path = Path(work_dir) / "eval.csv"
        self.png_path = Path(work_dir) / "eval.png"
        self.title = title

    def append(self, row: dict) -> None:
        new = not self.csv_path.exists()
        self.csv_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.csv_path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.FIELDS, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)
            f.flush()
        plot_eval_curve(self.csv_path, self.png_path, self.title)

    def rows(self) -> list[dict]:
        if not self.csv_path.exists():
            return []
        with open(self.csv_path) as f:
            return list(csv.DictReader(f))


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
    run leaves no duplicated or missing rows: ``eval.csv`` (with header) and TorchRL's CSV scalars
    (``logs/**/scalars/*.csv``, lines ``step,value``). ``keep_last=False`` also drops the evaluation at
    ``step`` itself (the checkpoint was taken before it, so the resumed run makes it again)."""
    work_dir = Path(work_dir)
    eval_csv = work_dir / "eval.csv"
    if eval_csv.exists():
        lines = eval_csv.read_text().splitlines(keepends=True)
        kept = lines[:1] + [line for line in lines[1:] if (int(float(line.split(",", 1)[0])) <= step if keep_last
                                                           else int(float(line.split(",", 1)[0])) < step)]
        eval_csv.write_text("".join(kept))
    for scalars in (work_dir / "logs").glob("**/scalars/*.csv"):
        lines = scalars.read_text().splitlines(keepends=True)
        scalars.write_text("".join(line for line in lines if line.strip() and (int(float(line.split(",", 1)[0])) <= step if keep_last
                                                                              else int(float(line.split(",", 1)[0])) < step)))
