"""Seeds x tasks sweeps as a Hydra multirun (``mbdpo-train -m ...``), each run in its own work dir."""

import csv
import importlib.util

import pytest

from torchrl_mbdpo.trainers.commands import swept_keys
from torchrl_mbdpo.trainers.config import TrainConfig, sweep_work_dir

from helpers import TINY_ARGS
from helpers import run_cli as _cli

TINY = [
    "task=gym:Pendulum-v1",
    "steps=40",
    "seed_steps=20",
    "pretrain_updates=0",
    "eval_freq=40",
    "eval_episodes=1",
    "checkpoint_freq=40",
    "progress=false",
    *TINY_ARGS,
]


def test_a_two_run_multirun_in_parallel_then_compare_collects_it(tmp_path):
    out = _cli("train_main", "-m", "seed=1,2", *TINY, "hydra.launcher.n_jobs=2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    finals = {}
    for seed in (1, 2):
        run = tmp_path / "runs" / "mbdpo" / "gym_Pendulum-v1" / f"seed{seed}"  # the default work dir of each run
        rows = list(csv.DictReader(open(run / "eval.csv")))
        assert [int(r["step"]) for r in rows] == [0, 40]
        assert (run / "checkpoints" / "latest.pt").exists()
        finals[seed] = rows[-1]["episode_reward"]
    assert finals[1] != finals[2]  # two runs, not one written twice
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # nothing outside runs/ (Hydra's bookkeeping: runs/multirun)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["mbdpo", "multirun"]
    (sweep,) = (tmp_path / "runs" / "multirun").glob("*/multirun.yaml")
    assert "JoblibLauncher" in sweep.read_text() and "n_jobs: 2" in sweep.read_text()  # the local parallel launcher ran them
    compare = _cli("compare_main", "run=false", "tasks=[gym:Pendulum-v1]", "algos=[mbdpo]", "seeds=[1,2]", "steps=40", cwd=tmp_path)
    assert compare.returncode == 0, compare.stderr[-2000:]
    assert "| gym:Pendulum-v1 | mbdpo | 40 | 2 |" in compare.stdout


def test_runs_that_differ_in_other_swept_keys_get_their_own_work_dirs():
    cfg = TrainConfig(task="cheetah-run", seed=3)
    assert sweep_work_dir(cfg, ["seed=3", "task=cheetah-run", "steps=1000"], ["seed", "task"]) is None  # the default tells them apart
    assert (
        sweep_work_dir(cfg, ["seed=3", "model_size=5", "+planner.steps=4", "steps=1000"], ["seed", "model_size", "planner.steps"])
        == "runs/model_size=5,planner.steps=4/mbdpo/cheetah-run/seed3"
    )
    offline = TrainConfig(task="mt30", mode="offline", seed=1, model_size=1)
    assert sweep_work_dir(offline, ["lr=0.001"], ["lr"]) == "runs/lr=0.001/offline/mbdpo/mt30/size1/seed1"
    gym = TrainConfig(task="gym:Pendulum-v1", seed=1)
    assert (
        sweep_work_dir(gym, ["model.latent_dim=16", "task=gym:Pendulum-v1"], ["model.latent_dim", "task"])
        == "runs/model.latent_dim=16/mbdpo/gym_Pendulum-v1/seed1"
    )


def test_the_swept_keys_of_a_command_line():
    assert swept_keys(["seed=1,2,3", "task=a,b", "steps=10"]) == ([], 0)  # not a multirun
    assert swept_keys(["-m", "seed=1,2,3", "task=a,b", "steps=10", "hydra/launcher=basic"]) == (["seed", "task"], 6)
    assert swept_keys(["--multirun", "lr=range(1,4)", "+planner.steps=2,3"]) == (["lr", "planner.steps"], 6)


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None, reason="the slurm extra is not installed")
def test_the_documented_slurm_launcher_composes(tmp_path):
    out = _cli("train_main", "--cfg", "hydra", "hydra/launcher=submitit_slurm", "hydra.launcher.partition=gpu", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in out.stdout and "partition: gpu" in out.stdout
    assert not (tmp_path / "runs").exists()
