"""Evaluation episodes and the learning-curve files (``eval.csv``, ``eval.png``)."""
from __future__ import annotations

import csv
from pathlib import Path

import torch
from torchrl.envs.utils import ExplorationType, set_exploration_type

__all__ = ["evaluate", "EvalLog", "plot_eval_curve"]


@torch.no_grad()
def evaluate(env, policy, episodes: int, max_steps: int) -> list[float]:
    """Deterministic returns of ``episodes`` episodes (one per sub-env per rollout; a return counts the
    rewards up to and including the first ``done`` of each sub-env)."""
    returns: list[float] = []
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        while len(returns) < episodes:
            td = env.rollout(max_steps, policy, break_when_any_done=False)
            if td.ndim == 1:
                td = td.unsqueeze(0)
            done = td["next", "done"].squeeze(-1)
            before_first_done = (done.long().cumsum(-1) - done.long()) == 0
            ret = (td["next", "reward"].squeeze(-1) * before_first_done).sum(-1)
            returns.extend(ret.tolist())
    return returns[:episodes]


class EvalLog:
    """Append-only ``eval.csv`` (``step`` in agent steps); rewritten PNG learning curve."""

    FIELDS = ["step", "episode_reward", "episode_reward_std", "prior_episode_reward", "env_steps", "wall_time_s"]

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
    """Planner and policy-prior returns against agent steps, with a +-1 sd band for the planner."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    step = [int(float(r["step"])) for r in rows]
    ret = [float(r["episode_reward"]) for r in rows]
    sd = [float(r.get("episode_reward_std") or 0.0) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot(step, ret, "o-", label="planner (MBDPO diffusion)")
    ax.fill_between(step, [m - s for m, s in zip(ret, sd)], [m + s for m, s in zip(ret, sd)], alpha=0.2)
    prior = [r.get("prior_episode_reward") for r in rows]
    if all(p not in (None, "") for p in prior):
        ax.plot(step, [float(p) for p in prior], "s--", label="policy prior alone")
    ax.set_xlabel("agent steps")
    ax.set_ylabel("episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def truncate_csv_logs(work_dir, step: int) -> None:
    """Drop the log rows written after ``step`` (by a run killed after its last checkpoint), so a resumed
    run leaves no duplicated or missing rows: ``eval.csv`` (with header) and TorchRL's CSV scalars
    (``logs/**/scalars/*.csv``, lines ``step,value``)."""
    work_dir = Path(work_dir)
    eval_csv = work_dir / "eval.csv"
    if eval_csv.exists():
        lines = eval_csv.read_text().splitlines(keepends=True)
        kept = lines[:1] + [line for line in lines[1:] if int(float(line.split(",", 1)[0])) <= step]
        eval_csv.write_text("".join(kept))
    for scalars in (work_dir / "logs").glob("**/scalars/*.csv"):
        lines = scalars.read_text().splitlines(keepends=True)
        scalars.write_text("".join(line for line in lines if line.strip() and int(float(line.split(",", 1)[0])) <= step))
