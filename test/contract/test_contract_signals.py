"""SIGTERM in each phase of each long-running command: the step in progress finishes, a consistent checkpoint is
written, one line says where the run stopped and how to resume, the process exits 143 (128 + SIGTERM); resumed
with ``resume=true``, the run ends as it would have (for ``mbdpo-train``: the same ``eval.csv`` as an
uninterrupted run, row for row)."""

import csv
import signal
import subprocess
import sys
import time

import contract_cases as C
import pytest

from torchrl_mbdpo.trainers.checkpoint import load_checkpoint

ALL_PHASES = ["setup", "seed", "pretrain", "train", "eval", "final_eval", "shutdown"]

# command label -> (console command, its arguments (given the session's inputs), the phases it has)
LONG_RUNNING = {
    "train online": ("mbdpo-train", lambda f: C.ONLINE, ALL_PHASES),
    "train offline": ("mbdpo-train", lambda f: [*C.OFFLINE, f"data_dir={f('dataset')}"], ["train", "eval"]),
    "dmo train": ("mbdpo-dmo", lambda f: C.DMO_SIM, ["seed", "pretrain", "train", "final_eval"]),
    "finetune": (
        "mbdpo-finetune",
        lambda f: [*C.FINETUNE, f"checkpoint={f('offline_run') / 'checkpoints' / 'latest.pt'}"],
        ["final_eval"],  # its other phases are the online run's (the same lifecycle)
    ),
    "dmo world_model": ("mbdpo-dmo", lambda f: ["world_model", f"data={f('play_data')}", *C.WORLD_MODEL], ["train", "final_eval"]),
    "dmo reward": ("mbdpo-dmo", lambda f: ["reward", f"data={f('play_data')}", *C.REWARD], ["train", "shutdown"]),
    "dmo policy": ("mbdpo-dmo", lambda f: ["policy", *f("pixel_models"), *C.POLICY], ["train", "eval", "final_eval"]),
    "dmo ppo": ("mbdpo-dmo", lambda f: ["ppo", *f("pixel_models"), *C.PPO], ["train", "final_eval"]),
}
CASES = [(label, phase) for label, (_, _, phases) in LONG_RUNNING.items() for phase in phases]


def _eval_rows(work_dir):
    with open(work_dir / "eval.csv") as f:
        return [{k: v for k, v in row.items() if k != "wall_time_s"} for row in csv.DictReader(f)]


@pytest.mark.parametrize("label, phase", CASES, ids=[f"{label}-{phase}" for label, phase in CASES])
def test_sigterm_in_each_phase_leaves_a_checkpoint_and_exits_143(label, phase, request, tmp_path):
    command, arguments, _ = LONG_RUNNING[label]
    args = [*arguments(request.getfixturevalue), f"work_dir={tmp_path / 'run'}"]
    out = C.run(tmp_path, command, *args, phase=phase)
    assert out.returncode == 128 + signal.SIGTERM, C.explain(out)
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("Received signal 15 (SIGTERM) during ") and "checkpoint written" in last, last
    assert "resume with resume=true" in last and "Traceback" not in out.stderr, C.explain(out)
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")  # loadable, and the one the line names
    assert f"{state['step']}); resume" in last, last
    if phase in ("train", "final_eval") or label == "train online":
        resumed = C.run(tmp_path, command, *args, "resume=true")
        assert resumed.returncode == 0, C.explain(resumed)
        if label == "train online":  # ends as the uninterrupted run of the same settings
            assert _eval_rows(tmp_path / "run") == _eval_rows(request.getfixturevalue("online_run"))


def test_sigterm_from_outside_during_the_final_evaluation(tmp_path):
    """The reported loss: a run sent SIGTERM during its final evaluation (a scheduler's time limit) used to end in a
    traceback with no checkpoint. Here the signal comes from outside, once the final evaluation has begun."""
    args = [*C.ONLINE, "eval_episodes=10", f"work_dir={tmp_path / 'run'}"]
    proc = subprocess.Popen(
        [sys.executable, str(C.HOOK), "mbdpo-train", *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("final evaluation at"):
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            break
    rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 143, "".join(seen) + rest + err
    assert "during the final evaluation at agent step 30: checkpoint written" in rest, rest
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert state["step"] == 30  # the whole run's work, with its final evaluation owed
    assert [row["step"] for row in _eval_rows(tmp_path / "run")] == ["0", "20"]
    resumed = C.run(tmp_path, "mbdpo-train", *args, "resume=true")
    assert resumed.returncode == 0 and "final eval at step 30" in resumed.stdout, C.explain(resumed)
    assert [row["step"] for row in _eval_rows(tmp_path / "run")] == ["0", "20", "30"]
