"""The reward of DMO's world-model env: the Bradley-Terry contrastive energy f(o | o_start, o_goal) learned from the
play dataset's frames alone, the real-env-reward ablation, their training and their use as the model env's reward."""

import math

import pytest
import torch

from torchrl_mbdpo.dmo.diffusion import ArchitectureError, DiffusionWorldModel
from torchrl_mbdpo.dmo.diffusion_env import DiffusionWorldModelEnv, play_data_start_sampler
from torchrl_mbdpo.dmo.functional import bradley_terry_loss
from torchrl_mbdpo.dmo.play_data import load_play_dataset
from torchrl_mbdpo.dmo.reward import FrameReward, FrameScorer, RewardConfig, RewardTrainer, load_frame_reward, train_reward
from torchrl_mbdpo.dmo.world_model_training import train_world_model
from torchrl_mbdpo.envs.pusht import PUSHT_GOAL, pusht_dense_reward, pusht_goal_frame
from torchrl_mbdpo.trainers.checkpoint import CheckpointError

from helpers import tiny_diffusion_config, tiny_reward_train_config, tiny_world_model_train_config


def test_bradley_terry_loss_by_hand():
    assert bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0])).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert bradley_terry_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(math.log(2))
    assert bradley_terry_loss(torch.tensor([5.0]), torch.tensor([0.0])) < bradley_terry_loss(torch.tensor([0.0]), torch.tensor([5.0]))


def test_progress_pairs_lie_in_order_inside_one_episode(tiny_play_data):
    ds = load_play_dataset(tiny_play_data)
    pairs = ds.progress_pairs(200, torch.Generator().manual_seed(0))
    s, i, j, g = pairs["rows"].unbind(1)
    episode = ds.rows["episode"]
    assert (episode[s] == episode[g]).all() and (episode[i] == episode[s]).all() and (episode[j] == episode[s]).all()
    assert ((s <= i) & (i < j) & (j <= g) & (g >= s + 2)).all()
    assert torch.equal(pairs["later"], ds.rows["pixels"][j]) and torch.equal(pairs["goal"], ds.rows["pixels"][g])
    assert (j == g).any() and (i == s).any(), "the ends of a stretch are drawn too"
    held = ds.progress_pairs(50, torch.Generator().manual_seed(0), episodes=torch.tensor([3]))
    assert (episode[held["rows"]] == 3).all()


def test_energy_learns_to_rank_a_progress_video():
    """A video whose frames brighten over time: after training on its pairs the energy orders held-out pairs."""
    torch.manual_seed(0)
    scorer = FrameScorer(RewardConfig(image_size=16, kind="energy", channels=(8, 8), hidden=16))
    opt = torch.optim.Adam(scorer.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def pairs(n):
        t = torch.rand(n, 2, generator=g).sort(1).values
        frame = lambda v: (v[:, None, None, None] * 200 + torch.rand(n, 3, 16, 16, generator=g) * 40).to(torch.uint8)  # noqa: E731
        start, goal = frame(torch.zeros(n)), frame(torch.ones(n))
        return frame(t[:, 0]), frame(t[:, 1]), start, goal

    def accuracy():
        earlier, later, start, goal = pairs(200)
        with torch.no_grad():
            return (scorer(later, start, goal) > scorer(earlier, start, goal)).float().mean().item()

    before = accuracy()
    for _ in range(60):
        earlier, later, start, goal = pairs(32)
        loss = bradley_terry_loss(scorer(later, start, goal), scorer(earlier, start, goal))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert accuracy() > max(0.9, before)


def test_energy_training_reads_no_action_and_no_reward(tiny_play_data, tmp_path):
    trainer = RewardTrainer(tiny_reward_train_config(tiny_play_data, tmp_path / "rw"))
    trainer.dataset.rows = trainer.dataset.rows.exclude("action", ("next", "reward"))
    assert torch.isfinite(trainer.training_loss())


@pytest.mark.parametrize("kind", ["energy", "env", "dense"])
def test_reward_training_curve_checkpoint_and_resume(tiny_play_data, tmp_path, kind):
    straight = train_reward(tiny_reward_train_config(tiny_play_data, tmp_path / "a", kind=kind))
    rows = straight.log.rows()
    assert [int(r["update"]) for r in rows] == [0, 3, 6] and all(r["env_reward_corr"] for r in rows)
    assert bool(rows[0]["held_out_accuracy"]) == (kind == "energy")
    assert (tmp_path / "a" / "loss.png").exists() and (tmp_path / "a" / "checkpoints" / "latest.pt").exists()
    train_reward(tiny_reward_train_config(tiny_play_data, tmp_path / "b", kind=kind, updates=3))
    resumed = train_reward(tiny_reward_train_config(tiny_play_data, tmp_path / "b", kind=kind, resume=True))
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)


def test_dense_reward_is_zero_on_the_goal_and_falls_with_each_distance():
    solved = torch.tensor([256.0, 256.0, *PUSHT_GOAL])  # the agent on the block, the block on the goal pose
    assert pusht_dense_reward(solved).item() == pytest.approx(0.0, abs=1e-6)
    assert pusht_dense_reward(solved + torch.tensor([0, 0, 0, 0, 2 * math.pi])).item() == pytest.approx(0.0, abs=1e-5)
    turned = pusht_dense_reward(solved + torch.tensor([0, 0, 0, 0, math.pi])).item()
    assert turned == pytest.approx(-1.0, abs=1e-5), "the angle error wraps to [0, pi]"
    agent_away = pusht_dense_reward(solved + torch.tensor([128.0, 0, 0, 0, 0])).item()
    block_away = pusht_dense_reward(solved + torch.tensor([128.0, 0, 128.0, 0, 0])).item()
    assert agent_away == pytest.approx(-0.25) and block_away == pytest.approx(-0.5)
    assert pusht_dense_reward(torch.stack([solved, solved])).shape == (2, 1)


def test_dense_reward_kind_regresses_the_next_states_dense_reward(tiny_play_data, tmp_path):
    trainer = RewardTrainer(tiny_reward_train_config(tiny_play_data, tmp_path / "rw", kind="dense"))
    rows = trainer.dataset.transition_rows(trainer.train_episodes)[:20]
    frames = trainer._frames_and_rewards(rows)
    assert torch.equal(frames["target"], pusht_dense_reward(trainer.dataset.rows["state"][rows + 1]))
    assert torch.equal(frames["reward"], trainer.dataset.rows["next", "reward"][rows].float())


def _model_env(tiny_play_data, reward_fn, batch_size=2):
    torch.manual_seed(0)
    model = DiffusionWorldModel(tiny_diffusion_config()).eval()
    ds = load_play_dataset(tiny_play_data)
    return DiffusionWorldModelEnv(model, play_data_start_sampler(ds, 2), batch_size=batch_size, max_episode_steps=5, reward_fn=reward_fn)


@pytest.mark.parametrize("kind", ["energy", "env", "dense"])
def test_learned_reward_is_the_model_envs_reward(tiny_play_data, tmp_path, kind):
    trainer = train_reward(tiny_reward_train_config(tiny_play_data, tmp_path / "rw", kind=kind, updates=2))
    reward_fn, state = load_frame_reward(tmp_path / "rw" / "checkpoints" / "latest.pt", image_size=16)
    assert state["model_config"]["kind"] == kind
    env = _model_env(tiny_play_data, reward_fn)
    rollout = env.rollout(3)
    nxt = rollout["next"]
    assert (nxt["start_pixels"] == rollout["pixels"][:, :1]).all(), "the start frame stays the episode's first"
    with torch.no_grad():
        for t in range(3):
            step = nxt[:, t]
            if kind == "energy":
                goal = pusht_goal_frame(16).expand(2, 3, 16, 16)
                expected = trainer.model(step["pixels"], step["start_pixels"], goal)
            else:
                expected = trainer.model(step["pixels"])
            torch.testing.assert_close(step["reward"], expected)


def test_reward_errors(tiny_play_data, tmp_path):
    with pytest.raises(ValueError, match="kind must be one of"):
        RewardTrainer(tiny_reward_train_config(tiny_play_data, tmp_path / "x", kind="sparse"))
    with pytest.raises(ValueError, match="needs the goal frame"):
        FrameReward(FrameScorer(RewardConfig(image_size=16)))
    with pytest.raises(ValueError, match="start and goal frames"):
        FrameScorer(RewardConfig(image_size=16))(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"frames \(B, 3, 16, 16\)"):
        FrameScorer(RewardConfig(image_size=16, kind="env"))(torch.zeros(1, 3, 32, 32, dtype=torch.uint8))
    train_reward(tiny_reward_train_config(tiny_play_data, tmp_path / "rw", updates=1))
    ckpt = tmp_path / "rw" / "checkpoints" / "latest.pt"
    with pytest.raises(ArchitectureError, match="scores 16x16 frames, the world model makes 64x64"):
        load_frame_reward(ckpt, image_size=64)
    with pytest.raises(ArchitectureError, match=r"channels: checkpoint has \[8, 8\], requested \[8, 16\]"):
        RewardTrainer(tiny_reward_train_config(tiny_play_data, tmp_path / "rw", channels=[8, 16], resume=True))
    train_world_model(tiny_world_model_train_config(tiny_play_data, tmp_path / "wm", updates=1))
    with pytest.raises(CheckpointError, match="is not a reward checkpoint"):
        load_frame_reward(tmp_path / "wm" / "checkpoints" / "latest.pt")
    with pytest.raises(CheckpointError, match="is not a reward checkpoint"):
        RewardTrainer(tiny_reward_train_config(tiny_play_data, tmp_path / "wm", resume=True))


def test_reward_command(cli, tiny_play_data):
    out = cli(
        "dmo_main",
        "reward",
        f"data={tiny_play_data}",
        "kind=env",
        "work_dir=rw",
        "updates=2",
        "eval_freq=1",
        "held_out=1",
        "held_out_pairs=4",
        "batch_size=4",
        "channels=[8,8]",
        "hidden=16",
        "progress=false",
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    assert "correlation with the env's reward" in out.stdout
