"""Every console command, every ``sota-implementations`` script and every example runs to the end at tiny settings
(exit 0, its closing line, its files). The inputs later commands need (an online run, a dataset, an offline run, a
play dataset, a world model and a reward) are made by their own commands in the session fixtures of
``conftest.py``, so those commands are covered by every test that uses them."""

import importlib.metadata
import subprocess
import sys
from pathlib import Path

import contract_cases as C
import pytest
import torch
import yaml

from torchrl_mbdpo.cli import COMMANDS
from torchrl_mbdpo.dmo.trainer import load_dmo_policy
from torchrl_mbdpo.envs import make_env
from torchrl_mbdpo.trainers.checkpoint import load_checkpoint
from torchrl_mbdpo.trainers.evaluation import evaluate

REPO = Path(__file__).resolve().parents[2]
PRESETS = REPO / "sota-implementations" / "mbdpo"

# Every script a user may start, and the test that runs it to the end (this file's, unless named).
SCRIPTS = {
    "sota-implementations/mbdpo/mbdpo.py": "test_every_preset_script_runs_to_the_end",
    "sota-implementations/mbdpo_trainer/train.py": "test_the_torchrl_recipe_says_which_install_it_needs; test_torchrl_dropin.py runs it",
    "sota-implementations/sac/sac.py": "test/test_sac_baseline.py::test_sac_baseline_writes_eval_csv",
    "sota-implementations/ppo/ppo.py": "test/test_ppo_baseline.py::test_ppo_baseline_writes_eval_csv",
    "examples/compose_with_torchrl.py": "test_the_examples_run_to_the_end",
    "examples/dmo_world_model_env.py": "test_the_examples_run_to_the_end",
}


def _ok(out, *expected):
    assert out.returncode == 0, C.explain(out)
    for text in expected:
        assert text in out.stdout, C.explain(out)


def test_the_console_scripts_are_the_command_table():
    """The installed console scripts are exactly the commands of the CLI's table."""
    scripts = {ep.name for ep in importlib.metadata.entry_points(group="console_scripts") if ep.value.startswith("torchrl_mbdpo.cli:")}
    assert scripts == {name.split(" ")[0] for name in COMMANDS}


def test_every_script_is_in_the_contract():
    found = {str(p.relative_to(REPO)) for folder in ("sota-implementations", "examples") for p in (REPO / folder).rglob("*.py")}
    assert found == set(SCRIPTS), "a script was added or removed: put it in SCRIPTS with the test that runs it"
    for script, test in SCRIPTS.items():  # each named test exists: in another file (path::name) or in this one
        path, name = test.split("::") if "::" in test else ("test/contract/test_contract_commands.py", test.split(";")[0])
        assert f"def {name}(" in (REPO / path).read_text(), f"{script}: no test {name} in {path}"


# ------------------------------------------------------------------------------------------ mbdpo-train and friends
def test_train_online_offline_and_dmo(online_run, offline_run, workspace):
    for run in (online_run, offline_run):
        assert load_checkpoint(run / "checkpoints" / "latest.pt")["step"] in (20, 30)
    assert (online_run / "eval.png").exists() and (offline_run / "eval_tasks.csv").exists()
    _ok(C.run(workspace, "mbdpo-dmo", *C.DMO_SIM, "work_dir=dmo"), "final eval at step 64")
    # mbdpo-eval plays a DMO checkpoint's deterministic actor (no planner): the library's own evaluation
    out = C.run(workspace, "mbdpo-eval", f"checkpoint={workspace / 'dmo' / 'checkpoints' / 'latest.pt'}", "eval_episodes=2", "seed=4")
    _ok(out, "mean_return=")
    _, _, _, policy = load_dmo_policy(workspace / "dmo" / "checkpoints" / "latest.pt")
    env = make_env("gym:ShortPendulum-v1", seed=4)
    expected = sum(evaluate(env, policy, 2, env.task_spec.episode_length)) / 2
    assert abs(float(out.stdout.split("mean_return=")[1].split()[0]) - expected) < 1e-2
    _ok(
        C.run(
            workspace,
            "mbdpo-train",
            *C.ONLINE,
            "algo=tdmpc2",
            "mppi.num_samples=8",
            "mppi.num_elites=2",
            "mppi.num_pi_trajs=2",
            "work_dir=td",
        )
    )


def test_a_run_too_short_to_update_says_so_up_front(tmp_path):
    out = C.run(tmp_path, "mbdpo-train", *C.ONLINE, "steps=15", "work_dir=short")
    _ok(out, "after 0 updates")
    assert out.stderr.startswith("warning: steps=15 ends before the first episodes end"), C.explain(out)


def test_eval_takes_the_train_settings_and_falls_back_to_previous(online_run, tmp_path):
    ckpt = online_run / "checkpoints" / "latest.pt"
    _ok(
        C.run(tmp_path, "mbdpo-eval", f"checkpoint={ckpt}", "eval_episodes=1", "planner.num_samples=4", "planner.num_elites=2"),
        "mean_return=",
    )
    damaged = tmp_path / "run" / "checkpoints"
    damaged.mkdir(parents=True)
    (damaged / "previous.pt").write_bytes(ckpt.read_bytes())
    (damaged / "latest.pt").write_bytes(ckpt.read_bytes()[:100])  # a write cut short
    out = C.run(tmp_path, "mbdpo-eval", f"checkpoint={damaged / 'latest.pt'}", "eval_episodes=1", "save_video=true", "video_size=32")
    _ok(out, "mean_return=", "video of the 1 episodes")
    assert "warning:" in out.stderr and "previous checkpoint" in out.stderr, C.explain(out)
    assert list((tmp_path / "run" / "videos").glob("*.mp4"))  # a gym: task records a video too


def test_compare_finetune_dataset_and_export(online_run, offline_run, dataset, workspace, tmp_path):
    tiny = [f"train.{a}" for a in C.ONLINE if not a.startswith(("task=", "steps="))]
    out = C.run(tmp_path, "mbdpo-compare", "tasks=[gym:ShortPendulum-v1]", "algos=[mbdpo]", "seeds=[1]", "steps=30", *tiny)
    _ok(out, "| gym:ShortPendulum-v1 | mbdpo | 30 | 1 |")
    ckpt = offline_run / "checkpoints" / "latest.pt"
    _ok(C.run(tmp_path, "mbdpo-finetune", *C.FINETUNE, f"checkpoint={ckpt}", "work_dir=ft"), "final eval at step 30")
    _ok(C.run(tmp_path, "mbdpo-eval", f"checkpoint={ckpt}", "eval_episodes=1", *C.TINY_PLANNER), "normalized_score=")
    one = C.run(tmp_path, "mbdpo-eval", f"checkpoint={ckpt}", "task=cartpole-balance", "eval_episodes=1", *C.TINY_PLANNER)
    _ok(one, "task cartpole-balance: mean return")
    _ok(C.run(tmp_path, "mbdpo-dataset", "check", f"data_dir={dataset}"), "OK: mt30 layout")
    _ok(C.run(tmp_path, "mbdpo-export", f"checkpoint={online_run / 'checkpoints' / 'latest.pt'}", "out=official.pt"), "exported")
    assert set(torch.load(tmp_path / "official.pt", weights_only=False)) == {"model"}


def test_dmo_in_the_pixel_world_model(pixel_models, workspace, tmp_path):
    _ok(C.run(tmp_path, "mbdpo-dmo", "policy", *pixel_models, *C.POLICY, "work_dir=pol"), "real Push-T success")
    _ok(C.run(tmp_path, "mbdpo-dmo", "ppo", *pixel_models, *C.PPO, "work_dir=ppo"), "real Push-T success")
    dmo = [f"dmo.{a}" for a in C.POLICY if not a.startswith("threads=")]
    ppo = [f"ppo.{a}" for a in C.PPO if not a.startswith("threads=")]
    out = C.run(tmp_path, "mbdpo-dmo", "compare", *pixel_models, "seeds=[0]", "root=cmp", *dmo, *ppo, "threads=1", "progress=false")
    _ok(out, "| dmo | 1 |", "| ppo | 1 |", "comparison.png")
    assert (tmp_path / "cmp" / "comparison.png").exists()


# ------------------------------------------------------------------------------------------ scripts and examples
def _script(path, *args, cwd):
    return subprocess.run([sys.executable, str(REPO / path), *args], cwd=cwd, capture_output=True, text=True, timeout=600)


PRESET_TINY = ["device=cpu", "steps=20", "seed_steps=10", "pretrain_updates=2", "eval_episodes=1", *C.TINY_MODEL, *C.TINY_PLANNER, *C.QUIET]


@pytest.mark.parametrize("preset", sorted(p.stem for p in PRESETS.glob("*.yaml")))
def test_every_preset_script_runs_to_the_end(preset, tmp_path):
    from torchrl_mbdpo.envs import task_spec
    from torchrl_mbdpo.envs.suite import SuiteUnavailableError
    from torchrl_mbdpo.trainers.config import TrainConfig

    task = yaml.safe_load((PRESETS / f"{preset}.yaml").read_text()).get("task", TrainConfig.task)
    try:
        task_spec(task)
        if preset == "config_maniskill":
            from torchrl_mbdpo.envs import make_env

            make_env(task, seed=0).close()
    except (SuiteUnavailableError, RuntimeError) as err:
        pytest.skip(f"{task}: {err}")
    out = _script("sota-implementations/mbdpo/mbdpo.py", "--config-name", preset, *PRESET_TINY, "work_dir=run", cwd=tmp_path)
    _ok(out, "final eval at step 20")
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").exists()


def test_the_torchrl_recipe_says_which_install_it_needs(tmp_path):
    from torchrl_mbdpo._torchrl_next import has_torchrl_tdmpc2

    if has_torchrl_tdmpc2():
        pytest.skip("torchrl has the TD-MPC2 stack here: test/test_torchrl_dropin.py runs the recipe")
    out = _script("sota-implementations/mbdpo_trainer/train.py", cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "make setup-next" in out.stderr, C.explain(out)


def test_the_examples_run_to_the_end(pixel_models, tmp_path):
    help_ = _script("examples/compose_with_torchrl.py", "--help", cwd=tmp_path)
    assert help_.returncode == 0 and "usage:" in help_.stdout and "episode return" not in help_.stdout, C.explain(help_)
    _ok(_script("examples/compose_with_torchrl.py", "--steps", "1100", cwd=tmp_path), "step 1100: loss_consistency")
    world_model, _, data = (a.split("=", 1)[1] for a in pixel_models)
    out = _script(
        "examples/dmo_world_model_env.py",
        "--checkpoint",
        world_model,
        "--data",
        data,
        "--envs",
        "2",
        "--steps",
        "2",
        "--out",
        "x.png",
        cwd=tmp_path,
    )
    _ok(out, "world-model samples/s", "real (top) vs model env (bottom)")
