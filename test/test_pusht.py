"""Push-T as a TorchRL env (pixels and state, gym-pusht's own success test) and the play dataset of DMO's
pixel world model: writing, layout, training windows, loader errors and the ``mbdpo-dmo dataset`` command."""

import json

import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)
import gymnasium
import numpy as np
import pytest
import torch
from torchrl.data import Bounded
from torchrl.envs.utils import check_env_specs

from torchrl_mbdpo.dmo.play_data import NoisyPusher, PlayDatasetError, RandomWalkPolicy, load_play_dataset, write_play_dataset
from torchrl_mbdpo.envs import make_env, task_spec
from torchrl_mbdpo.envs.pusht import PUSHT_GOAL, action_to_position, make_pusht_env, position_to_action

from helpers import TINY_PLAY, write_tiny_play_data


# ------------------------------------------------------------------------------------------ the env
def test_pusht_env_specs_pixels_and_state():
    env = make_pusht_env(image_size=32, seed=0)
    check_env_specs(env)
    spec = env.observation_spec
    assert spec["pixels"].shape == (3, 32, 32) and spec["pixels"].dtype == torch.uint8
    assert spec["state"].shape == (5,) and spec["state"].dtype == torch.float32
    assert isinstance(env.action_spec, Bounded) and (env.action_spec.space.low == -1).all() and (env.action_spec.space.high == 1).all()
    assert env.full_observation_spec["success"].dtype == torch.bool
    td = env.rollout(3)
    assert td["next", "pixels"].shape == (3, 3, 32, 32)
    assert (td["next", "pixels"] < 250).any(), "a rendered frame holds more than the white background"
    assert env.task_spec.reports_success and env.task_spec.episodic and env.task_spec.episode_length == 300


def test_pusht_matches_gym_pusht_and_rescales_actions():
    """Same seed, same actions: the TorchRL env's state and reward are gym-pusht's own (state obs), with the
    [-1, 1] action commanding the agent to 256 (a + 1)."""
    env = make_pusht_env(image_size=16, seed=3)
    raw = gymnasium.make("gym_pusht/PushT-v0", obs_type="state").unwrapped
    raw.reset(seed=3)  # TorchRL's set_seed resets with the seed; the env's first episode is the next one
    raw_state, _ = raw.reset()
    td = env.reset()
    np.testing.assert_allclose(td["state"].numpy(), raw_state, rtol=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(8):
        action = rng.uniform(-1, 1, 2).astype(np.float32)
        td["action"] = torch.as_tensor(action)
        td = env.step(td)
        raw_state, raw_reward, *_ = raw.step(action_to_position(action.astype(np.float64)))
        np.testing.assert_allclose(td["next", "state"].numpy(), raw_state, rtol=1e-4, atol=1e-3)
        assert td["next", "reward"].item() == pytest.approx(raw_reward, abs=1e-6)
        td = td["next"].exclude("reward", "done", "terminated", "truncated", "success", "coverage")
    np.testing.assert_allclose(position_to_action(action_to_position(np.array([-1.0, 0.5]))), [-1.0, 0.5])


def _place(env, agent, block, angle):
    """Put gym-pusht's agent and block at these poses (angle first: the T turns about its centre of mass)."""
    inner = env.base_env._env.unwrapped
    inner.agent.position = agent
    inner.block.angle = angle
    inner.block.position = block
    return inner


def test_pusht_success_is_the_envs_own_test():
    """With the block on the goal pose gym-pusht's test (coverage > 95 %) fires: success, termination, reward 1;
    one block-width away it does not."""
    env = make_pusht_env(image_size=16, seed=0)
    for block, expected in (((256.0, 256.0), True), ((256.0, 380.0), False)):
        td = env.reset()
        inner = _place(env, (60.0, 60.0), block, PUSHT_GOAL[2])
        td["action"] = torch.as_tensor(position_to_action(np.array([60.0, 60.0])), dtype=torch.float32)
        out = env.step(td)["next"]
        coverage = inner._get_coverage()
        assert bool(out["success"]) == expected == (coverage > 0.95)
        assert bool(out["terminated"]) == expected and bool(out["done"]) == expected
        assert out["coverage"].item() == pytest.approx(coverage, rel=1e-5)
        if expected:
            assert out["reward"].item() == pytest.approx(1.0)


def test_pusht_suite_task_state_observations():
    env = make_env("pusht", seed=0)
    check_env_specs(env)
    assert env.observation_spec["observation"].shape == (5,)
    assert "pixels" not in env.observation_spec.keys() and "coverage" not in env.observation_spec.keys()
    assert task_spec("pusht").reports_success
    with pytest.raises(ValueError, match="pusht"):
        task_spec("push-t")


# ------------------------------------------------------------------------------------------ behaviours
def _block_travel(policy, steps=40, seed=1):
    env = make_pusht_env(pixels=False, seed=seed)
    td = env.rollout(steps, policy=policy, break_when_any_done=True)
    return float((td["next", "state"][-1, 2:4] - td["state"][0, 2:4]).norm()), td


def test_scripted_pusher_moves_the_block_and_random_walk_stays_smooth():
    travel, _ = _block_travel(NoisyPusher(np.random.default_rng(0), noise=5.0))
    assert travel > 30.0, f"the scripted pusher moved the block by {travel:.1f} units only"
    _, td = _block_travel(RandomWalkPolicy(np.random.default_rng(0), jump=0.0))
    jumps = (td["action"][1:] - td["action"][:-1]).abs().max()
    assert jumps < 0.5, "a random walk without jumps moves its commanded position by small steps"


# ------------------------------------------------------------------------------------------ the play dataset
def test_play_dataset_layout(tiny_play_data):
    ds = load_play_dataset(tiny_play_data)
    info = ds.info
    assert info.episodes == TINY_PLAY["episodes"] and sum(info.behaviours.values()) == info.episodes
    assert info.rows == info.transitions + info.episodes == len(ds.rows)
    assert ds.rows["pixels"].shape[1:] == (3, 16, 16) and ds.rows["pixels"].dtype == torch.uint8
    for e in range(info.episodes):
        rows = ds.episode(e)
        assert (rows["episode"] == e).all() and torch.equal(rows["step"], torch.arange(len(rows)))
        assert rows["last"][-1] and not rows["last"][:-1].any() and (rows["action"][-1] == 0).all()
        assert (rows["policy"] == rows["policy"][0]).all()
    assert json.loads((tiny_play_data / "metadata.json").read_text())["image_size"] == 16


def test_play_dataset_rows_are_the_envs_frames(tiny_play_data):
    """Replaying episode 0's actions on a fresh env seeded as the writer was gives the stored frames and states."""
    ds = load_play_dataset(tiny_play_data)
    rows = ds.episode(0)
    env = make_pusht_env(image_size=16, seed=TINY_PLAY["seed"])
    td = env.reset()
    assert torch.equal(td["pixels"], rows["pixels"][0])
    for t in range(len(rows) - 1):
        td["action"] = rows["action"][t].clone()
        td = env.step(td)
        assert torch.equal(td["next", "pixels"], rows["pixels"][t + 1]), f"frame {t + 1}"
        torch.testing.assert_close(td["next", "state"], rows["state"][t + 1])
        assert td["next", "reward"].item() == pytest.approx(rows["next", "reward"][t].item())
        td = td["next"].exclude("reward", "done", "terminated", "truncated", "success", "coverage")


def test_play_dataset_is_deterministic(tiny_play_data, tmp_path):
    write_tiny_play_data(tmp_path / "again")
    a, b = load_play_dataset(tiny_play_data).rows, load_play_dataset(tmp_path / "again").rows
    assert torch.equal(a["pixels"], b["pixels"]) and torch.equal(a["action"], b["action"])


def test_windows_pad_episode_starts(tiny_play_data):
    ds = load_play_dataset(tiny_play_data)
    s = int(ds.episode_start[1])
    w = ds.windows(torch.tensor([s + 1, s + 5]), context=3)
    rows = ds.rows
    # at t = 1: o_0 repeated for the missing frame, its action zero
    assert w["valid"][0].tolist() == [False, True, True]
    for j, r in enumerate((s, s, s + 1)):
        assert torch.equal(w["frames"][0, j], rows["pixels"][r])
    assert (w["actions"][0, 0] == 0).all()
    torch.testing.assert_close(w["actions"][0, 1:], rows["action"][s : s + 2])
    assert torch.equal(w["target"][0], rows["pixels"][s + 2])
    # inside the episode: o_3, o_4, o_5 and a_3, a_4, a_5 -> o_6
    assert w["valid"][1].all()
    assert torch.equal(w["frames"][1], rows["pixels"][s + 3 : s + 6])
    torch.testing.assert_close(w["actions"][1], rows["action"][s + 3 : s + 6])
    assert torch.equal(w["target"][1], rows["pixels"][s + 6])
    with pytest.raises(PlayDatasetError, match="transition rows"):
        ds.windows(torch.tensor([int(ds.episode_start[2]) - 1]), context=2)  # episode 1's last row


def test_split_and_sampling_respect_held_out_episodes(tiny_play_data):
    ds = load_play_dataset(tiny_play_data)
    train, held = ds.split(1)
    assert held.tolist() == [ds.info.episodes - 1] and len(train) == ds.info.episodes - 1
    rows = ds.transition_rows(train)
    assert not torch.isin(ds.rows["episode"][rows], held).any() and len(rows) == int(ds.episode_steps[train].sum())
    with pytest.raises(PlayDatasetError, match="held_out"):
        ds.split(ds.info.episodes)


# ------------------------------------------------------------------------------------------ errors
def test_missing_dataset_error(tmp_path):
    with pytest.raises(PlayDatasetError, match=r"No play dataset at .*mbdpo-dmo dataset out="):
        load_play_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PlayDatasetError, match="is not a play dataset"):
        load_play_dataset(tmp_path / "empty")


def test_other_image_size_error(tiny_play_data):
    with pytest.raises(PlayDatasetError, match=r"holds 16x16 frames, but 64x64 .*image_size=16"):
        load_play_dataset(tiny_play_data, image_size=64)


def test_damaged_dataset_error(tiny_play_data, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_play_data, copy)
    meta = json.loads((copy / "metadata.json").read_text())
    meta["rows"] = meta["rows"] + 1000
    (copy / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(PlayDatasetError, match="damaged"):
        load_play_dataset(copy)


def test_write_refuses_a_non_empty_folder_and_bad_arguments(tiny_play_data, tmp_path):
    with pytest.raises(PlayDatasetError, match="not empty"):
        write_play_dataset(tiny_play_data, 1, image_size=16, episode_length=2, progress=False)
    with pytest.raises(PlayDatasetError, match="scripted_fraction"):
        write_play_dataset(tmp_path / "x", 1, scripted_fraction=1.5, progress=False)


def test_goal_frame_shows_the_block_covering_the_goal():
    """In the goal frame the grey T hides the light-green goal region; in a reset frame the goal shows."""
    from torchrl_mbdpo.envs.pusht import pusht_goal_frame

    green = torch.tensor([144, 238, 144]).reshape(3, 1, 1)
    visible_goal = lambda frame: int(((frame.int() - green).abs().sum(0) < 30).sum())  # noqa: E731
    goal = pusht_goal_frame(64)
    assert goal.shape == (3, 64, 64) and goal.dtype == torch.uint8
    assert visible_goal(goal) < 5 < visible_goal(make_pusht_env(image_size=64, seed=0).reset()["pixels"])


def test_stacked_frames_observation():
    """``observation_frames=3``: the last 3 frames on the channel axis (the first frame repeated after a reset), as
    the world-model env exposes them to the local pixel model."""
    env = make_pusht_env(image_size=16, seed=0, observation_frames=3)
    check_env_specs(env)
    td = env.rollout(3)
    assert td["observation"].shape == (3, 9, 16, 16) and td["observation"].dtype == torch.uint8
    assert torch.equal(td["observation"][0], td["pixels"][0].repeat(3, 1, 1))
    last = td["next", "observation"][-1]
    assert torch.equal(last, torch.cat([td["pixels"][-2], td["pixels"][-1], td["next", "pixels"][-1]]))
    with pytest.raises(ValueError, match="pixels=True"):
        make_pusht_env(pixels=False, observation_frames=3)
