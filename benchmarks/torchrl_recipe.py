"""TorchRL's TD-MPC2 vs MBDPO through the same TorchRL recipe (sota-implementations/mbdpo_trainer), at the
same small settings: the return at the last step (the final planner, deterministic, on fresh episodes),
milliseconds per update and per planned action. Needs the torchrl-next environment:

    .venv-next/bin/python benchmarks/torchrl_recipe.py [--frames 3000] [--threads 1]

Prints a Markdown table (the README keeps the latest).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torchrl.trainers.algorithms.configs import instantiate_trainer

import torchrl_mbdpo.trainers.torchrl_configs  # noqa: F401  (registers trainer=mbdpo)
from torchrl_mbdpo.trainers.evaluation import evaluate

RECIPE = Path(__file__).resolve().parents[1] / "sota-implementations" / "mbdpo_trainer" / "config"


def overrides(frames: int) -> list[str]:
    random_frames = frames // 3
    return [
        f"collector.total_frames={frames}",
        "collector.frames_per_batch=50",
        f"collector.init_random_frames={random_frames}",
        f"trainer.seed_pretrain_steps={random_frames}",
        "trainer.optim_steps_per_batch=50",
        "trainer.batch_size=128",
        "trainer.progress_bar=false",
        "trainer.log_interval=1000000",
        "models.planner.num_samples=128",
        "models.planner.num_elites=16",
        "models.planner.num_pi_trajs=8",
    ]


def timed(obj, name: str, times: list) -> None:
    """Record the duration of every call of ``obj.<name>``."""
    fn = getattr(obj, name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
        return out

    setattr(obj, name, wrapper)


def run(trainer_name: str, frames: int, seed: int) -> dict:
    with initialize_config_dir(str(RECIPE), version_base="1.3"), tempfile.TemporaryDirectory() as tmp:
        extra = ["trainer.diffusion_steps=5"] if trainer_name == "mbdpo" else ["models.planner.iterations=6"]
        cfg = compose(
            "config", overrides=[f"trainer={trainer_name}", f"trainer.seed={seed}", f"logger.log_dir={tmp}", *overrides(frames), *extra]
        )
        torch.manual_seed(seed)
        trainer = instantiate_trainer(cfg)
        updates, plans = [], []
        timed(trainer.optimization_stepper, "step", updates)
        timed(trainer.planner, "forward", plans)
        start = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - start
        env = instantiate(cfg.training_env)()  # a fresh env of the recipe's (the collector's is closed)
        env.append_transform(trainer.planner.make_tensordict_primer())
        env.set_seed(10_000 + seed)
        plan_times = len(plans)  # the evaluation below plans too: not timed
        returns = evaluate(env, trainer.planner, 3, 500)
        return {
            "return": statistics.mean(returns),
            "ms_update": 1000 * statistics.median(updates),
            "ms_plan": 1000 * statistics.median(plans[:plan_times]),
            "updates": len(updates),
            "wall_s": wall,
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {name: [run(name, args.frames, s) for s in args.seeds] for name in ("tdmpc2", "mbdpo")}
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.machine())
    print(
        f"machine: {cpu}, {args.threads} torch thread(s); torch {torch.__version__}; cartpole-balance, {args.frames} agent steps, "
        f"seeds {args.seeds}\n"
    )
    print("| trainer= | return at the last step | ms per update | ms per planned action | updates | wall time (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        ret = [r["return"] for r in rows]
        spread = f" ± {statistics.pstdev(ret):.1f}" if len(ret) > 1 else ""
        print(
            f"| {name} | {statistics.mean(ret):.1f}{spread} | {statistics.mean(r['ms_update'] for r in rows):.1f} | "
            f"{statistics.mean(r['ms_plan'] for r in rows):.1f} | {rows[0]['updates']} | {statistics.mean(r['wall_s'] for r in rows):.0f} |"
        )


if __name__ == "__main__":
    main()
