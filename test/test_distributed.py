"""Data-parallel training: two gloo processes on half batches match one process on the whole batch, and
``torchrun --nproc-per-node 2 mbdpo-train mode=offline ...`` trains and checkpoints."""

import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from torchrl_mbdpo.trainers.distributed import DistContext, make_gradient_averager
from torchrl_mbdpo.trainers.optimization import make_optimizers, update

from helpers import make_batch, make_loss

# Deterministic and per-sample-mean losses, so that the sharded update can equal the whole-batch one: no
# dropout, a policy std of e^-10 (its noise is ~1e-5), two Q heads (the random pair is then both), no
# energy gradient (its hard negatives are random).
WM = dict(dropout=0.0, log_std_min=-10.0, log_std_max=-10.0, num_q=2)
BATCH = 16


def one_update(batch, grad_sync=None) -> dict:
    loss, updater = make_loss(0, WM, energy_coef=0.0)
    model_optim, pi_optim = make_optimizers(loss)
    torch.manual_seed(1)
    update(loss, batch, model_optim, pi_optim, updater, grad_sync=grad_sync)
    return {k: v.clone() for k, v in loss.world_model.state_dict().items()}


def _worker(rank, world_size, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    torch.set_num_threads(1)
    shard = make_batch(seed=5, batch=BATCH)[rank * BATCH // world_size : (rank + 1) * BATCH // world_size]
    state = one_update(shard, make_gradient_averager(DistContext(rank, world_size)))
    torch.save(state, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def max_difference(a: dict, b: dict) -> float:
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_two_processes_on_half_batches_match_one_process_on_the_batch(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    whole = one_update(make_batch(seed=5, batch=BATCH))
    assert max_difference(rank0, rank1) == 0.0  # the processes stay identical
    assert max_difference(rank0, whole) < 1e-5
    # Without the averaging, a half batch gives another update: the comparison above can fail.
    half = one_update(make_batch(seed=5, batch=BATCH)[: BATCH // 2])
    assert max_difference(half, whole) > 1e-4


@pytest.mark.slow
def test_torchrun_offline_training_with_two_processes(tmp_path):
    from torchrl_mbdpo.trainers.generate_data import generate_dataset

    generate_dataset(tmp_path / "data", ["cartpole-balance"], 1, progress=False)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    args = [
        "mode=offline",
        f"data_dir={tmp_path / 'data'}",
        "task=[cartpole-balance]",
        "model_size=1",
        "model.latent_dim=32",
        "model.mlp_dim=32",
        "model.enc_dim=32",
        "model.task_dim=8",
        "batch_size=16",
        "steps=10",
        "eval_episodes=0",
        f"work_dir={tmp_path / 'run'}",
        "progress=false",
        "threads=1",
    ]
    script = "import sys; from torchrl_mbdpo.cli import train_main; sys.argv[0] = 'mbdpo-train'; train_main()"
    (tmp_path / "train.py").write_text(script)
    done = subprocess.run([*torchrun, str(tmp_path / "train.py"), *args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch 16 over 2 process(es)" in done.stdout
    state = torch.load(tmp_path / "run" / "checkpoints" / "latest.pt", weights_only=False)
    assert state["format_version"] >= 2
    odd_args = [a for a in args if not a.startswith(("batch_size=", "work_dir="))] + ["batch_size=15", f"work_dir={tmp_path / 'odd'}"]
    odd = subprocess.run([*torchrun, str(tmp_path / "train.py"), *odd_args], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert odd.returncode != 0 and "does not split over 2 processes" in odd.stderr + odd.stdout
