"""Side-by-side comparison of algorithms on tasks and seeds (``mbdpo-compare``).

Runs live in ``<root>/<algo>/<task>/seed<seed>`` (the trainer's default work dir). A finished run
(its ``eval.csv`` reaches ``steps``) is collected as it is, an interrupted one is resumed, a missing
one is trained (``algos``: mbdpo, tdmpc2; with ``run=false`` any folder name, e.g. ``sac`` for the runs of
``sota-implementations/sac/sac.py``). Outputs in ``out_dir``: ``<task>.png`` (mean +- sd over seeds per algorithm, the
published curves of the official release overlaid when the task is there), ``summary.csv`` (each
eval step) and ``final.csv`` (the last common step), and a Markdown table on stdout.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from pathlib import Path

from .config import default_work_dir, file_name_of
from .run_control import RunStopped

__all__ = ["run_dir", "ensure_run", "collect", "summarize", "plot_task", "load_published", "compare", "markdown_table"]

PUBLISHED_CURVES = Path(__file__).resolve().parent.parent / "data" / "official_curves.csv"
METRICS = (
    "episode_reward",
    "prior_episode_reward",
    "episode_success",
    "td_error_replay",
    "td_error_planner",
    "action_drift_logratio",
    "wall_time_s",
)


def run_dir(root, algo: str, task: str, seed: int) -> Path:
    return Path(default_work_dir(algo, task, seed, str(root)))


def _eval_rows(work_dir: Path) -> list[dict]:
    path = work_dir / "eval.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def ensure_run(train_cfg) -> None:
    """Train (or resume) the run of ``train_cfg`` unless its ``eval.csv`` already reaches ``steps``."""
    from .trainer import make_trainer

    work_dir = Path(train_cfg.work_dir)
    rows = _eval_rows(work_dir)
    if rows and int(float(rows[-1]["step"])) >= train_cfg.steps:
        print("   finished before: collected", flush=True)
        return
    train_cfg.resume = (work_dir / "checkpoints" / "latest.pt").exists()
    code = make_trainer(train_cfg).train()
    if code:
        raise RunStopped(code)


def collect(root, tasks, algos, seeds) -> dict:
    """``{(task, algo): {seed: rows}}`` from the eval.csv files that exist."""
    runs = defaultdict(dict)
    for task in tasks:
        for algo in algos:
            for seed in seeds:
                rows = _eval_rows(run_dir(root, algo, task, seed))
                if rows:
                    runs[task, algo][seed] = rows
    return runs


def summarize(runs_by_seed: dict) -> list[dict]:
    """Mean and sd over seeds at each eval step that every seed reached (population sd; 0 for one seed)."""
    per_seed = [{int(float(r["step"])): r for r in rows} for rows in runs_by_seed.values()]
    common = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
    out = []
    for step in common:
        row = {"step": step, "n_seeds": len(per_seed)}
        for metric in METRICS:
            values = [float(s[step][metric]) for s in per_seed if s[step].get(metric) not in (None, "")]
            values = [v for v in values if not math.isnan(v)]  # e.g. no replay data yet at step 0
            row[f"{metric}_mean"] = statistics.fmean(values) if values else float("nan")
            row[f"{metric}_sd"] = statistics.pstdev(values) if len(values) > 1 else 0.0
        out.append(row)
    return out


def load_published(path=PUBLISHED_CURVES) -> dict:
    """``{(algo, task): [(step, mean, sd), ...]}`` of the official release's curves."""
    curves = defaultdict(list)
    if Path(path).exists():
        with open(path) as f:
            for r in csv.DictReader(f):
                curves[r["algo"], r["task"]].append((int(float(r["step"])), float(r["mean"]), float(r["sd"] or 0)))
    return curves


def plot_task(task: str, summaries: dict, published: dict, png_path, max_step: int | None = None) -> None:
    """Mean +- sd return (success rate for suites that report success) of each algorithm against agent steps (left;
    the published curves dashed, up to ``max_step``) and against wall time (right; the seeds' mean wall time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Suites with a success flag are compared (and published) as success rates in percent.
    success = any(not math.isnan(r["episode_success_mean"]) for rows in summaries.values() for r in rows)
    metric, scale = ("episode_success", 100.0) if success else ("episode_reward", 1.0)
    fig, (ax, ax_wall) = plt.subplots(1, 2, figsize=(12, 4.5), dpi=100, sharey=True)
    for i, (algo, rows) in enumerate(summaries.items()):
        if not rows:
            continue
        mean = [scale * r[f"{metric}_mean"] for r in rows]
        sd = [scale * r[f"{metric}_sd"] for r in rows]
        low, high = [m - s for m, s in zip(mean, sd)], [m + s for m, s in zip(mean, sd)]
        label = f"{algo} (ours, {rows[0]['n_seeds']} seeds)"
        for axis, x in ((ax, [r["step"] for r in rows]), (ax_wall, [r["wall_time_s_mean"] / 60 for r in rows])):
            axis.plot(x, mean, "o-", color=f"C{i}", label=label)
            axis.fill_between(x, low, high, color=f"C{i}", alpha=0.2)
        curve = [p for p in published.get((algo, task), []) if max_step is None or p[0] <= max_step]
        if curve:
            ax.errorbar(
                [p[0] for p in curve],
                [p[1] for p in curve],
                yerr=[p[2] for p in curve],
                fmt="s--",
                color=f"C{i}",
                alpha=0.6,
                capsize=3,
                label=f"{algo} (published)",
            )
    ax.set_xlabel("agent steps")
    ax_wall.set_xlabel("wall time, minutes (mean over seeds)")
    ax.set_ylabel("success rate, % (evaluation policy)" if success else "episode return (evaluation policy)")
    for axis in (ax, ax_wall):
        axis.set_title(task)
        axis.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)


def compare(
    tasks, algos, seeds, steps: int, root="runs", out_dir="runs/compare", make_config=None, published_path=PUBLISHED_CURVES
) -> list[dict]:
    """Run (with ``make_config``) or only collect every (task, algo, seed), then write the PNGs and CSVs;
    returns the rows of ``final.csv``. ``make_config(task, algo, seed)`` builds each run's ``TrainConfig``
    (``steps`` and ``work_dir`` are set here)."""
    if make_config is not None:
        for task in tasks:
            for algo in algos:
                for seed in seeds:
                    cfg = make_config(task, algo, seed)
                    cfg.steps, cfg.work_dir = steps, str(run_dir(root, algo, task, seed))
                    print(f"== {algo} / {task} / seed {seed} ({cfg.work_dir})", flush=True)
                    ensure_run(cfg)
    runs = collect(root, tasks, algos, seeds)
    published = load_published(published_path)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary_rows, final_rows = [], []
    for task in tasks:
        summaries = {algo: summarize(runs.get((task, algo), {})) for algo in algos}
        plot_task(task, summaries, published, out_dir / f"{file_name_of(task)}.png", max_step=max(steps, 100_000))
        for algo, rows in summaries.items():
            summary_rows += [{"task": task, "algo": algo, **r} for r in rows]
            if rows:
                final_rows.append({"task": task, "algo": algo, **rows[-1]})
    _write_csv(out_dir / "summary.csv", summary_rows)
    _write_csv(out_dir / "final.csv", final_rows)
    return final_rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    fields = ["task", "algo", "step", "n_seeds"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "sd")]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def markdown_table(final_rows: list[dict]) -> str:
    lines = [
        "| task | algo | step | seeds | return (mean ± sd) | policy prior | TD err replay / planner | drift log-ratio | wall time (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in final_rows:
        lines.append(
            f"| {r['task']} | {r['algo']} | {r['step']} | {r['n_seeds']} | {r['episode_reward_mean']:.1f} ± "
            f"{r['episode_reward_sd']:.1f} | {r['prior_episode_reward_mean']:.1f} | {r['td_error_replay_mean']:.2f} / "
            f"{r['td_error_planner_mean']:.2f} | {r['action_drift_logratio_mean']:.2f} | {r['wall_time_s_mean']:.0f} |"
        )
    return "\n".join(lines)
