"""The README's commands and Python snippets, executed from the README itself: an edit that breaks one fails here.

Commands run in the order they are written (a later one may read what an earlier one wrote), each with tiny
settings appended (Hydra keeps the last value of a key), in one folder. Python blocks run as written; a block
that starts from TorchRL's TD-MPC2 parts runs where torchrl has that stack (``make test-next``), after a prelude
that builds those parts."""

import re
import shlex
import subprocess
import sys
from pathlib import Path

import contract_cases as C
import pytest

from torchrl_mbdpo._torchrl_next import has_torchrl_tdmpc2

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()

TINY_RUN = ["steps=20", "seed_steps=10", "pretrain_updates=2", "eval_freq=20", "eval_episodes=1", "checkpoint_freq=20", *C.TINY_MODEL]
TINY_RUN += [*C.TINY_PLANNER, "mppi.iterations=2", "mppi.num_samples=8", "mppi.num_elites=2", "mppi.num_pi_trajs=2", *C.QUIET]
TINY = {
    "mbdpo-train": TINY_RUN,
    "mbdpo-eval": ["eval_episodes=1"],
    "sota-implementations/mbdpo/mbdpo.py": ["device=cpu", "work_dir=preset", *TINY_RUN],
    "sota-implementations/mbdpo_trainer/train.py": C.RECIPE_TINY,
}
NEEDS_NEXT = ("sota-implementations/mbdpo_trainer/train.py", "TorchRL's TD-MPC2 parts")
PRELUDE = """
import torch
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer
from torchrl.trainers.algorithms.configs.modules import _make_tdmpc2_policy_prior, _make_tdmpc2_q_ensemble, _make_tdmpc2_world_model

from torchrl_mbdpo import MBDPOLoss, MBDPOPlanner, MBDPOTrainer
from torchrl_mbdpo.envs import make_env
from torchrl_mbdpo.modules import make_energy_network

torch.manual_seed(0)
env = make_env("gym:Pendulum-v1", seed=0)
world_model = _make_tdmpc2_world_model(observation_dim=3, action_dim=1, latent_dim=32, encoder_dim=32, mlp_dim=32)
policy_prior = _make_tdmpc2_policy_prior(latent_dim=32, action_dim=1, mlp_dim=32)
q_ensemble = _make_tdmpc2_q_ensemble(latent_dim=32, action_dim=1, mlp_dim=32, num_q=2)
energy = make_energy_network(32, 1, 32)
n = 200
sampler = SliceSampler(slice_len=3, traj_key=("collector", "traj_ids"), truncated_key=None)
rb = TensorDictReplayBuffer(storage=LazyTensorStorage(1000), batch_size=16 * 3, sampler=sampler)
"""
CHECK_TRAINED = """
trainer.train()
assert trainer.optimization_stepper.update_count > 0
print("trained", trainer.optimization_stepper.update_count, "updates")
"""


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def _commands() -> list[list[str]]:
    out = []
    for block in _blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith(("mbdpo-", "python ")):
                out.append(shlex.split(line))
    return out


def test_the_readme_shows_commands_and_snippets():
    assert len(_commands()) >= 5 and len(_blocks("python")) >= 2
    assert len(README.splitlines()) <= 200, "README.md is the front door: at most ~200 lines, the rest in docs/"


def test_the_readmes_commands_run_to_the_end(tmp_path):
    for argv in _commands():
        script = next((s for s in TINY if s in " ".join(argv)), None)
        if (script in NEEDS_NEXT) != has_torchrl_tdmpc2():
            continue  # each command runs in one environment: TorchRL's recipe in `make test-next`, the rest in `make test`
        key = argv[0] if argv[0].startswith("mbdpo-") else script
        assert key in TINY, f"a README command this test does not know how to shrink: {argv}"
        if argv[0].startswith("mbdpo-"):
            out = C.run(tmp_path, argv[0], *argv[1:], *TINY[key])
        else:
            args = [a.replace("sota-implementations", str(REPO / "sota-implementations")) for a in argv[1:]]
            extra = [f"hydra.run.dir={tmp_path / 'recipe'}"] if "mbdpo_trainer" in key else []
            out = subprocess.run([sys.executable, *args, *TINY[key], *extra], cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, f"{' '.join(argv)}\n{C.explain(out)}"


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_the_readmes_python_runs(index, tmp_path):
    code = _blocks("python")[index]
    if (NEEDS_NEXT[1] in code) != has_torchrl_tdmpc2():
        pytest.skip("each block runs in one environment: TorchRL's TD-MPC2 parts in `make test-next`, the rest in `make test`")
    if NEEDS_NEXT[1] in code:
        code = PRELUDE + code + CHECK_TRAINED
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, C.explain(out)
