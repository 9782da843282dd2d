"""The SAC baseline script (sota-implementations/sac/sac.py) runs end to end, writes eval.csv, and
``mbdpo-compare run=false`` collects its runs beside the library's."""

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from torchrl_mbdpo.trainers.compare import compare, markdown_table

SCRIPT = Path(__file__).resolve().parents[1] / "sota-implementations" / "sac" / "sac.py"


def test_sac_baseline_writes_eval_csv(tmp_path):
    work = tmp_path / "runs" / "sac" / "pendulum-swingup" / "seed1"  # the script's default layout, under runs/
    cmd = [
        sys.executable,
        str(SCRIPT),
        "--task",
        "pendulum-swingup",
        "--steps",
        "300",
        "--eval-freq",
        "150",
        "--eval-episodes",
        "1",
        "--init-random-frames",
        "100",
        "--threads",
        "1",
        "--work-dir",
        str(work),
    ]
    out = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    )
    assert out.returncode == 0, out.stderr[-2000:]
    with open(work / "eval.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "episode_reward", "env_steps", "wall_time_s"]
    assert [int(r["step"]) for r in rows] == [0, 150, 300]
    assert [int(r["env_steps"]) for r in rows] == [0, 300, 600]  # DMControl: action repeat 2
    assert all(math.isfinite(float(r["episode_reward"])) for r in rows)
    assert out.stdout.count("eval step") == 3

    # Collected like the library's own runs (root/<algo>/<task>/seed<seed>): curve, tables with wall time.
    final = compare(["pendulum-swingup"], ["sac"], [1], 300, root=tmp_path / "runs", out_dir=tmp_path / "cmp")
    assert [(r["algo"], r["step"], r["n_seeds"]) for r in final] == [("sac", 300, 1)]
    assert final[0]["episode_reward_mean"] == float(rows[-1]["episode_reward"])
    assert final[0]["wall_time_s_mean"] == float(rows[-1]["wall_time_s"]) > 0
    assert (tmp_path / "cmp" / "pendulum-swingup.png").stat().st_size > 1000
    assert "| pendulum-swingup | sac | 300 | 1 |" in markdown_table(final)

    # A second run into the same work dir is refused (one line, exit 2) rather than appended to eval.csv.
    again = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert again.returncode == 2 and "eval.csv exists" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    assert len(list(csv.DictReader(open(work / "eval.csv")))) == 3


@pytest.mark.parametrize(
    "args, words",
    [
        (["--steps", "0"], ["--steps", ">= 1"]),
        (["--batch-size", "0"], ["--batch-size", ">= 1"]),
        (["--utd", "0"], ["--utd > 0"]),
        (["--task", "nosuchtask"], ["Unknown task 'nosuchtask'", "available_tasks()"]),
    ],
)
def test_sac_baseline_rejects_bad_arguments(tmp_path, args, words):
    work = tmp_path / "work"
    cmd = [sys.executable, str(SCRIPT), *args, "--work-dir", str(work)]
    out = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    message = out.stderr.strip()
    assert "\n" not in message, out.stderr  # one line: the problem and its fix, no usage block or traceback
    assert message.startswith("sac.py: error: ") and all(w in message for w in words), out.stderr
    assert out.stdout == "" and not work.exists() and list(tmp_path.iterdir()) == []
