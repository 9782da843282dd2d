"""One command for the comparison of DMO's pixel experiments (``mbdpo-dmo compare``): DMO, its "No Diffusion"
ablation and PPO, all trained inside the same learned world model and evaluated on the real Push-T env, over seeds.

Runs live in ``<root>/<algo>/seed<seed>`` (``dmo``: ``mbdpo-dmo policy``; ``no_diffusion``: the same with
``forward=local``; ``ppo``: ``mbdpo-dmo ppo``); a finished run is read, an unfinished one resumed, a missing one
trained (``run=false``: only read). ``dmo.*`` overrides apply to both DMO runs, ``ppo.*`` to PPO. Written to
``out_dir`` (default ``root``):

- ``comparison.csv``: every evaluation row of every run (algo, seed, iteration, world-model samples, model steps,
  seconds, success rate, mean return);
- ``summary.csv``: per algo, the final success rate, return and final coverage (mean and std over seeds), the
  trajectory quality (straightness, curvature, steps to success: means), samples and seconds;
- ``comparison.png``: real-env success rate and final coverage against the world-model samples and against the wall
  time, mean over seeds (thin lines: each seed). The x axis "samples" counts imagined transitions: diffusion
  samples for DMO and PPO, local-model steps for No Diffusion (which draws no diffusion sample).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from .config import COMPARED, PixelCompareConfig

__all__ = ["ALGOS", "PixelCompareConfig", "compare_pixel_algos", "write_comparison"]

ALGOS = COMPARED
QUALITY = ("success_rate", "mean_return", "final_coverage", "straightness", "curvature", "steps_to_success")
LABELS = {
    "dmo": "DMO (diffusion forward, local gradients)",
    "no_diffusion": "No Diffusion (local forward and backward)",
    "ppo": "PPO (ClipPPOLoss + GAE, in the world model)",
}


def _finished(run_cfg, work_dir: Path) -> bool:
    eval_csv = work_dir / "eval.csv"
    if not eval_csv.exists():
        return False
    with open(eval_csv) as f:
        rows = list(csv.DictReader(f))
    return bool(rows) and int(rows[-1]["iteration"]) >= run_cfg.iterations


def compare_pixel_algos(cfg: PixelCompareConfig) -> dict:
    """Train (or resume, or read) every run, then :func:`write_comparison`; returns its summary rows."""
    from ..trainers.run_control import RunStopped
    from .policy_training import PixelDMOTrainer
    from .ppo import PPOTrainer

    cfg.validate()
    root = Path(cfg.root)
    runs = {}
    for algo in cfg.algos:
        for seed in cfg.seeds:
            work_dir = root / algo / f"seed{seed}"
            if cfg.run:
                run_cfg = cfg.run_config(algo, seed, work_dir)
                if not _finished(run_cfg, work_dir):
                    run_cfg.resume = (work_dir / "checkpoints" / "latest.pt").exists()
                    trainer = (PPOTrainer if algo == "ppo" else PixelDMOTrainer)(run_cfg)
                    trainer.train()
                    if trainer.control.exit_code:
                        raise RunStopped(trainer.control.exit_code)
            runs[(algo, seed)] = work_dir / "eval.csv"
    return write_comparison(runs, Path(cfg.out_dir or root))


def _read(path: Path) -> list[dict]:
    if not path.exists():
        raise ValueError(f"No evaluation file at {path}: train the run first (run=true).")
    with open(path) as f:
        return list(csv.DictReader(f))


def _value(row: dict, name: str) -> float:
    """A number of an ``eval.csv`` row; NaN where it is empty or absent (e.g. no success, so no steps to success)."""
    value = row.get(name)
    return float(value) if value not in (None, "") else math.nan


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    m = sum(values) / len(values)
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / len(values))


def write_comparison(runs: dict, out_dir: Path) -> list[dict]:
    """``runs``: ``{(algo, seed): eval.csv path}`` -> ``comparison.csv``, ``summary.csv``, ``comparison.png`` in ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for (algo, seed), path in runs.items():
        for r in _read(path):
            rows.append({"algo": algo, "seed": seed, **r})
    fields = ["algo", "seed", "iteration", "world_model_samples", "model_steps", "seconds", *QUALITY]
    with open(out_dir / "comparison.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    algos = list(dict.fromkeys(algo for algo, _ in runs))
    summary = []
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.5))
    for algo in algos:
        seeds = [s for a, s in runs if a == algo]
        per_seed = {s: [r for r in rows if r["algo"] == algo and r["seed"] == s] for s in seeds}
        finals = [per_seed[s][-1] for s in seeds if per_seed[s]]
        if not finals:
            continue
        success, success_std = _mean_std([_value(r, "success_rate") for r in finals])
        ret, ret_std = _mean_std([_value(r, "mean_return") for r in finals])
        coverage, coverage_std = _mean_std([_value(r, "final_coverage") for r in finals])
        quality = {name: _mean_std([_value(r, name) for r in finals]) for name in QUALITY[3:]}
        summary.append(
            {
                "algo": algo,
                "seeds": len(finals),
                "final_success_rate": f"{success:.3f}",
                "success_std": f"{success_std:.3f}",
                "final_return": f"{ret:.2f}",
                "return_std": f"{ret_std:.2f}",
                "final_coverage": f"{coverage:.3f}",
                "coverage_std": f"{coverage_std:.3f}",
                **{name: "-" if math.isnan(m) else f"{m:.4g}" for name, (m, _) in quality.items()},
                "samples": int(sum(float(r["model_steps"]) for r in finals) / len(finals)),
                "world_model_samples": int(sum(float(r["world_model_samples"]) for r in finals) / len(finals)),
                "seconds": f"{sum(float(r['seconds']) for r in finals) / len(finals):.0f}",
            }
        )
        color = {"dmo": "C0", "no_diffusion": "C1", "ppo": "C2"}.get(algo)
        for row_i, metric in enumerate(("success_rate", "final_coverage")):
            for col_i, x_key in enumerate(("model_steps", "seconds")):
                ax = axes[row_i, col_i]
                for s in seeds:
                    pts = per_seed[s]
                    ax.plot([float(r[x_key]) for r in pts], [_value(r, metric) for r in pts], color=color, alpha=0.3, linewidth=0.8)
                n = min(len(per_seed[s]) for s in seeds)
                if n:
                    xs = [sum(float(per_seed[s][i][x_key]) for s in seeds) / len(seeds) for i in range(n)]
                    ys = [sum(_value(per_seed[s][i], metric) for s in seeds) / len(seeds) for i in range(n)]
                    ax.plot(xs, ys, color=color, marker=".", label=LABELS.get(algo, algo) if row_i == col_i == 0 else None)
                ax.set_xlabel("imagined transitions (world-model samples)" if x_key == "model_steps" else "wall time (s)")
                ax.set_ylabel("real Push-T success rate" if metric == "success_rate" else "real Push-T final coverage")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Push-T, trained inside a learned world model, evaluated on the real env ({len(runs)} runs)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out_dir / "comparison.png", dpi=100)
    plt.close(fig)
    with open(out_dir / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]) if summary else ["algo"])
        writer.writeheader()
        writer.writerows(summary)
    return summary
