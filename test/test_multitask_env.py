"""Tests for multi-task envs (padding and task ids) and the TD-MPC2 task-set tables."""

import argparse
import ast
import os
import pickle
from functools import partial

os.environ.setdefault("MUJOCO_GL", "egl")

import pytest
import torch
from torchrl.envs import SerialEnv
from torchrl.envs.utils import check_env_specs

import torchrl_mbdpo.data.task_sets as task_sets_module
from torchrl_mbdpo.data.task_sets import EPISODE_ROWS, PADDED_DIMS, TASK_DIMS, TASK_SETS, task_dims, task_set_of
from torchrl_mbdpo.envs import make_env, make_multitask_env, observation_size
from torchrl_mbdpo.envs.multitask import PadAction, PadObservation, TaskPrimer

OBS, ACT = PADDED_DIMS["mt30"]


@pytest.mark.parametrize("num_envs", [1, 2])
def test_specs(num_envs):
    env = make_multitask_env("cartpole-swingup", 10, OBS, ACT, num_envs=num_envs)
    check_env_specs(env)
    batch = env.batch_size
    assert env.observation_spec["observation"].shape == (*batch, OBS)
    assert env.action_spec.shape == (*batch, ACT)
    assert (env.action_spec.space.low == -1).all() and (env.action_spec.space.high == 1).all()
    assert env.observation_spec["task"].shape == batch and env.observation_spec["task"].dtype == torch.long
    assert env.task_spec.name == "cartpole-swingup" and env.task_spec.episode_length == 500
    assert (env.task_index, env.obs_dim, env.action_dim) == (10, 5, 1)


@pytest.mark.parametrize("num_envs", [1, 2])
def test_rollout_pads_and_tags(num_envs):
    env = make_multitask_env("cartpole-swingup", 10, OBS, ACT, num_envs=num_envs)
    td = env.rollout(5, break_when_any_done=False)
    for obs in (td["observation"], td["next", "observation"]):
        assert obs.shape[-1] == OBS
        assert (obs[..., 5:] == 0).all() and (obs[..., :5] != 0).any()
    assert (td["task"] == 10).all() and (td["next", "task"] == 10).all()
    assert td["action"].shape[-1] == ACT and (td["action"].abs() <= 1).all()
    assert torch.isfinite(td["next", "reward"]).all()
    assert (td["next", "step_count"][..., -1, 0] == 5).all()


def test_base_env_receives_its_own_action_dims():
    env = make_multitask_env("reacher-easy", 4, OBS, ACT)
    base, sent = env.base_env, []
    base_step = base._step
    base._step = lambda td: (sent.append(td["action"].clone()), base_step(td))[1]
    action = torch.tensor([0.5, -0.5, 1.0, 1.0, -1.0, 1.0])
    env.step(env.reset().set("action", action))
    assert base.action_spec.shape[-1] == 2
    torch.testing.assert_close(sent[0], action[:2], check_dtype=False)  # DMControl takes float64


def test_mixed_tasks_in_one_batch():
    env = SerialEnv(
        2, [partial(make_multitask_env, "cartpole-swingup", 10, OBS, ACT), partial(make_multitask_env, "reacher-easy", 4, OBS, ACT, seed=1)]
    )
    td = env.rollout(3)
    assert td["observation"].shape == (2, 3, OBS)
    assert td["task"][:, 0].tolist() == [10, 4]


def test_sizes_too_small_raise():
    with pytest.raises(ValueError, match="obs dim 24 .*obs_size=17,"):
        make_multitask_env("walker-walk", 0, 17, 6)
    with pytest.raises(ValueError, match="action dim 2,.*action_size=1"):
        make_multitask_env("reacher-easy", 4, OBS, 1)


def test_transforms_pickle():  # ParallelEnv ships the transforms to its workers
    for transform in (PadObservation(OBS), PadAction(ACT), TaskPrimer(3)):
        clone = pickle.loads(pickle.dumps(transform))
        assert type(clone) is type(transform)
    assert pickle.loads(pickle.dumps(TaskPrimer(3))).task_index == 3


def test_task_sets():
    assert len(TASK_SETS["mt30"]) == 30 and len(TASK_SETS["mt80"]) == 80
    assert TASK_SETS["mt80"][:30] == TASK_SETS["mt30"]
    assert len(set(TASK_SETS["mt80"])) == 80 and all(t.startswith("mw-") for t in TASK_SETS["mt80"][30:])
    assert list(TASK_DIMS) == TASK_SETS["mt80"]
    assert set(EPISODE_ROWS) == set(PADDED_DIMS) == set(TASK_SETS)
    assert task_set_of(["walker-walk", "pendulum-spin"]) == "mt30"
    assert task_set_of(["walker-walk", "mw-reach"]) == "mt80"
    assert task_set_of(["walker-walk", "humanoid-walk"]) is None


@pytest.mark.parametrize("name", list(TASK_SETS))
def test_padded_dims_are_the_largest_of_the_set(name):
    dims = [TASK_DIMS[task] for task in TASK_SETS[name]]
    assert (max(d[0] for d in dims), max(d[1] for d in dims)) == PADDED_DIMS[name]


@pytest.mark.parametrize("task", ["cartpole-swingup", "pendulum-swingup", "reacher-easy", "mw-reach"])
def test_task_dims_match_make_env(task):
    if task.startswith("mw-"):
        pytest.importorskip("metaworld")
    env = make_env(task)
    assert task_dims(task) == (observation_size(env), env.action_spec.shape[-1], env.task_spec.episode_length)


def test_task_dims_unknown_name():
    with pytest.raises(ValueError, match="Did you mean 'mw-reach'"):
        task_dims("mw-rech")


def test_task_sets_stand_alone():  # data tools must read the tables without MuJoCo or the env stack
    tree = ast.parse(open(task_sets_module.__file__).read())
    imported = [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [m for m in imported if "envs" in m or m.startswith(("torchrl", "."))], imported


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    args, unknown = parser.parse_known_args()
    pytest.main([__file__, "--capture", "no", "--exitfirst"] + unknown)
