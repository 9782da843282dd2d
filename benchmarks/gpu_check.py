"""One-shot device check (issue 18), for a session that is lent a GPU: run it once, within 10 minutes.

    scripts/gpu_check.sh                        # on the GPU machine (installs carried wheels first, see the script)
    scripts/gpu_check.sh --device cpu --quick   # dry run of every code path on the CPU, in about a minute
    python benchmarks/gpu_check.py --help

Sections, each written to the markdown report as soon as it is done (a run cut short keeps what it had):

1. correctness: the same weights and the same random draws on the CPU and on the device (every draw made on the
   CPU generator, then moved; dropout 0, TF32 off): the MC, score-network and MPPI plans, one update (its metrics
   and the weights after it); then compiled against eager on the device (Inductor with ``fallback_random``);
2. speed: eager, eager captured in a CUDA graph, compiled, compiled and captured (``CudaGraphModule``), for
   plan (default planner, model 5, 1 and 32 envs) and update (batch 256, model sizes 1 and 5), fp32 and bf16,
   with the compile time of each compiled row and the peak GPU memory;
3. an online run: env steps per second of ``--online-steps`` steps of ``mbdpo-train`` (Pendulum, one env).

Rows are run by priority and skipped (marked) when the time budget (``--budget``) would not hold their
compilation. Targets on an H200: update <= 10 ms, default plan <= 5 ms per action at 1 env.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from torchrl_mbdpo.modules import DiffusionActor, MBDPOWorldModel, MPPIActor, PlannerConfig, WorldModelConfig  # noqa: E402
from torchrl_mbdpo.modules.compile import CompileOptions, compile_report  # noqa: E402
from torchrl_mbdpo.modules.mppi import MPPIConfig  # noqa: E402
from torchrl_mbdpo.objectives import MBDPOLoss  # noqa: E402
from torchrl_mbdpo.trainers.optimization import CompiledUpdate, make_optimizers, update  # noqa: E402

OBS_DIM, ACTION_DIM = 17, 6  # cheetah-run


# ------------------------------------------------------------------------------------------ report
class Report:
    def __init__(self, path: Path, header: list[str]):
        self.path, self.sections = path, [header]
        self.flush()

    def section(self, title: str, lines: list[str]):
        self.sections.append([f"\n## {title}\n", *lines])
        self.flush()

    def flush(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text("\n".join(line for section in self.sections for line in section) + "\n")


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device):
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device) -> str:
    return f"{torch.cuda.max_memory_allocated(device) / 2**20:.0f}" if device.type == "cuda" else "n/a"


def timed_ms(fn, device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


# ------------------------------------------------------------------------------------------ same draws on two devices
@contextlib.contextmanager
def cpu_draws(seed: int):
    """Every random draw of the planner and the loss made by the CPU generator (seeded), then moved to its device:
    the CPU and the GPU runs see the same numbers. Covers randn/rand/randint/randperm(_like) and exponential_ (the
    MPPI pick); dropout's draws are not covered (run with dropout 0)."""
    gen = torch.Generator().manual_seed(seed)
    originals = {name: getattr(torch, name) for name in ("randn", "rand", "randint", "randperm", "randn_like", "rand_like")}
    exponential = torch.Tensor.exponential_

    def factory(name):
        def draw(*args, device=None, dtype=None, generator=None, **kwargs):
            kwargs.pop("layout", None)
            out = originals[name](*args, dtype=dtype, generator=gen, **kwargs)
            return out.to(device) if device is not None else out

        return draw

    def like(name):
        base = "randn" if name == "randn_like" else "rand"

        def draw(x, *, dtype=None, device=None, **kwargs):
            out = originals[base](x.shape, dtype=dtype or x.dtype, generator=gen)
            return out.to(device or x.device)

        return draw

    def exponential_(self, lambd=1.0, *, generator=None):
        cpu = torch.empty(self.shape, dtype=self.dtype)
        exponential(cpu, lambd, generator=gen)
        return self.copy_(cpu)

    try:
        for name in ("randn", "rand", "randint", "randperm"):
            setattr(torch, name, factory(name))
        for name in ("randn_like", "rand_like"):
            setattr(torch, name, like(name))
        torch.Tensor.exponential_ = exponential_
        yield
    finally:
        for name, fn in originals.items():
            setattr(torch, name, fn)
        torch.Tensor.exponential_ = exponential


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float().cpu() - b.detach().float().cpu()).abs().max().item()


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    return ((a - b).abs() / (b.abs() + 1e-6)).max().item()


# ------------------------------------------------------------------------------------------ models
def world_model(size: int, quick: bool, seed: int = 0, **overrides) -> MBDPOWorldModel:
    torch.manual_seed(seed)
    arch = dict(latent_dim=32, mlp_dim=32, enc_dim=32) if quick else {}
    wm = MBDPOWorldModel(WorldModelConfig.from_size(size, OBS_DIM, ACTION_DIM, **{**arch, **overrides}))
    with torch.no_grad():  # heads not zero-initialised, so that candidates' returns differ
        for p in wm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return wm


def planner_config(quick: bool, **kw) -> PlannerConfig:
    return PlannerConfig(**({**dict(steps=3, num_samples=32, num_elites=8, num_pi_trajs=4), **kw} if quick else kw))


def mppi_config(quick: bool) -> MPPIConfig:
    return MPPIConfig(iterations=2, num_samples=32, num_elites=8, num_pi_trajs=4) if quick else MPPIConfig()


def plan_inputs(num_envs: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(num_envs, OBS_DIM, generator=g)
    prev = torch.rand(num_envs, 3, ACTION_DIM, generator=g) * 2 - 1
    init = torch.zeros(num_envs, dtype=torch.bool)
    return obs.to(device), prev.to(device), init.to(device)


def update_batch(batch_size: int, device, seed: int = 0):
    from tensordict import TensorDict

    g = torch.Generator().manual_seed(seed)
    B, H = batch_size, 3
    return TensorDict(
        {
            "observation": torch.randn(B, H, OBS_DIM, generator=g),
            "action": torch.rand(B, H, ACTION_DIM, generator=g) * 2 - 1,
            ("next", "observation"): torch.randn(B, H, OBS_DIM, generator=g),
            ("next", "reward"): torch.rand(B, H, 1, generator=g),
            ("next", "terminated"): torch.zeros(B, H, 1, dtype=torch.bool),
        },
        batch_size=[B, H],
    ).to(device)


def make_update(wm, device, precision: str, options: CompileOptions | None):
    from torchrl.objectives import SoftUpdate

    loss = MBDPOLoss(wm).to(device)
    updater = SoftUpdate(loss, tau=0.01)
    model_optim, pi_optim = make_optimizers(loss, capturable=device.type == "cuda")
    if options is None:
        return lambda batch: update(loss, batch, model_optim, pi_optim, updater, precision=precision), loss
    return CompiledUpdate(loss, model_optim, pi_optim, updater, precision=precision, options=options), loss


# ------------------------------------------------------------------------------------------ 1. correctness
def correctness(device, args) -> list[str]:
    lines = ["| check | max abs diff | max rel diff | verdict |", "|---|---:|---:|---|"]
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tol = 1e-3

    def row(name, a, b, tolerance=tol):
        abs_d, rel_d = max_diff(a, b), rel_diff(a, b)
        lines.append(f"| {name} | {abs_d:.2e} | {rel_d:.2e} | {'ok' if abs_d <= tolerance or rel_d <= tolerance else 'DIFFERS'} |")

    cpu = torch.device("cpu")
    base = world_model(5 if not args.quick else 1, args.quick, dropout=0.0).eval()
    models = {cpu: base, device: copy.deepcopy(base).to(device)}
    for name, make in (
        ("plan, MC score", lambda wm: DiffusionActor(wm, planner_config(args.quick))),
        ("plan, score network", lambda wm: DiffusionActor(wm, planner_config(args.quick, score_source="network"))),
        ("plan, MPPI (TD-MPC2)", lambda wm: MPPIActor(wm, mppi_config(args.quick))),
    ):
        outs = {}
        for dev, wm in models.items():
            actor = make(wm).to(dev)
            with cpu_draws(7):
                outs[dev] = actor.plan(*plan_inputs(4, dev), explore=True)
        row(f"{name}: action, {device.type} vs cpu", outs[device][0], outs[cpu][0])
        row(f"{name}: plan, {device.type} vs cpu", outs[device][1], outs[cpu][1])
    infos, losses = {}, {}
    for dev in (cpu, device):
        step, loss = make_update(copy.deepcopy(base), dev, "fp32", None)
        with cpu_draws(11):
            infos[dev] = step(update_batch(64 if not args.quick else 16, dev))
        losses[dev] = loss
    for key in ("loss_model", "loss_consistency", "loss_value", "loss_energy", "loss_actor", "model_grad_norm"):
        row(f"update: {key}, {device.type} vs cpu", infos[device][key], infos[cpu][key])
    worst = max(max_diff(p, q) for p, q in zip(losses[device].parameters(), losses[cpu].parameters()))
    lines.append(f"| update: weights after one update, {device.type} vs cpu | {worst:.2e} | | {'ok' if worst < 1e-4 else 'DIFFERS'} |")
    if args.backend is not None:  # compiled against eager on the device, same draws (Inductor uses eager's RNG ops)
        import torch._inductor.config as inductor_config

        with inductor_config.patch(fallback_random=True):
            actor = DiffusionActor(models[device], planner_config(args.quick)).to(device)
            torch.manual_seed(3)
            expected = actor.plan(*plan_inputs(4, device), explore=True)
            actor.compile_planner(args.mode, args.backend)
            torch.manual_seed(3)
            got = actor.plan(*plan_inputs(4, device), explore=True)
        row(f"plan, MC score: compiled ({args.backend}) vs eager on {device.type}", got[1], expected[1])
    torch.backends.cuda.matmul.allow_tf32 = True
    return lines


# ------------------------------------------------------------------------------------------ 2. speed
VARIANTS = ("eager", "eager+graph", "compiled", "compiled+graph")


def bench(device, args, budget: Budget, report: Report) -> list[str]:
    head = [
        "| setting | " + " | ".join(f"{v} ms" for v in VARIANTS) + " | compile s | peak MiB | target |",
        "|---|" + "---:|" * (len(VARIANTS) + 3),
    ]
    lines = list(head)
    estimate = [20.0 if args.quick else 90.0]  # seconds a compilation is expected to take (the longest seen)
    repeats = 3 if args.quick else 20
    rows = []
    precisions = ("fp32", "bf16")
    plan_envs = (1, 4) if args.quick else (1, 32)
    sizes = (1,) if args.quick else (5, 1)
    for precision in precisions:  # by priority: fp32 first, the default settings first
        rows.append(("plan", plan_envs[0], 5, precision))
        for size in sizes:
            rows.append(("update", 256 if not args.quick else 16, size, precision))
        rows.append(("plan", plan_envs[1], 5, precision))
    for kind, n, size, precision in rows:
        cells, compile_s = {}, ""
        reset_peak(device)
        try:
            if kind == "plan":
                wm = world_model(size if not args.quick else 1, args.quick).to(device).eval()
                actor = DiffusionActor(wm, planner_config(args.quick), precision=precision).to(device)
                inputs = plan_inputs(n, device)
                call = lambda: actor.plan(*inputs, explore=True)  # noqa: E731
                label = (
                    f"plan ({'quick' if args.quick else 'default'} planner), model {size if not args.quick else 'tiny'}, "
                    f"{n} env(s), {precision}"
                )
                per = n
            else:
                wm = world_model(size, args.quick).to(device)
                step, _ = make_update(wm, device, precision, None)
                batch = update_batch(n, device)
                call = lambda: step(batch)  # noqa: E731
                label = f"update, batch {n}, horizon 3, model {size if not args.quick else 'tiny'}, {precision}"
                per = 1
            call()
            cells["eager"] = timed_ms(call, device, repeats) / per
            if kind == "plan":
                actor.compile_planner(backend=None, cudagraphs=True)
                call()
                cells["eager+graph"] = timed_ms(call, device, repeats) / per
            else:
                captured, _ = make_update(
                    world_model(size, args.quick).to(device), device, precision, CompileOptions(backend=None, cudagraphs=True)
                )
                captured(batch)
                cells["eager+graph"] = timed_ms(lambda: captured(batch), device, repeats)
            if args.backend is None or budget.left() - args.reserve < estimate[0]:
                cells["compiled"] = cells["compiled+graph"] = "skipped (time)" if args.backend is not None else "off"
            else:
                options = CompileOptions(mode=args.mode, backend=args.backend)
                start = time.perf_counter()
                if kind == "plan":
                    actor.compile_planner(options=options)
                    call()
                else:
                    step, _ = make_update(world_model(size, args.quick).to(device), device, precision, options)
                    call = lambda: step(batch)  # noqa: E731
                    call()
                seconds = time.perf_counter() - start
                estimate[0] = max(estimate[0], seconds)
                compile_s = f"{seconds:.0f}"
                cells["compiled"] = timed_ms(call, device, repeats) / per
                if options.uses_cudagraph_trees:
                    cells["compiled+graph"] = "(mode captures)"
                else:
                    graphed = dataclasses.replace(options, cudagraphs=True)
                    if kind == "plan":
                        actor.compile_options = graphed  # keeps the compiled function, adds the capture
                    else:
                        step.options = graphed
                    call()
                    cells["compiled+graph"] = timed_ms(call, device, repeats) / per
        except Exception as err:  # a failing cell must not lose the rest of the table
            cells.setdefault("error", f"{type(err).__name__}: {str(err).splitlines()[0][:150]}")
            traceback.print_exc()
            label = locals().get("label", f"{kind} {n} {size} {precision}")
        target = ""
        if device.type == "cuda" and precision == "fp32":
            best = min((v for v in cells.values() if isinstance(v, float)), default=None)
            goal = 5.0 if kind == "plan" and n == 1 else 10.0 if kind == "update" else None
            if goal is not None and best is not None:
                target = f"<= {goal:.0f}: {'met' if best <= goal else 'MISSED'} ({best:.1f})"
        values = [f"{cells[v]:.2f}" if isinstance(cells.get(v), float) else str(cells.get(v, "")) for v in VARIANTS]
        if "error" in cells:
            values[-1] = (values[-1] + " " + cells["error"]).strip()
        lines.append(
            f"| {label}{' (ms per env)' if kind == 'plan' and n > 1 else ''} | "
            + " | ".join(values)
            + f" | {compile_s} | {peak_mib(device)} | {target} |"
        )
        report.sections[-1] = ["\n## speed (in progress)\n", *lines]
        report.flush()
    return lines


# ------------------------------------------------------------------------------------------ 3. online run
def online(device, args, budget: Budget) -> list[str]:
    steps = args.online_steps
    seed_steps = max(steps // 4, 10)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_run_"))
    overrides = [
        f"task={args.online_task}",
        f"steps={steps}",
        f"device={device.type}",
        f"seed_steps={seed_steps}",
        f"pretrain_updates={seed_steps}",
        "num_envs=1",
        f"eval_freq={10 * steps}",
        "eval_episodes=1",
        "progress=false",
        f"work_dir={work}",
        "save_video=false",
        *args.online_args,
    ]
    if args.quick:
        overrides += [
            "model_size=1",
            "model.latent_dim=16",
            "model.mlp_dim=32",
            "model.enc_dim=32",
            "batch_size=16",
            "planner.steps=2",
            "planner.num_samples=8",
            "planner.num_elites=2",
            "planner.num_pi_trajs=2",
        ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "MUJOCO_GL": "egl"}
    command = [sys.executable, "-c", "from torchrl_mbdpo.cli import train_main; train_main()", *overrides]
    timeout = max(budget.left() - 5, 10)
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        seconds = time.perf_counter() - start
        status = "ok" if done.returncode == 0 else f"exit {done.returncode}: {(done.stderr or done.stdout).strip().splitlines()[-1:]}"
    except subprocess.TimeoutExpired:
        seconds, status = time.perf_counter() - start, f"stopped at the time budget ({timeout:.0f} s)"
    return [
        "| run | steps | wall s | env steps / s | status |",
        "|---|---:|---:|---:|---|",
        f"| mbdpo-train {' '.join(overrides[:1] + overrides[2:3] + list(args.online_args))} ({seed_steps} random steps, "
        f"{seed_steps} pretraining updates, then one plan and one update per step) | {steps} | {seconds:.1f} | "
        f"{steps / seconds:.1f} | {status} |",
    ]


# ------------------------------------------------------------------------------------------ main
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny models and settings: exercise every code path quickly")
    parser.add_argument(
        "--backend",
        default=None,
        help="torch.compile backend (default: inductor; eager with --device cpu --quick); 'none' skips the compiled rows",
    )
    parser.add_argument("--mode", default=None, help="torch.compile mode (default: torch's; the official code: max-autotune-no-cudagraphs)")
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for the whole check (default 540: 9 minutes)")
    parser.add_argument("--reserve", type=float, default=None, help="seconds kept for the online run (default: 150, quick: 20)")
    parser.add_argument("--online-steps", type=int, default=None, help="agent steps of the online run (default 2000, quick: 24)")
    parser.add_argument("--online-task", default="gym:Pendulum-v1")
    parser.add_argument("--online-args", nargs="*", default=[], help="more mbdpo-train overrides, e.g. compile=true")
    parser.add_argument("--skip", nargs="*", default=[], choices=["correctness", "speed", "online"])
    parser.add_argument("--out", default=None, help="markdown report (default: $OUT/gpu_check.md, else benchmarks/gpu_check.md)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but torch sees no GPU (dry run: --device cpu --quick)")
    if args.backend is None:
        args.backend = "eager" if device.type == "cpu" and args.quick else "inductor"  # eager: Dynamo's capture only
    if args.backend == "none":
        args.backend = None
    args.reserve = args.reserve if args.reserve is not None else (20.0 if args.quick else 150.0)
    args.online_steps = args.online_steps or (24 if args.quick else 2000)
    torch.set_num_threads(min(torch.get_num_threads(), 16))
    budget = Budget(args.budget)
    warnings.filterwarnings("ignore")
    default_out = Path(os.environ["OUT"]) / "gpu_check.md" if os.environ.get("OUT") else ROOT / "benchmarks" / "gpu_check.md"
    out = Path(args.out) if args.out else default_out
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    report = Report(
        out,
        [
            "# torchrl_mbdpo device check",
            "",
            f"device {device} ({gpu}); torch {torch.__version__}, CUDA {torch.version.cuda}; {platform.processor() or platform.machine()}, "
            f"{torch.get_num_threads()} CPU threads; compile backend {args.backend}, mode {args.mode}; "
            f"{'quick settings' if args.quick else 'full settings'}",
            f"started {time.strftime('%Y-%m-%d %H:%M:%S')}, budget {args.budget:.0f} s",
        ],
    )
    for name, fn in (("correctness", lambda: correctness(device, args)), ("speed", None), ("online", None)):
        if name in args.skip:
            continue
        start = time.perf_counter()
        try:
            if name == "correctness":
                lines = fn()
            elif name == "speed":
                report.section("speed (in progress)", [])
                lines = bench(device, args, budget, report)
                report.sections.pop()
                lines += [
                    "",
                    "ms per call (plan rows with several envs: ms per env), median of repeated calls after warm-up; "
                    "graph = tensordict's CudaGraphModule capture (on the CPU it runs the function as it is); "
                    "compile s = first compiled call (compilation included). Published reference: the official MBDPO "
                    "PyTorch update, 37.7 ms on a GPU.",
                ]
            else:
                lines = online(device, args, budget)
        except Exception as err:
            traceback.print_exc()
            lines = [f"failed: {type(err).__name__}: {err}"]
        report.section(f"{name} ({time.perf_counter() - start:.0f} s)", lines)
        print(f"[gpu_check] {name} done, {budget.left():.0f} s of the budget left", flush=True)
    report.section(
        "compile times (first call of each compiled function, s)",
        [", ".join(f"{k}: {v:.1f}" for k, v in compile_report().items()) or "none"],
    )
    print(out.read_text())
    print(f"[gpu_check] report written to {out}")


if __name__ == "__main__":
    main()
