"""The PPO baseline script (sota-implementations/ppo/ppo.py) runs end to end, writes eval.csv, and
``mbdpo-compare run=false`` collects its runs beside the library's; bad arguments fail early and cleanly."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchrl_mbdpo.trainers.compare import compare, markdown_table

SCRIPT = Path(__file__).resolve().parents[1] / "sota-implementations" / "ppo" / "ppo.py"
ENV = {**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl"), "OMP_NUM_THREADS": "1"}


def run_script(cwd, *args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=ENV)


def test_ppo_baseline_writes_eval_csv(tmp_path):
    work = tmp_path / "runs" / "ppo" / "pendulum-swingup" / "seed1"  # the script's default layout, under runs/
    # 2 envs x 32 rollout steps = 64 agent steps per iteration: 4 PPO iterations, evaluations at 0, 128 and 256
    out = run_script(
        tmp_path,
        *("--task", "pendulum-swingup", "--steps", "256", "--num-envs", "2", "--rollout-steps", "32"),
        *("--epochs", "2", "--minibatch-size", "32", "--eval-freq", "128", "--eval-episodes", "1"),
        *("--threads", "1", "--work-dir", str(work)),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    with open(work / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "episode_reward", "env_steps", "wall_time_s"]
    assert [int(r["step"]) for r in rows] == [0, 128, 256]
    assert [int(r["env_steps"]) for r in rows] == [0, 256, 512]  # DMControl: action repeat 2
    assert all(math.isfinite(float(r["episode_reward"])) for r in rows)
    assert out.stdout.count("eval step") == 3

    # Collected like the library's own runs (root/<algo>/<task>/seed<seed>): curve, tables with wall time.
    final = compare(["pendulum-swingup"], ["ppo"], [1], 256, root=tmp_path / "runs", out_dir=tmp_path / "cmp")
    assert [(r["algo"], r["step"], r["n_seeds"]) for r in final] == [("ppo", 256, 1)]
    assert final[0]["episode_reward_mean"] == float(rows[-1]["episode_reward"])
    assert final[0]["wall_time_s_mean"] == float(rows[-1]["wall_time_s"]) > 0
    assert (tmp_path / "cmp" / "pendulum-swingup.png").stat().st_size > 1000
    assert "| pendulum-swingup | ppo | 256 | 1 |" in markdown_table(final)

    # A second run into the same work dir is refused rather than appended to eval.csv.
    again = run_script(tmp_path, "--task", "pendulum-swingup", "--steps", "64", "--threads", "1", "--work-dir", str(work))
    assert again.returncode == 2 and "eval.csv exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert len(list(csv.DictReader(open(work / "eval.csv")))) == 3


@pytest.mark.parametrize(
    "args, words",
    [
        (["--steps", "0"], ["--steps", ">= 1"]),
        (["--num-envs", "0"], ["--num-envs", ">= 1"]),
        (["--task", "nosuchtask"], ["Unknown task 'nosuchtask'", "available_tasks()"]),
    ],
)
def test_ppo_baseline_rejects_bad_arguments(tmp_path, args, words):
    work = tmp_path / "work"
    out = run_script(tmp_path, *args, "--threads", "1", "--work-dir", str(work))
    assert out.returncode == 2, out.stderr[-2000:]
    message = out.stderr.strip()
    assert "\n" not in message, out.stderr  # one line: the problem and its fix, no usage block or traceback
    assert message.startswith("ppo.py: error: ") and all(w in message for w in words), out.stderr
    assert out.stdout == ""
    assert not work.exists() and list(tmp_path.iterdir()) == []


def test_default_work_dir_is_where_compare_looks(tmp_path, monkeypatch):
    """A gym id's ``:`` is made file-name safe, as the library's own runs name their folders (mbdpo-compare finds them)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("ppo_script", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    monkeypatch.chdir(tmp_path)
    assert script.work_dir(script.parse_args(["--task", "gym:Pendulum-v1", "--seed", "2"])) == Path("runs/ppo/gym_Pendulum-v1/seed2")
