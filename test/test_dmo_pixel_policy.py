"""DMO-SAPO inside the learned pixel world model (``mbdpo-dmo policy``): the diffusion env makes the forward pass,
the local pixel model the gradients (or both, the "No Diffusion" ablation); evaluation on the real Push-T env."""

import pytest
import torch

from torchrl_mbdpo.dmo.diffusion import ArchitectureError
from torchrl_mbdpo.dmo.play_data import PlayDatasetError
from torchrl_mbdpo.dmo.policy_training import PixelDMOConfig, PixelDMOTrainer, train_pixel_dmo
from torchrl_mbdpo.dmo.reward import train_reward
from torchrl_mbdpo.dmo.world_model_training import train_world_model
from torchrl_mbdpo.trainers.checkpoint import CheckpointError

from helpers import tiny_reward_train_config, tiny_world_model_train_config, write_tiny_play_data


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """A 64x64 play dataset (the pixel encoder's size), a 1-update world model (k=3) and a 1-update energy reward."""
    root = tmp_path_factory.mktemp("pixel_dmo")
    write_tiny_play_data(root / "data", image_size=64)
    train_world_model(tiny_world_model_train_config(root / "data", root / "wm", context=3, updates=1, frames_steps=2))
    train_reward(tiny_reward_train_config(root / "data", root / "rw", updates=1))
    return {
        "world_model": str(root / "wm" / "checkpoints" / "latest.pt"),
        "reward": str(root / "rw" / "checkpoints" / "latest.pt"),
        "data": str(root / "data"),
        "root": root,
    }


def _config(artifacts, work_dir, **overrides):
    run = dict(
        iterations=2,
        num_envs=2,
        horizon=3,
        episode_steps=4,
        latent_dim=32,
        mlp_dim=32,
        enc_dim=32,
        critic_updates=1,
        local_model_updates=1,
        pretrain_updates=2,
        batch_size=4,
        eval_freq=2,
        eval_episodes=1,
        eval_steps=5,
        checkpoint_freq=1,
        progress=False,
    )
    paths = {name: artifacts[name] for name in ("world_model", "reward", "data")}
    return PixelDMOConfig(work_dir=str(work_dir), **{**paths, **run, **overrides})


def test_dmo_forward_through_the_diffusion_env(artifacts, tmp_path):
    trainer = PixelDMOTrainer(_config(artifacts, tmp_path / "dmo"))
    td = trainer.rollout()
    assert trainer.world_model_samples == 2 * 3 == trainer.model_steps
    # forward values are the diffusion env's (its learned reward), the gradient is the local model's
    torch.testing.assert_close(td["next", "reward"].detach(), td["next", "global_reward"])
    assert td["next", "reward"].requires_grad and td["next", "latent"].requires_grad
    assert td["observation"].shape == (2, 3, 9, 64, 64) and td["observation"].dtype == torch.uint8
    params = list(trainer.loss.actor_network.parameters())
    grads = torch.autograd.grad(trainer.loss.actor_loss(td), params, allow_unused=True)
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    trainer.train()
    rows = trainer.log.rows()
    assert [int(r["iteration"]) for r in rows] == [0, 2]
    assert [int(r["world_model_samples"]) for r in rows] == [6, 6 + 2 * 2 * 3]  # the rollout above, then 2 iterations
    assert all(0.0 <= float(r["success_rate"]) <= 1.0 for r in rows)
    assert (tmp_path / "dmo" / "checkpoints" / "latest.pt").exists()


def test_no_diffusion_ablation_draws_no_world_model_sample(artifacts, tmp_path, monkeypatch):
    trainer = PixelDMOTrainer(_config(artifacts, tmp_path / "local", forward="local"))
    monkeypatch.setattr(trainer.global_world_model, "sample", lambda *a, **k: pytest.fail("the ablation sampled the diffusion model"))
    td = trainer.rollout()
    assert ("next", "global_reward") not in td.keys(True) and td["next", "reward"].requires_grad
    trainer.train()
    assert trainer.world_model_samples == 0 and trainer.model_steps == (2 + 1) * 2 * 3


def test_learned_reward_is_normalised_on_play_data(artifacts, tmp_path):
    trainer = PixelDMOTrainer(_config(artifacts, tmp_path / "n"))
    r = trainer._play_batch(512)["reward"]
    assert abs(r.mean().item()) < 0.2 and r.std().item() == pytest.approx(1.0, abs=0.2)
    raw = PixelDMOTrainer(_config(artifacts, tmp_path / "raw", reward_normalization=False))
    assert raw.reward_fn.shift == 0.0 and raw.reward_fn.scale == 1.0


def test_resume_continues_and_a_new_run_never_overwrites(artifacts, tmp_path):
    train_pixel_dmo(_config(artifacts, tmp_path / "run", iterations=1, eval_freq=1))
    with pytest.raises(CheckpointError, match="resume=true"):
        PixelDMOTrainer(_config(artifacts, tmp_path / "run"))
    with open(tmp_path / "run" / "eval.csv", "a") as f:  # a row written after the checkpoint by a killed run
        f.write("7,99,99,1.0,0.0,0.0,0.0\n")
    resumed = PixelDMOTrainer(_config(artifacts, tmp_path / "run", iterations=2, eval_freq=1, resume=True))
    assert [int(r["iteration"]) for r in resumed.log.rows()] == [0, 1], "rows after the checkpoint are dropped"
    assert resumed.iteration == 1 and resumed.pretrained and resumed.world_model_samples == 6
    resumed.train()
    assert [int(r["iteration"]) for r in resumed.log.rows()] == [0, 1, 2]
    with pytest.raises(CheckpointError, match="forward: checkpoint has 'diffusion', requested 'local'"):
        PixelDMOTrainer(_config(artifacts, tmp_path / "run", forward="local", resume=True))


def test_a_stop_during_pretraining_keeps_its_updates_and_a_resume_makes_the_rest(artifacts, tmp_path):
    trainer = PixelDMOTrainer(_config(artifacts, tmp_path / "run", pretrain_updates=5))
    step = trainer.local_model_step

    def signal_after_two(batch):  # what SIGTERM's handler does, arriving during the third update
        if trainer.pretrain_done == 2:
            trainer.control.signal = 15
        return step(batch)

    trainer.local_model_step = signal_after_two
    trainer.train()
    assert trainer.control.exit_code == 128 + 15 and trainer.pretrain_done == 3 and not trainer.pretrained
    resumed = PixelDMOTrainer(_config(artifacts, tmp_path / "run", pretrain_updates=5, resume=True))
    assert resumed.iteration == 0 and resumed.pretrain_done == 3 and not resumed.pretrained
    resumed.train()
    assert resumed.pretrain_done == 5 and resumed.pretrained and resumed.iteration == 2


def test_policy_input_errors(artifacts, tmp_path, tiny_play_data):
    with pytest.raises(PlayDatasetError, match="needs reward=<...>"):
        PixelDMOTrainer(PixelDMOConfig(world_model=artifacts["world_model"], data=artifacts["data"]))
    with pytest.raises(ValueError, match="No Diffusion"):
        PixelDMOTrainer(_config(artifacts, tmp_path / "x", forward="simulator"))
    train_reward(tiny_reward_train_config(tiny_play_data, tmp_path / "rw16", updates=1))
    with pytest.raises(ArchitectureError, match="scores 16x16 frames, the world model makes 64x64"):
        PixelDMOTrainer(_config(artifacts, tmp_path / "x", reward=str(tmp_path / "rw16" / "checkpoints" / "latest.pt")))
    with pytest.raises(PlayDatasetError, match="holds 16x16 frames, but 64x64"):
        PixelDMOTrainer(_config(artifacts, tmp_path / "x", data=str(tiny_play_data)))


# ------------------------------------------------------------------------------------------ the PPO baseline
def _ppo_config(artifacts, work_dir, **overrides):
    from torchrl_mbdpo.dmo.ppo import PPOConfig

    run = dict(
        iterations=2,
        num_envs=2,
        rollout_steps=3,
        episode_steps=4,
        hidden=16,
        ppo_epochs=1,
        minibatch_size=3,
        eval_freq=2,
        eval_episodes=1,
        eval_steps=5,
        checkpoint_freq=1,
        progress=False,
    )
    paths = {name: artifacts[name] for name in ("world_model", "reward", "data")}
    return PPOConfig(work_dir=str(work_dir), **{**paths, **run, **overrides})


def test_ppo_is_torchrl_clip_ppo_in_the_diffusion_env(artifacts, tmp_path):
    from torchrl.objectives import ClipPPOLoss
    from torchrl.objectives.value import GAE

    from torchrl_mbdpo.dmo.diffusion_env import DiffusionWorldModelEnv
    from torchrl_mbdpo.dmo.ppo import PPOTrainer

    trainer = PPOTrainer(_ppo_config(artifacts, tmp_path / "ppo"))
    assert isinstance(trainer.loss, ClipPPOLoss) and isinstance(trainer.advantage, GAE)
    assert isinstance(trainer.collector.env, DiffusionWorldModelEnv)
    before = [p.clone() for p in trainer.actor.parameters()]
    trainer.train()
    assert trainer.world_model_samples == 2 * 2 * 3
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.actor.parameters())), "the actor was updated"
    rows = trainer.log.rows()
    assert [int(r["iteration"]) for r in rows] == [0, 2] and [int(r["world_model_samples"]) for r in rows] == [0, 12]
    assert 0.0 <= float(rows[-1]["success_rate"]) <= 1.0


def test_ppo_resume_and_errors(artifacts, tmp_path):
    from torchrl_mbdpo.dmo.ppo import PPOConfig, PPOTrainer, train_ppo

    train_ppo(_ppo_config(artifacts, tmp_path / "ppo", iterations=1, eval_freq=1))
    with pytest.raises(CheckpointError, match="resume=true"):
        PPOTrainer(_ppo_config(artifacts, tmp_path / "ppo"))
    resumed = PPOTrainer(_ppo_config(artifacts, tmp_path / "ppo", eval_freq=1, resume=True))
    assert resumed.iteration == 1 and resumed.world_model_samples == 6
    resumed.train()
    assert [int(r["iteration"]) for r in resumed.log.rows()] == [0, 1, 2]
    with pytest.raises(CheckpointError, match="hidden: checkpoint has 16, requested 32"):
        PPOTrainer(_ppo_config(artifacts, tmp_path / "ppo", hidden=32, resume=True))
    with pytest.raises(PlayDatasetError, match="needs world_model=<...>"):
        PPOTrainer(PPOConfig(reward=artifacts["reward"], data=artifacts["data"]))


# ------------------------------------------------------------------------------------------ the comparison
TINY_DMO = dict(
    iterations=1,
    num_envs=2,
    horizon=2,
    episode_steps=4,
    latent_dim=32,
    mlp_dim=32,
    enc_dim=32,
    critic_updates=1,
    local_model_updates=1,
    pretrain_updates=1,
    batch_size=4,
    eval_freq=1,
    eval_episodes=1,
    eval_steps=3,
)
TINY_PPO = dict(
    iterations=1,
    num_envs=2,
    rollout_steps=2,
    episode_steps=4,
    hidden=16,
    ppo_epochs=1,
    minibatch_size=2,
    eval_freq=1,
    eval_episodes=1,
    eval_steps=3,
)


def test_comparison_trains_reads_and_plots(artifacts, tmp_path, monkeypatch):
    import csv

    from torchrl_mbdpo.dmo import policy_training, ppo
    from torchrl_mbdpo.dmo.compare import PixelCompareConfig, compare_pixel_algos

    cfg = PixelCompareConfig(
        world_model=artifacts["world_model"],
        reward=artifacts["reward"],
        data=artifacts["data"],
        seeds=[0],
        root=str(tmp_path / "cmp"),
        dmo=TINY_DMO,
        ppo=TINY_PPO,
        progress=False,
    )
    summary = compare_pixel_algos(cfg)
    assert [r["algo"] for r in summary] == ["dmo", "no_diffusion", "ppo"]
    by_algo = {r["algo"]: r for r in summary}
    assert by_algo["dmo"]["world_model_samples"] == 4 and by_algo["no_diffusion"]["world_model_samples"] == 0
    assert by_algo["no_diffusion"]["samples"] == 4 and by_algo["ppo"]["samples"] == 4
    with open(tmp_path / "cmp" / "comparison.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["algo"], r["iteration"]) for r in rows} == {(a, i) for a in ("dmo", "no_diffusion", "ppo") for i in ("0", "1")}
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 10_000
    # finished runs are read, not trained again
    monkeypatch.setattr(policy_training.PixelDMOTrainer, "train", lambda self: pytest.fail("retrained a finished run"))
    monkeypatch.setattr(ppo.PPOTrainer, "train", lambda self: pytest.fail("retrained a finished run"))
    assert compare_pixel_algos(cfg) == summary


def test_comparison_errors(tmp_path):
    from torchrl_mbdpo.dmo.compare import PixelCompareConfig, compare_pixel_algos

    with pytest.raises(ValueError, match="Unknown algos"):
        compare_pixel_algos(PixelCompareConfig(algos=["dmo", "sac"], run=False))
    with pytest.raises(PlayDatasetError, match="needs world_model=<...>, reward=<...>, data=<...>"):
        compare_pixel_algos(PixelCompareConfig(root=str(tmp_path)))
    with pytest.raises(ValueError, match="No evaluation file"):
        compare_pixel_algos(PixelCompareConfig(root=str(tmp_path), run=False))
