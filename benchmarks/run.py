"""Planner and update speed of torchrl_mbdpo. Prints one table (median and min over repeats after warm-up).

    python benchmarks/run.py                 # everything (about 10 minutes on 2 CPU cores)
    python benchmarks/run.py --quick         # fewer repeats, no 32-env planner row
    python benchmarks/run.py --only planner  # or: update
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from torchrl_mbdpo.modules import DiffusionActor, MBDPOWorldModel, PlannerConfig, WorldModelConfig
from torchrl_mbdpo.objectives import MBDPOLoss

OBS_DIM, ACTION_DIM = 17, 6  # cheetah-run


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def timed(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, min(times) * 1e3


# The CPU-scale reference settings of shared/anchors (official code: ~80 ms per action, one thread).
SMALL_PLANNER = dict(steps=5, num_samples=128, num_elites=16, num_pi_trajs=8)


def bench_planner(repeats: int, env_counts):
    rows = []
    settings = [
        ("MC score, default (20 steps, 512 samples), model 5", 5, {}),
        ("MC score, small (5 steps, 128 samples), model 1", 1, SMALL_PLANNER),
        ("score network only, model 5", 5, {"score_source": "network"}),
    ]
    for label, size, planner in settings:
        wm = MBDPOWorldModel(WorldModelConfig.from_size(size, OBS_DIM, ACTION_DIM)).eval()
        actor = DiffusionActor(wm, PlannerConfig(**planner))
        for n in env_counts:
            obs, plan = torch.randn(n, OBS_DIM), torch.zeros(n, 3, ACTION_DIM)
            init = torch.zeros(n, dtype=torch.bool)
            slow = size == 5 and not planner and n >= 32
            med, best = timed(lambda: actor.plan(obs, plan, init), max(1, repeats // 2) if slow else repeats)
            rows.append((f"plan, {label}, {n} env(s)", med, best, med / n))
    return rows


def bench_update(repeats: int, model_sizes, batch_size=256, horizon=3):
    from torchrl.objectives import SoftUpdate

    from torchrl_mbdpo.objectives.mbdpo import make_optimizers, update

    rows = []
    for size in model_sizes:
        wm = MBDPOWorldModel(WorldModelConfig.from_size(size, OBS_DIM, ACTION_DIM))
        loss = MBDPOLoss(wm)
        model_optim, pi_optim = make_optimizers(loss)
        updater = SoftUpdate(loss, tau=0.01)
        from tensordict import TensorDict

        B, H = batch_size, horizon
        batch = TensorDict(
            {
                "observation": torch.randn(B, H, OBS_DIM),
                "action": torch.rand(B, H, ACTION_DIM) * 2 - 1,
                ("next", "observation"): torch.randn(B, H, OBS_DIM),
                ("next", "reward"): torch.rand(B, H, 1),
                ("next", "terminated"): torch.zeros(B, H, 1, dtype=torch.bool),
            },
            batch_size=[B, H],
        )
        med, best = timed(lambda: update(loss, batch, model_optim, pi_optim, updater), repeats, warmup=2)
        rows.append((f"update, batch {B}, horizon {H}, model {size}", med, best, None))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["planner", "update"])
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    torch.manual_seed(0)
    rows = []
    if args.only in (None, "planner"):
        rows += bench_planner(repeats, (1, 8) if args.quick else (1, 8, 32))
    if args.only in (None, "update"):
        rows += bench_update(repeats, (5, 1))
    print(f"\nmachine: {cpu_name()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}; fp32; "
          f"median/min over {repeats} repeats after warm-up\n")
    print(f"| {'setting':<62} | median ms | min ms | ms per env |")
    print(f"|{'-' * 64}|----------:|-------:|-----------:|")
    for name, med, best, per_env in rows:
        per = f"{per_env:10.1f}" if per_env is not None else " " * 10
        print(f"| {name:<62} | {med:9.1f} | {best:6.1f} | {per} |")


if __name__ == "__main__":
    main()
