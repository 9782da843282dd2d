"""MetaWorld and MyoSuite through make_env, on the real simulators: specs, TD-MPC2's episode protocol
(action repeat, 100-step truncation, success flag), seeding, a planner rollout and a tiny training run."""

import csv
import os
import re
import subprocess
import sys

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest
import torch
from torchrl.envs.utils import check_env_specs, step_mdp

from torchrl_mbdpo import DiffusionActor
from torchrl_mbdpo.envs import TaskSpec, available_tasks, make_env, task_spec
from torchrl_mbdpo.envs.suite import SuiteUnavailableError
from torchrl_mbdpo.modules import MBDPOWorldModel, PlannerConfig, WorldModelConfig
from torchrl_mbdpo.trainers.config import ModelOverrides, TrainConfig
from torchrl_mbdpo.trainers.trainer import make_trainer

PACKAGE_OF_PREFIX = {"mw-": "metaworld", "myo-": "myosuite"}
OBS_DIM = {"mw-reach": 39, "mw-door-open": 39, "myo-reach": 115, "myo-pose": 108}
ACTION_DIM = {"mw-": 4, "myo-": 39}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The models here are tiny: a second thread only adds synchronisation, which stalls on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _prefix(task: str) -> str:
    return next(prefix for prefix in PACKAGE_OF_PREFIX if task.startswith(prefix))


def _require_suite(task: str) -> None:
    pytest.importorskip(PACKAGE_OF_PREFIX[_prefix(task)])


@pytest.mark.parametrize("task", ["mw-reach", "mw-door-open", "myo-reach", "myo-pose"])
def test_env_specs_and_task_spec(task):
    _require_suite(task)
    env = make_env(task, seed=0)
    check_env_specs(env)
    prefix = _prefix(task)
    assert env.observation_spec["observation"].shape == (OBS_DIM[task],)
    assert env.observation_spec["observation"].dtype == torch.float32
    assert env.action_spec.shape == (ACTION_DIM[prefix],)
    assert (env.action_spec.space.low == -1).all() and (env.action_spec.space.high == 1).all()
    assert env.observation_spec["success"].shape == (1,) and env.observation_spec["success"].dtype == torch.bool
    action_repeat = 2 if prefix == "mw-" else 1
    assert env.task_spec == task_spec(task) == TaskSpec(task, 100, action_repeat, episodic=False, reports_success=True)


@pytest.mark.parametrize("task", ["mw-reach", "myo-pen-twirl"])  # MyoSuite registers pen-twirl with 50 steps
def test_episode_truncates_at_100_steps_and_reports_success(task):
    _require_suite(task)
    env = make_env(task, seed=0)
    rollout = env.rollout(300, break_when_any_done=True)
    assert rollout.shape == (100,)
    truncated, terminated = rollout["next", "truncated"].squeeze(-1), rollout["next", "terminated"].squeeze(-1)
    assert truncated[-1] and not truncated[:-1].any() and not terminated.any()
    assert rollout["next", "success"].dtype == torch.bool and rollout["next", "success"].shape == (100, 1)
    assert torch.isfinite(rollout["next", "reward"]).all()


@pytest.mark.filterwarnings("ignore:Constant.*may be too high")  # the scripted policy's own gains
def test_metaworld_scripted_reach_succeeds():
    """MetaWorld's own scripted policy, played through make_env, reaches the goal: success is read correctly."""
    pytest.importorskip("metaworld")
    from metaworld.policies import SawyerReachV3Policy

    policy = SawyerReachV3Policy()
    env = make_env("mw-reach", seed=4)
    td = env.reset()
    successes = []
    for _ in range(100):
        action = policy.get_action(td["observation"].numpy()).clip(-1, 1)
        td = env.step(td.set("action", torch.as_tensor(action, dtype=torch.float32)))
        successes.append(td["next", "success"].item())
        td = step_mdp(td)
    assert not successes[0] and successes[-1]


def test_metaworld_reward_is_summed_over_two_sub_steps_and_goals_change_at_reset():
    pytest.importorskip("metaworld")
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    seed = 3
    env = make_env("mw-reach", seed=seed)
    raw = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE["reach-v3-goal-observable"](seed=seed)  # patched by make_env
    raw._freeze_rand_vec, raw.seeded_rand_vec = False, True
    raw.seed(seed)
    for _ in range(2):  # make_env's set_seed has already played the seed's first episode reset
        raw_obs, _ = raw.reset()
        raw.step(np.zeros(4, np.float32))  # TD-MPC2's zero-action step after each reset
    td = env.reset()
    np.testing.assert_allclose(td["observation"], raw_obs, rtol=1e-6)
    torch.manual_seed(0)
    for _ in range(3):
        action = env.action_spec.rand()
        td = env.step(td.set("action", action))
        raw_reward = 0.0
        for _ in range(2):
            raw_obs, reward, _, _, info = raw.step(action.numpy())
            raw_reward += reward
        assert td["next", "reward"].item() == pytest.approx(raw_reward, rel=1e-5)
        assert td["next", "success"].item() == bool(info["success"])
        np.testing.assert_allclose(td["next", "observation"], raw_obs, rtol=1e-5, atol=1e-6)
        td = step_mdp(td)
    goals = [env.reset()["observation"][-3:] for _ in range(2)]  # the last 3 dims are the goal position
    assert not torch.allclose(*goals)


@pytest.mark.parametrize("task", ["mw-reach", "myo-reach-hard"])
def test_seeding_is_reproducible(task):
    _require_suite(task)

    def rollout(seed):
        torch.manual_seed(0)
        return make_env(task, seed=seed).rollout(20)

    first, again, other = rollout(1), rollout(1), rollout(2)
    assert (first == again).all()
    assert not torch.allclose(first["observation"][0], other["observation"][0])


@pytest.mark.parametrize("task", ["mw-reach", "myo-reach-hard"])
def test_diffusion_actor_rollout_on_two_envs(task):
    _require_suite(task)
    env = make_env(task, seed=0, num_envs=2)
    obs_dim, action_dim = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
    wm = MBDPOWorldModel(WorldModelConfig.from_size(1, obs_dim, action_dim, latent_dim=16, mlp_dim=16, enc_dim=16, num_q=2))
    actor = DiffusionActor(wm, PlannerConfig(num_samples=8, num_elites=2, num_pi_trajs=2, steps=2))
    env.append_transform(actor.make_tensordict_primer())
    check_env_specs(env)
    rollout = env.rollout(10, actor)
    assert rollout.batch_size == (2, 10)
    assert rollout["action"].abs().max() <= 1
    assert rollout["next", "success"].dtype == torch.bool and rollout["next", "success"].shape == (2, 10, 1)
    assert not torch.allclose(rollout["observation"][0, 0], rollout["observation"][1, 0]), "sub-envs share a seed"


@pytest.mark.parametrize("task", ["mw-reach", "myo-reach"])
def test_tiny_training_run_logs_success_rate(tmp_path, task):
    _require_suite(task)
    cfg = TrainConfig(
        task=task,
        steps=200,
        seed=3,
        model_size=1,
        num_envs=1,
        eval_freq=200,
        eval_episodes=1,
        checkpoint_freq=200,
        batch_size=16,
        seed_steps=100,
        pretrain_updates=5,
        progress=False,
        threads=1,
        work_dir=str(tmp_path / "run"),
        model=ModelOverrides(latent_dim=16, mlp_dim=32, enc_dim=32),
        planner=PlannerConfig(steps=2, num_samples=8, num_elites=2, num_pi_trajs=2),
    )
    make_trainer(cfg).train()
    rows = list(csv.DictReader(open(tmp_path / "run" / "eval.csv")))
    assert [int(r["step"]) for r in rows] == [0, 200]
    assert all(0.0 <= float(r["episode_success"]) <= 1.0 for r in rows)


def test_task_names_and_unknown_names():
    tasks = set(available_tasks())
    metaworld_tasks = {t for t in tasks if t.startswith("mw-")}
    assert len(metaworld_tasks) == 50
    assert {"mw-assembly", "mw-bin-picking", "mw-door-open", "mw-pick-place", "mw-window-open"} <= metaworld_tasks
    assert {t for t in tasks if t.startswith("myo-")} == {
        f"myo-{name}{hard}" for name in ("reach", "pose", "obj-hold", "key-turn", "pen-twirl") for hard in ("", "-hard")
    }
    with pytest.raises(ValueError, match=r"Unknown MetaWorld task 'mw-door-opn'\. Did you mean 'mw-door-open'"):
        make_env("mw-door-opn")
    with pytest.raises(ValueError, match=r"Unknown MyoSuite task 'myo-pen-twirl-hardd'\. Did you mean 'myo-pen-twirl-hard'"):
        task_spec("myo-pen-twirl-hardd")


@pytest.mark.parametrize(
    "task, package, hint",
    [
        ("mw-reach", "metaworld", "pip install --no-deps metaworld==3.1.1"),
        ("myo-reach", "myosuite", "pip install -c constraints.txt -e '.[myosuite]'"),
    ],
)
def test_missing_package_says_how_to_install(monkeypatch, task, package, hint):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` raise ImportError
    with pytest.raises(SuiteUnavailableError, match=f"Task '{task}' needs .*Install it with: {re.escape(hint)}"):
        make_env(task)


def test_suite_packages_are_not_imported_with_the_envs():
    code = "import sys, torchrl_mbdpo.envs; print(sorted({'metaworld', 'myosuite'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
