"""The state-space path of DMO's world-model pipeline (``obs=state``): a states-only play dataset, the EDM world model of
the next Push-T state, its open-loop test, the world-model env over states, the state reward, DMO / No Diffusion / PPO
in it and the real-env evaluation with the paper's trajectory-quality numbers."""

import math

import pytest
import torch
from torchrl.envs.utils import check_env_specs

from torchrl_mbdpo.dmo.diffusion import ArchitectureError
from torchrl_mbdpo.dmo.diffusion_env import DiffusionWorldModelEnv, play_data_start_sampler
from torchrl_mbdpo.dmo.open_loop import metric_lines, open_loop_metrics
from torchrl_mbdpo.dmo.play_data import PlayDatasetError, load_play_dataset
from torchrl_mbdpo.dmo.policy_run import curvature, evaluate_on_pusht, make_eval_env, straightness
from torchrl_mbdpo.dmo.policy_training import PixelDMOConfig, PixelDMOTrainer
from torchrl_mbdpo.dmo.ppo import PPOConfig, PPOTrainer
from torchrl_mbdpo.dmo.reward import train_reward
from torchrl_mbdpo.dmo.state_model import StateDiffusionConfig, StateDiffusionWorldModel, features_to_state, state_features
from torchrl_mbdpo.dmo.world_model_training import load_world_model, train_world_model

from helpers import tiny_reward_train_config, tiny_world_model_train_config, write_tiny_play_data


@pytest.fixture(scope="module")
def state_data(tmp_path_factory):
    """A states-only play dataset: 40 episodes of 30 steps (no frame rendered)."""
    path = tmp_path_factory.mktemp("state_play") / "data"
    write_tiny_play_data(path, episodes=40, episode_length=30, pixels=False)
    return path


@pytest.fixture(scope="module")
def artifacts(state_data, tmp_path_factory):
    """A state world model (k=3) trained for 600 updates and a 50-update energy reward over states."""
    root = tmp_path_factory.mktemp("state_dmo")
    trainer = train_world_model(
        tiny_world_model_train_config(
            state_data, root / "wm", obs="state", context=3, hidden=64, layers=2, updates=600, batch_size=64, eval_freq=300, held_out=8
        )
    )
    train_reward(tiny_reward_train_config(state_data, root / "rw", obs="state", updates=50, batch_size=64, held_out=8))
    return {
        "trainer": trainer,
        "world_model": str(root / "wm" / "checkpoints" / "latest.pt"),
        "reward": str(root / "rw" / "checkpoints" / "latest.pt"),
        "data": str(state_data),
    }


def test_state_features_round_trip_and_angle_wrap():
    state = torch.tensor([[0.0, 512.0, 256.0, 100.0, 6.2], [10.0, 20.0, 30.0, 40.0, 0.1]])
    f = state_features(state)
    assert f.shape == (2, 6) and f.abs().max() <= 1.0
    torch.testing.assert_close(features_to_state(f), state)
    near_2pi, near_0 = state_features(torch.tensor([0, 0, 0, 0, 2 * math.pi - 1e-3])), state_features(torch.tensor([0, 0, 0, 0, 1e-3]))
    assert (near_2pi - near_0).abs().max() < 1e-2  # 0 and 2 pi meet


def test_states_only_dataset(state_data):
    ds = load_play_dataset(state_data)
    assert not ds.info.pixels and ds.info.image_size == 0 and "pixels" not in ds.rows.keys()
    w = ds.windows(ds.transition_rows()[:5], 3, "state")
    assert w["frames"].shape == (5, 3, 5) and w["target"].shape == (5, 5)
    torch.testing.assert_close(w["target"], w["target_state"])
    with pytest.raises(PlayDatasetError, match="holds states only"):
        ds.windows(ds.transition_rows()[:5], 3)
    with pytest.raises(PlayDatasetError, match="holds states only"):
        load_play_dataset(state_data, image_size=64)


def test_state_world_model_beats_copying_open_loop(artifacts, state_data):
    trainer = artifacts["trainer"]
    model, state = load_world_model(artifacts["world_model"])
    assert isinstance(model, StateDiffusionWorldModel) and state["kind"] == "dmo_state_world_model"
    assert (model.delta_std > 0).all() and not torch.equal(model.delta_std, torch.ones(6))
    metrics = trainer.open_loop  # written by the run's final evaluation, also to open_loop.json
    assert (trainer.checkpoint_path.parent / "open_loop.json").exists() and (trainer.checkpoint_path.parent / "trajectories.png").exists()
    assert metrics["episodes"] == 8
    for h in (10, 20):
        entry = metrics[f"h{h}"]
        assert set(entry) == {"changed_mse", "agent_error", "block_error"}
        assert entry["agent_error"]["model"] < 0.5 * entry["agent_error"]["copy"], entry
        assert entry["changed_mse"]["model"] < entry["changed_mse"]["copy"], entry
    assert all("open loop" in line for line in metric_lines(metrics))
    # an untrained model is no better than copying the agent's position
    untrained = StateDiffusionWorldModel(StateDiffusionConfig(context=3, hidden=64, layers=2))
    ds = load_play_dataset(state_data)
    fresh = open_loop_metrics(untrained, ds, trainer.eval_episodes)
    assert fresh["h10"]["agent_error"]["model"] > 0.5 * fresh["h10"]["agent_error"]["copy"]


def test_state_world_model_env_specs_and_rollout(artifacts, state_data):
    model, _ = load_world_model(artifacts["world_model"])
    ds = load_play_dataset(state_data)
    env = DiffusionWorldModelEnv(
        model, play_data_start_sampler(ds, 3, key="state"), batch_size=3, max_episode_steps=4, observation_frames=3
    )
    check_env_specs(env)
    td = env.rollout(6, break_when_any_done=False)
    assert td["state"].shape == (3, 6, 5) and td["observation"].shape == (3, 6, 18) and td["start_state"].dtype == torch.float32
    torch.testing.assert_close(td["observation"][:, 0, -6:], state_features(td["state"][:, 0]))
    assert td["next", "truncated"][:, 3].all()


def test_real_eval_env_reads_like_the_model_env():
    env = make_eval_env("state", image_size=None, seed=0, steps=5)
    check_env_specs(env)
    td = env.rollout(3)
    assert td["observation"].shape == (3, 18)
    torch.testing.assert_close(td["observation"][0], state_features(td["state"][0]).repeat(3))  # padded at the reset
    torch.testing.assert_close(td["next", "observation"][1, -6:], state_features(td["next", "state"][1]))
    env.close()


def test_straightness_and_curvature():
    line = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    assert straightness(line) == pytest.approx(1.0) and curvature(line) == pytest.approx(0.0)
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    assert straightness(square) == pytest.approx(0.0)
    assert curvature(square) == pytest.approx(3 * (math.pi / 2) / 4)  # three quarter turns over a length of 4
    zigzag = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [2.0, 1.0], [2.0, 0.0]])  # left, right, right: turns do not cancel
    assert curvature(zigzag) == pytest.approx(3 * (math.pi / 2) / 4) and straightness(zigzag) == pytest.approx(0.5)
    assert math.isnan(straightness(torch.zeros(3, 2))) and math.isnan(curvature(torch.zeros(3, 2)))


def _run(artifacts, work_dir, **overrides):
    run = dict(iterations=2, num_envs=2, episode_steps=4, eval_freq=2, eval_episodes=1, eval_steps=5, checkpoint_freq=1, progress=False)
    paths = {name: artifacts[name] for name in ("world_model", "reward", "data")}
    return dict(work_dir=str(work_dir), **{**paths, **run, **overrides})


@pytest.mark.parametrize("forward", ["diffusion", "local"])
def test_dmo_in_the_state_world_model(artifacts, tmp_path, forward):
    cfg = PixelDMOConfig(
        **_run(artifacts, tmp_path / forward, forward=forward),
        horizon=3,
        latent_dim=16,
        mlp_dim=16,
        enc_dim=16,
        critic_updates=1,
        local_model_updates=1,
        pretrain_updates=2,
        batch_size=8,
    )
    trainer = PixelDMOTrainer(cfg)
    assert trainer.local_model.cfg.obs_type == "state" and trainer.local_model.cfg.obs_dim == 18
    td = trainer.rollout()
    assert td["next", "reward"].requires_grad
    if forward == "diffusion":  # the diffusion env's observations: the features of the last 3 states
        assert td["observation"].shape == (2, 3, 18)
    trainer.train()
    rows = trainer.log.rows()
    assert [int(r["iteration"]) for r in rows] == [0, 2]
    assert 0.0 <= float(rows[-1]["final_coverage"]) <= 1.0 and 0.0 <= float(rows[-1]["straightness"]) <= 1.0
    assert trainer.world_model_samples == (3 * 2 * 3 if forward == "diffusion" else 0)


def test_ppo_in_the_state_world_model(artifacts, tmp_path):
    trainer = PPOTrainer(PPOConfig(**_run(artifacts, tmp_path / "ppo"), rollout_steps=4, hidden=16, minibatch_size=4, ppo_epochs=1))
    trainer.train()
    assert trainer.world_model_samples == 2 * 2 * 4
    assert float(trainer.log.rows()[-1]["mean_return"]) >= 0.0


def test_a_pixel_reward_does_not_score_a_state_world_model(artifacts, tiny_play_data, tmp_path):
    train_reward(tiny_reward_train_config(tiny_play_data, tmp_path / "pixel_rw", updates=1))
    cfg = PixelDMOConfig(**_run(artifacts, tmp_path / "x", reward=str(tmp_path / "pixel_rw" / "checkpoints" / "latest.pt")))
    with pytest.raises(ArchitectureError, match="scores pixels, the world model makes state"):
        PixelDMOTrainer(cfg)
    assert not (tmp_path / "x").exists()


def test_evaluation_reports_trajectory_quality_of_a_scripted_policy():
    """A policy that commands a fixed point: the agent goes there in a straight line (straightness near 1)."""

    class Fixed:
        def __call__(self, td):
            td["action"] = torch.tensor([0.5, 0.5])
            return td

    out = evaluate_on_pusht(Fixed(), image_size=None, obs="state", seed=0, step=0, episodes=2, steps=30)
    assert out["straightness"] > 0.9 and out["curvature"] >= 0 and 0 <= out["final_coverage"] <= 1 and out["success_rate"] == 0
    assert math.isnan(out["steps_to_success"])
