"""Planner and update speed of torchrl_mbdpo. Prints one table (median and min over repeats after warm-up).

python benchmarks/run.py                 # everything (about 20 minutes on 2 CPU cores)
python benchmarks/run.py --quick         # fewer repeats, no 32-env planner row
python benchmarks/run.py --only planner  # or: update
python benchmarks/run.py --compile       # plus eager vs torch.compile rows (Inductor: minutes of compilation on CPU)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from torchrl_mbdpo.modules import DiffusionActor, MBDPOWorldModel, PlannerConfig, WorldModelConfig
from torchrl_mbdpo.modules.layers import reference_kernels
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


def timed_with_reference(fn, repeats: int, warmup: int = 1, reference: bool = True):
    """``(median, min, reference median)``: the fast path, then the same call under ``reference_kernels()``."""
    med, best = timed(fn, repeats, warmup)
    if not reference:
        return med, best, None
    with reference_kernels():
        ref_med, _ = timed(fn, repeats, warmup)
    return med, best, ref_med


# The CPU-scale reference settings of shared/anchors (official code: ~80 ms per action, one thread).
SMALL_PLANNER = dict(steps=5, num_samples=128, num_elites=16, num_pi_trajs=8)


def bench_planner(repeats: int, env_counts, precisions, reference: bool):
    rows = []
    settings = [
        ("MC score, default (20 steps, 512 samples), model 5", 5, {}),
        ("MC score, small (5 steps, 128 samples), model 1", 1, SMALL_PLANNER),
        ("score network only, model 5", 5, {"score_source": "network"}),
    ]
    for label, size, planner in settings:
        wm = MBDPOWorldModel(WorldModelConfig.from_size(size, OBS_DIM, ACTION_DIM)).eval()
        for precision in precisions:
            actor = DiffusionActor(wm, PlannerConfig(**planner), precision=precision)
            for n in env_counts:
                obs, plan = torch.randn(n, OBS_DIM), torch.zeros(n, 3, ACTION_DIM)
                init = torch.zeros(n, dtype=torch.bool)
                slow = size == 5 and not planner and n >= 32
                reps = max(1, repeats // 2) if slow else repeats
                # The reference is timed for the fp32 rows only, and not for the slow 32-env row.
                ref = reference and precision == "fp32" and not slow
                med, best, ref_med = timed_with_reference(lambda: actor.plan(obs, plan, init), reps, reference=ref)
                rows.append((f"plan, {label}, {n} env(s), {precision}", med, best, med / n, ref_med))
    return rows


def bench_update(repeats: int, model_sizes, precisions, reference: bool, batch_size=256, horizon=3):
    from tensordict import TensorDict
    from torchrl.objectives import SoftUpdate

    from torchrl_mbdpo.trainers.optimization import make_optimizers, update

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
    rows = []
    for size in model_sizes:
        wm = MBDPOWorldModel(WorldModelConfig.from_size(size, OBS_DIM, ACTION_DIM))
        loss = MBDPOLoss(wm)
        model_optim, pi_optim = make_optimizers(loss)
        updater = SoftUpdate(loss, tau=0.01)
        for precision in precisions:
            med, best, ref_med = timed_with_reference(
                lambda: update(loss, batch, model_optim, pi_optim, updater, precision=precision),
                repeats,
                warmup=2,
                reference=reference and precision == "fp32",
            )
            rows.append((f"update, batch {B}, horizon {H}, model {size}, {precision}", med, best, None, ref_med))
    return rows


def bench_compiled(repeats: int, backend: str, mode: str | None, only: str | None):
    """Eager vs ``torch.compile`` (``actor.compile_planner``, ``CompiledUpdate``) in the same run, fp32: the CPU-scale
    planner at 1 env, the score-network planner, the update at model sizes 1 and 5."""
    from tensordict import TensorDict
    from torchrl.objectives import SoftUpdate

    from torchrl_mbdpo.modules.compile import CompileOptions
    from torchrl_mbdpo.trainers.optimization import CompiledUpdate, make_optimizers, update

    options = CompileOptions(mode=mode, backend=backend)
    rows = []

    def first_call(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    if only in (None, "planner"):
        for label, size, planner in (
            ("plan, MC score, small (5 steps, 128 samples), model 1, 1 env", 1, SMALL_PLANNER),
            ("plan, score network only, model 5, 1 env", 5, {"score_source": "network"}),
        ):
            wm = MBDPOWorldModel(WorldModelConfig.from_size(size, OBS_DIM, ACTION_DIM)).eval()
            actor = DiffusionActor(wm, PlannerConfig(**planner))
            obs, plan, init = torch.randn(1, OBS_DIM), torch.zeros(1, 3, ACTION_DIM), torch.zeros(1, dtype=torch.bool)
            call = lambda: actor.plan(obs, plan, init)  # noqa: E731
            eager, _ = timed(call, repeats)
            actor.compile_planner(options=options)
            seconds = first_call(call)
            compiled, _ = timed(call, repeats)
            rows.append((label, eager, compiled, seconds))
    if only in (None, "update"):
        B, H = 256, 3
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
        for size in (1, 5):
            steps = {}
            for kind in ("eager", "compiled"):
                loss = MBDPOLoss(MBDPOWorldModel(WorldModelConfig.from_size(size, OBS_DIM, ACTION_DIM)))
                model_optim, pi_optim = make_optimizers(loss)
                updater = SoftUpdate(loss, tau=0.01)
                steps[kind] = (
                    CompiledUpdate(loss, model_optim, pi_optim, updater, options=options)
                    if kind == "compiled"
                    else (lambda b, loss=loss, o=(model_optim, pi_optim), u=updater: update(loss, b, *o, u))
                )
            seconds = first_call(lambda: steps["compiled"](batch))
            eager, _ = timed(lambda: steps["eager"](batch), repeats, warmup=2)
            compiled, _ = timed(lambda: steps["compiled"](batch), repeats, warmup=1)
            rows.append((f"update, batch {B}, horizon {H}, model {size}", eager, compiled, seconds))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=["planner", "update"])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--no-reference", action="store_true", help="skip timing the reference formulations")
    parser.add_argument("--no-bf16", action="store_true", help="skip the precision=bf16 rows")
    parser.add_argument("--compile", action="store_true", help="add eager vs torch.compile rows (fp32)")
    parser.add_argument("--compile-only", action="store_true", help="only the eager vs torch.compile rows")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-mode", default=None)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    precisions = ("fp32",) if args.no_bf16 else ("fp32", "bf16")
    torch.manual_seed(0)
    rows = []
    if args.only in (None, "planner") and not args.compile_only:
        rows += bench_planner(repeats, (1, 8) if args.quick else (1, 8, 32), precisions, not args.no_reference)
    if args.only in (None, "update") and not args.compile_only:
        rows += bench_update(repeats, (5, 1), precisions, not args.no_reference)
    compiled_rows = bench_compiled(repeats, args.compile_backend, args.compile_mode, args.only) if args.compile or args.compile_only else []
    print(
        f"\nmachine: {cpu_name()}, {torch.get_num_threads()} torch threads; torch {torch.__version__}; "
        f"median/min over {repeats} repeats after warm-up; reference = the same call under reference_kernels()\n"
    )
    print(f"| {'setting':<68} | median ms | min ms | ms per env | reference ms | speed-up |")
    print(f"|{'-' * 70}|----------:|-------:|-----------:|-------------:|---------:|")
    for name, med, best, per_env, ref_med in rows:
        per = f"{per_env:10.1f}" if per_env is not None else " " * 10
        ref = f"{ref_med:12.1f} | {ref_med / med:7.2f}x" if ref_med is not None else f"{'':12} | {'':8}"
        print(f"| {name:<68} | {med:9.1f} | {best:6.1f} | {per} | {ref} |")
    if compiled_rows:
        print(
            f"\neager vs torch.compile (backend {args.compile_backend}, mode {args.compile_mode}), fp32, median ms; "
            "compile s = the first compiled call\n"
        )
        print(f"| {'setting':<68} | eager ms | compiled ms | speed-up | compile s |")
        print(f"|{'-' * 70}|---------:|------------:|---------:|----------:|")
        for name, eager, compiled, seconds in compiled_rows:
            print(f"| {name:<68} | {eager:8.1f} | {compiled:11.1f} | {eager / compiled:7.2f}x | {seconds:9.0f} |")


if __name__ == "__main__":
    main()
