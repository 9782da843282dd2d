"""Pixel observations: 64x64 RGB DMControl renders, frame stacking, conv encoder with shift augmentation."""

import os

import pytest
import torch
import torch.nn.functional as F
from torchrl.collectors import Collector
from torchrl.envs.utils import check_env_specs

from torchrl_mbdpo.envs import make_env
from torchrl_mbdpo.modules.layers import PixelEncoder, ShiftAug
from torchrl_mbdpo.trainers.agent import build_agent, load_agent
from torchrl_mbdpo.trainers.optimization import make_optimizers, update
from torchrl_mbdpo.trainers.trainer import make_trainer


def test_shift_aug_is_a_random_crop_of_the_replicate_padded_image():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 8, 8)
    y = ShiftAug(pad=2)(x)
    padded = F.pad(x, (2,) * 4, mode="replicate")
    offsets = []
    for i in range(16):
        found = [(a, b) for a in range(5) for b in range(5) if torch.equal(y[i], padded[i, :, a : a + 8, b : b + 8])]
        assert found, f"image {i} is not a crop"
        offsets.append(found[0])
    assert len(set(offsets)) > 1  # the offsets differ between images


def test_pixel_encoder_matches_tdmpc2_at_latent_512_and_projects_otherwise():
    official = PixelEncoder(9, 512)
    assert sum(p.numel() for p in official.parameters()) == 58272  # TD-MPC2's conv stack, no projection
    obs = torch.randint(0, 256, (4, 2, 9, 64, 64), dtype=torch.uint8)
    z = official(obs)
    assert z.shape == (4, 2, 512)
    torch.testing.assert_close(z.view(4, 2, 64, 8).sum(-1), torch.ones(4, 2, 64))  # SimNorm groups sum to 1
    assert PixelEncoder(9, 64)(obs[0]).shape == (2, 64)


def test_rgb_env_stacks_three_64x64_frames_as_uint8():
    env = make_env("cartpole-swingup", obs="rgb", seed=0, num_envs=2)
    check_env_specs(env)
    td = env.rollout(4)
    obs, nxt = td["observation"], td["next", "observation"]
    assert obs.shape == (2, 4, 9, 64, 64) and obs.dtype == torch.uint8
    assert torch.equal(nxt[:, 0, :6], obs[:, 0, 3:])  # the oldest frame drops out
    assert torch.equal(obs[:, 1], nxt[:, 0])
    assert obs.float().std() > 5  # a real render, not a blank image
    assert env.action_spec.dtype == torch.float32 and env.action_spec.space.high.max() == 1


def test_rgb_is_refused_for_non_dmcontrol_tasks():
    with pytest.raises(ValueError, match="obs='rgb' is available for DMControl tasks"):
        make_env("gym:Pendulum-v1", obs="rgb")


def test_rgb_agent_collects_plans_and_updates(tiny_config):
    """The rgb path end to end at a tiny size: collector + planner on rendered frames, an update on stored
    uint8 slices (a full trainer run would spend minutes on 500-step evaluation episodes of rendering)."""
    torch.manual_seed(0)
    cfg = tiny_config(task="cartpole-swingup", obs="rgb", num_envs=2)
    env = make_env(cfg.task, seed=0, num_envs=2, obs="rgb")
    world_model, loss, actor = build_agent(cfg, 9, 1, env.task_spec)
    assert world_model.cfg.obs_type == "rgb" and world_model.encode_obs(env.reset()["observation"]).shape == (2, 16)
    env.append_transform(actor.make_tensordict_primer())
    collector = Collector(env, actor, frames_per_batch=12, total_frames=12)
    batch = next(iter(collector)).reshape(2, 6)[:, :3]  # [B, H] slices of stacked uint8 frames
    collector.shutdown()
    assert batch["observation"].dtype == torch.uint8 and batch["observation"].shape == (2, 3, 9, 64, 64)
    before = [p.clone() for p in world_model.encoder.parameters()]
    info = update(loss, batch, *make_optimizers(loss))
    assert info["nonfinite_skipped"] == 0 and torch.isfinite(info["loss_consistency"])
    assert any(not torch.equal(a, b) for a, b in zip(before, world_model.encoder.parameters()))  # the convs learn


def test_obs_rgb_in_the_trainer_builds_the_conv_agent_and_checkpoints_it(tiny_config):
    cfg = tiny_config(task="cartpole-swingup", obs="rgb", num_envs=1, steps=2, seed_steps=2, eval_freq=10, checkpoint_freq=10)
    trainer = make_trainer(cfg)
    assert trainer.world_model.cfg.obs_dim == 9 and trainer.world_model.cfg.obs_type == "rgb"
    path = trainer.save_checkpoint()
    _, saved, world_model, _ = load_agent(path)
    assert saved.obs == "rgb" and world_model.cfg.obs_type == "rgb"


def test_mujoco_gl_backend_is_chosen_per_platform(monkeypatch):
    import ctypes.util
    import sys

    from torchrl_mbdpo._rendering import choose_mujoco_gl, default_mujoco_gl

    monkeypatch.setattr(sys, "platform", "darwin")
    assert default_mujoco_gl() == "glfw"
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libEGL.so.1" if name == "EGL" else None)
    assert default_mujoco_gl() == "egl"
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert default_mujoco_gl() == "osmesa"
    monkeypatch.delenv("MUJOCO_GL", raising=False)
    assert choose_mujoco_gl() == "osmesa" and os.environ["MUJOCO_GL"] == "osmesa"
    monkeypatch.setenv("MUJOCO_GL", "egl")  # set by the user: kept
    assert choose_mujoco_gl() == "egl"
