"""Update throughput and memory per model size, for multi-task offline pretraining (mt80).

For each model size: the mt80 world model (obs 39, action 6, 80 tasks, task embedding 96),
``MBDPOLoss``, the official optimisers and a ``SoftUpdate`` target updater, trained on a synthetic
``[B, H]`` batch (B = 1024 slices of H = 3 steps, the offline batch). Each size runs in a fresh
subprocess, so its peak resident set size (and, on CUDA, peak allocated GPU memory) is its own.
Reports ms per update (mean over the timed updates, after warm-up) and samples/s (one sample is
one H-step slice: B / seconds per update).

    python benchmarks/scaling.py                            # sizes 1 5 19 48, batch 1024
    python benchmarks/scaling.py --sizes 317 --device cuda  # the 340M model on a GPU
    python benchmarks/scaling.py --sizes 1 --batch 32 --updates 2 --warmup 1 --threads 1  # smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import time

import torch
from run import cpu_name  # benchmarks/run.py: this script's folder is on sys.path
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from torchrl_mbdpo.modules import MBDPOWorldModel, WorldModelConfig
from torchrl_mbdpo.modules.world_model import PAPER_SIZE_LABELS
from torchrl_mbdpo.objectives import MBDPOLoss
from torchrl_mbdpo.trainers.optimization import make_optimizers, update

OBS_DIM, ACTION_DIM, TASK_DIM, NUM_TASKS = 39, 6, 96, 80
ACTION_DIMS = [6] * 30 + [4] * 50  # per task: the padded action dims are masked
PAPER_LABEL = {key: f"{label:g}M" for label, key in PAPER_SIZE_LABELS.items()}


def make_batch(B: int, H: int, device) -> TensorDict:
    """Synthetic ``[B, H]`` slices; the task (and its discount) is constant along a slice."""
    task = torch.randint(0, NUM_TASKS, (B, 1)).expand(B, H)
    active = torch.arange(ACTION_DIM) < torch.tensor(ACTION_DIMS)[task].unsqueeze(-1)
    discount = torch.where(task < 30, 0.99, 0.95).unsqueeze(-1)
    return TensorDict(
        {
            "observation": torch.randn(B, H, OBS_DIM),
            "action": (torch.rand(B, H, ACTION_DIM) * 2 - 1) * active,
            ("next", "observation"): torch.randn(B, H, OBS_DIM),
            ("next", "reward"): torch.rand(B, H, 1),
            ("next", "terminated"): torch.zeros(B, H, 1, dtype=torch.bool),
            "task": task.clone(),
            "discount": discount,
        },
        batch_size=[B, H],
    ).to(device)


def run_one(args) -> None:
    """Benchmark one size in this process; prints JSON lines (the parent merges them)."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = WorldModelConfig.from_size(args.one, OBS_DIM, ACTION_DIM, task_dim=TASK_DIM, num_tasks=NUM_TASKS, action_dims=ACTION_DIMS)
    wm = MBDPOWorldModel(cfg).to(device)
    params = sum(p.numel() for p in wm.parameters())
    score_params = sum(p.numel() for p in wm.score_net.parameters())
    # Printed first, so that the parameter count survives if the process is killed later.
    print(json.dumps({"params": params, "paper_params": params - score_params}), flush=True)
    loss = MBDPOLoss(wm, discount=0.99).to(device)
    model_optim, pi_optim = make_optimizers(loss)
    updater = SoftUpdate(loss, tau=0.01)
    batch = make_batch(args.batch, cfg.horizon, device)

    def step():
        update(loss, batch, model_optim, pi_optim, updater, precision=args.precision)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.updates):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.updates
    result = {
        "ms": seconds * 1e3,
        "samples_per_s": args.batch / seconds,
        "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if device.type == "cuda":
        result["gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result), flush=True)


def run_size(size: int, args) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--one",
        str(size),
        "--batch",
        str(args.batch),
        "--updates",
        str(args.updates),
        "--warmup",
        str(args.warmup),
        "--device",
        args.device,
        "--precision",
        args.precision,
    ]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    result = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            result.update(json.loads(line))
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        # Killed (the OOM killer sends SIGKILL), or a MemoryError / RuntimeError about memory (CUDA OOM too).
        if proc.returncode < 0 or "memory" in last.lower():
            result["oom"] = True
        else:
            result["error"] = last
            print(proc.stderr, file=sys.stderr)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 5, 19, 48], choices=sorted(PAPER_LABEL))
    parser.add_argument("--batch", type=int, default=1024, help="slices per update (default: the offline batch)")
    parser.add_argument("--updates", type=int, default=5, help="timed updates")
    parser.add_argument("--warmup", type=int, default=2, help="untimed updates first")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--out", default=None, help="also write the rows to this CSV file")
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: one size, JSON out
    args = parser.parse_args()
    if args.one is not None:
        return run_one(args)

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device == "cuda"
    device = f"CUDA ({torch.cuda.get_device_name()})" if cuda else "CPU"
    print(
        f"\nmachine: {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
        f"torch {torch.__version__}; device {device}; {args.precision}; mt80 ({NUM_TASKS} tasks, obs {OBS_DIM}, "
        f"action {ACTION_DIM}); mean of {args.updates} updates after {args.warmup} warm-up\n"
    )
    header = "| size key | paper label | params | params w/o score net | batch | ms/update | samples/s | peak RSS MiB |"
    rule = "|---------:|------------:|-------:|---------------------:|------:|----------:|----------:|-------------:|"
    print(header + (" GPU MiB |" if cuda else ""))
    print(rule + ("--------:|" if cuda else ""))
    rows = []
    for size in args.sizes:
        r = run_size(size, args)
        row = {
            "size": size,
            "paper_label": PAPER_LABEL[size],
            "params": r.get("params"),
            "paper_params": r.get("paper_params"),
            "batch": args.batch,
            "ms_per_update": r.get("ms"),
            "samples_per_s": r.get("samples_per_s"),
            "peak_rss_mib": r.get("rss_mib"),
            "gpu_mib": r.get("gpu_mib"),
            "status": "out of memory" if r.get("oom") else r.get("error", "ok"),
        }
        rows.append(row)
        millions = [f"{row[k] / 1e6:.2f}M" if row[k] else "-" for k in ("params", "paper_params")]
        if row["status"] == "ok":
            cells = [f"{row['ms_per_update']:.1f}", f"{row['samples_per_s']:.0f}", f"{row['peak_rss_mib']:.0f}"]
            cells += [f"{row['gpu_mib']:.0f}"] if cuda else []
        else:
            cells = [row["status"]] + [""] * (3 if cuda else 2)
        print(f"| {size} | {row['paper_label']} | {millions[0]} | {millions[1]} | {args.batch} | " + " | ".join(cells) + " |", flush=True)
    if args.out:
        with open(args.out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


if __name__ == "__main__":
    main()
