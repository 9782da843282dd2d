"""DMO's global world model: the EDM equations, the diffusion next-frame model, its TorchRL model-based env
and its offline training (checkpoints, resume, signals, the loss curve and the frames picture, bad input)."""

import json
import math
import os
import signal

import pytest
import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.envs.model_based import ModelBasedEnvBase
from torchrl.envs.utils import RandomPolicy, check_env_specs

from torchrl_mbdpo.config import ConfigWarning
from torchrl_mbdpo.dmo.diffusion import ArchitectureError, DiffusionConfig, DiffusionWorldModel
from torchrl_mbdpo.dmo.diffusion_env import DiffusionWorldModelEnv, context_from_frame, play_data_start_sampler
from torchrl_mbdpo.dmo.functional import (
    edm_denoised,
    edm_loss_weight,
    edm_scalings,
    edm_training_sigma,
    edm_training_target,
    euler_step,
    frames_to_unit,
    karras_sigmas,
    unit_to_frames,
)
from torchrl_mbdpo.dmo.play_data import PlayDatasetError, load_play_dataset
from torchrl_mbdpo.dmo.world_model_training import WorldModelTrainer, load_world_model, train_world_model, write_frames_picture
from torchrl_mbdpo.trainers.checkpoint import CheckpointError, load_checkpoint

from helpers import tiny_diffusion_config, tiny_world_model_train_config


# ------------------------------------------------------------------------------------------ EDM equations
def test_edm_scalings_by_hand():
    s = edm_scalings(torch.tensor(0.5), sigma_data=0.5)  # sigma = sigma_data: every scaling is a power of sqrt(2)
    assert s.c_skip.item() == pytest.approx(0.5)
    assert s.c_out.item() == pytest.approx(0.5 / math.sqrt(2))
    assert s.c_in.item() == pytest.approx(1 / (0.5 * math.sqrt(2)))
    assert s.c_noise.item() == pytest.approx(math.log(0.5) / 4)
    sigma = torch.tensor([0.01, 0.3, 2.0, 40.0])
    s = edm_scalings(sigma, 0.5)
    # unit variance of the network's input and target (EDM Appendix B.6) for data of std sigma_data
    torch.testing.assert_close(s.c_in**2 * (sigma**2 + 0.25), torch.ones(4))
    torch.testing.assert_close(edm_loss_weight(sigma, 0.5), 1 / s.c_out**2)
    assert s.c_skip[0] > 0.99 and s.c_skip[-1] < 1e-3, "small noise: keep the input; large noise: predict from scratch"


def test_edm_target_gives_the_clean_image_back():
    x, noise = torch.rand(3, 3, 4, 4) * 2 - 1, torch.randn(3, 3, 4, 4)
    sigma = torch.tensor([0.05, 0.7, 6.0]).reshape(-1, 1, 1, 1)
    x_noisy = x + sigma * noise
    s = edm_scalings(sigma, 0.5)
    torch.testing.assert_close(edm_denoised(edm_training_target(x, x_noisy, s), x_noisy, s), x)


def test_training_sigma_is_log_normal():
    sigma = edm_training_sigma(20000, -0.4, 1.2, generator=torch.Generator().manual_seed(0))
    assert sigma.log().mean().item() == pytest.approx(-0.4, abs=0.03)
    assert sigma.log().std().item() == pytest.approx(1.2, abs=0.03)


def test_karras_sigmas_by_hand():
    sig = karras_sigmas(3, 2e-3, 5.0, 7.0)
    middle = ((5.0 ** (1 / 7) + (2e-3) ** (1 / 7)) / 2) ** 7
    torch.testing.assert_close(sig, torch.tensor([5.0, middle, 2e-3, 0.0]))
    assert karras_sigmas(1, 2e-3, 5.0).tolist() == [5.0, 0.0]
    with pytest.raises(ValueError, match="num_steps"):
        karras_sigmas(0)


def test_euler_sampler_of_a_point_mass():
    """For data that is one image mu, ``D(x; sigma) = mu``; every Euler step moves x by the fraction
    ``1 - sigma_next / sigma`` towards it, and the last step (to 0) lands on it."""
    mu, x = torch.full((1, 3, 2, 2), 0.3), torch.randn(1, 3, 2, 2) * 5
    sig = karras_sigmas(3)
    x1 = euler_step(x, mu, sig[0], sig[1])
    torch.testing.assert_close(x1 - mu, (x - mu) * sig[1] / sig[0])
    torch.testing.assert_close(euler_step(x1, mu, sig[-2], sig[-1]), mu)


def test_frame_conversions():
    frames = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(unit_to_frames(frames_to_unit(frames)), frames)
    assert frames_to_unit(frames)[[0, -1]].tolist() == [-1.0, 1.0]


# ------------------------------------------------------------------------------------------ the model
def _model(seed=0, **overrides):
    torch.manual_seed(seed)
    return DiffusionWorldModel(tiny_diffusion_config(**overrides))


def _batch(n=4, k=2, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randint(0, 256, (n, k, 3, size, size), generator=g, dtype=torch.uint8),
        torch.rand(n, k, 2, generator=g) * 2 - 1,
        torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8),
    )


def test_sampler_calls_the_denoiser_num_steps_times(monkeypatch):
    """With a denoiser that always answers the same image, the sample is that image, after ``num_steps`` calls
    at Karras' noise levels."""
    model = _model(num_steps=3)
    target = torch.full((2, 3, 16, 16), 0.5)
    calls = []

    def denoise(x, sigma, context, actions):
        calls.append(float(sigma[0]))
        return target

    monkeypatch.setattr(model, "denoise", denoise)
    frames, actions, _ = _batch(2)
    out = model.sample(frames, actions)
    assert torch.equal(out, unit_to_frames(target))
    torch.testing.assert_close(torch.tensor(calls), karras_sigmas(3)[:-1])
    assert len(model.imagine(frames, actions, torch.zeros(2, 4, 2)).unbind(1)) == 4 and len(calls) == 3 + 4 * 3


def test_loss_trains_and_depends_on_the_conditioning():
    model = _model()
    frames, actions, _ = _batch()
    target = torch.full((4, 3, 16, 16), 200, dtype=torch.uint8)  # a learnable next frame
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    fixed = lambda: model.loss(frames, actions, target, generator=torch.Generator().manual_seed(5)).mean()  # noqa: E731
    before = fixed().item()
    for i in range(40):
        loss = model.loss(frames, actions, target, generator=torch.Generator().manual_seed(i)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed().item() < 0.5 * before
    assert model.loss(frames, actions, target).shape == (4,)
    # the context frames and the actions both reach the network
    model.zero_grad()
    g = torch.Generator().manual_seed(1)
    base = model.denoise(torch.zeros(4, 3, 16, 16), torch.ones(4), frames_to_unit(frames), actions)
    assert not torch.allclose(base, model.denoise(torch.zeros(4, 3, 16, 16), torch.ones(4), frames_to_unit(frames).flip(0), actions))
    assert not torch.allclose(
        base, model.denoise(torch.zeros(4, 3, 16, 16), torch.ones(4), frames_to_unit(frames), torch.rand(4, 2, 2, generator=g))
    )


def test_config_and_shape_errors():
    with pytest.raises(ValueError, match="multiple of norm_groups"):
        DiffusionConfig(channels=(12, 16), norm_groups=8)
    with pytest.raises(ValueError, match=r"divisible by 2\^\(levels - 1\) = 4"):
        DiffusionConfig(image_size=18, channels=(8, 16, 16), norm_groups=4)  # 3 levels: 18 is not a multiple of 4
    frames, actions, target = _batch(k=3)
    with pytest.raises(ValueError, match=r"context frames \(B, 2, 3, 16, 16\)"):
        _model().loss(frames, actions, target)


# ------------------------------------------------------------------------------------------ the model env
def _env(tiny_play_data, batch_size=3, max_episode_steps=4, **kwargs):
    ds = load_play_dataset(tiny_play_data)
    model = _model().eval()
    return DiffusionWorldModelEnv(
        model,
        play_data_start_sampler(ds, model.cfg.context, generator=torch.Generator().manual_seed(0)),
        batch_size=batch_size,
        max_episode_steps=max_episode_steps,
        **kwargs,
    )


def test_model_env_specs_and_torchrl_base(tiny_play_data):
    env = _env(tiny_play_data)
    assert isinstance(env, ModelBasedEnvBase)
    check_env_specs(env)
    assert env.observation_spec["pixels"].shape == (3, 3, 16, 16) and env.observation_spec["pixels"].dtype == torch.uint8


def test_model_env_steps_shift_the_histories(tiny_play_data):
    env = _env(tiny_play_data, generator=torch.Generator().manual_seed(0))
    td = env.reset()
    td["action"] = torch.rand(3, 2) * 2 - 1
    out = env.step(td)["next"]
    assert torch.equal(out["frames"][:, :-1], td["frames"][:, 1:]) and torch.equal(out["frames"][:, -1], out["pixels"])
    assert torch.equal(out["past_actions"][:, :-1], td["past_actions"][:, 1:]) and torch.equal(out["past_actions"][:, -1], td["action"])
    # the frame is the world model's sample from exactly this context and action
    expected = env.model.sample(
        td["frames"], torch.cat([td["past_actions"][:, 1:], td["action"][:, None]], 1), generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(out["pixels"], expected)
    assert (out["reward"] == 0).all() and not out["done"].any()


def test_model_env_rolls_out_with_a_collector_and_truncates(tiny_play_data):
    env = _env(tiny_play_data, batch_size=2, max_episode_steps=3)
    collector = Collector(env, RandomPolicy(env.action_spec), frames_per_batch=12, total_frames=12)
    batch = next(iter(collector))
    collector.shutdown()
    assert batch.shape == (2, 6)
    assert batch["next", "step_count"][0].squeeze(-1).tolist() == [1, 2, 3, 1, 2, 3]
    assert batch["next", "truncated"][0].squeeze(-1).tolist() == [False, False, True, False, False, True]
    # after the truncation the env restarted from a fresh start context (frames from the dataset)
    assert not torch.equal(batch["frames"][:, 3], batch["next", "frames"][:, 2])


def test_model_env_reward_and_termination_functions(tiny_play_data):
    reward_fn = lambda td: td["pixels"].float().mean((-1, -2, -3))[:, None] / 255  # noqa: E731
    terminated_fn = lambda td: td["action"][:, :1] > 0  # noqa: E731
    env = _env(tiny_play_data, reward_fn=reward_fn, terminated_fn=terminated_fn)
    td = env.reset()
    td["action"] = torch.tensor([[0.5, 0.0], [-0.5, 0.0], [0.1, 0.0]])
    out = env.step(td)["next"]
    torch.testing.assert_close(out["reward"], reward_fn(out))
    assert out["terminated"].squeeze(-1).tolist() == [True, False, True] and torch.equal(out["done"], out["terminated"])


def test_model_env_starts_from_a_given_frame(tiny_play_data):
    env = _env(tiny_play_data, batch_size=2)
    pixels = load_play_dataset(tiny_play_data).rows["pixels"][:2].clone()
    td = env.reset(context_from_frame(pixels, 2, 2))
    assert torch.equal(td["pixels"], pixels) and torch.equal(td["frames"][:, 0], pixels) and (td["past_actions"] == 0).all()
    bare = DiffusionWorldModelEnv(_model(), batch_size=1)
    with pytest.raises(RuntimeError, match="start contexts"):
        bare.reset()
    with pytest.raises(ValueError, match="start context needs frames"):
        env.reset(TensorDict({"frames": torch.zeros(2, 3, 3, 16, 16, dtype=torch.uint8)}, [2]))


# ------------------------------------------------------------------------------------------ training
def test_training_writes_curve_checkpoint_and_picture(tiny_play_data, tmp_path):
    trainer = train_world_model(tiny_world_model_train_config(tiny_play_data, tmp_path / "wm"))
    rows = trainer.log.rows()
    assert [int(r["update"]) for r in rows] == [0, 3, 6]
    assert all(float(r["held_out_loss"]) > 0 for r in rows) and rows[0]["train_loss"] == ""
    for name in ("loss.png", "checkpoints/latest.pt", "checkpoints/frames.png"):
        assert (tmp_path / "wm" / name).stat().st_size > 1000, name
    assert trainer.frames["steps"] == [0, 2, 4, 6] and trainer.frames["mse"][0] == 0.0
    saved = json.loads((tmp_path / "wm" / "checkpoints" / "frames.json").read_text())
    assert saved["update"] == 6 and saved["mse"] == trainer.frames["mse"]
    model, state = load_world_model(tmp_path / "wm" / "checkpoints" / "latest.pt", expect=trainer.model_cfg)
    assert state["update"] == 6
    for a, b in zip(model.state_dict().values(), trainer.model.state_dict().values()):
        assert torch.equal(a, b)


def test_resume_is_bitwise_equal_to_an_uninterrupted_run(tiny_play_data, tmp_path):
    straight = train_world_model(tiny_world_model_train_config(tiny_play_data, tmp_path / "a"))
    train_world_model(tiny_world_model_train_config(tiny_play_data, tmp_path / "b", updates=3))
    resumed = train_world_model(tiny_world_model_train_config(tiny_play_data, tmp_path / "b", resume=True))
    assert resumed.update == 6
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    strip = lambda rows: [(r["update"], r["train_loss"], r["held_out_loss"]) for r in rows]  # noqa: E731
    assert strip(resumed.log.rows()) == strip(straight.log.rows())


def test_bitwise_resume_holds_under_the_same_threads_and_another_count_is_said(tiny_play_data, tmp_path):
    """Bitwise resume holds on the same machine and library versions under the same torch thread count (the test
    above: both halves under the suite's one thread). A resume under another count goes on, and says so."""
    train_world_model(tiny_world_model_train_config(tiny_play_data, tmp_path / "b", updates=3, threads=1))
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "latest.pt")["lifecycle"] == {"threads": 1}
    with pytest.warns(ConfigWarning, match="written under 1: the run continues, but not bitwise"):
        WorldModelTrainer(tiny_world_model_train_config(tiny_play_data, tmp_path / "b", resume=True, threads=2))


def test_sigterm_checkpoints_and_resume_continues(tiny_play_data, tmp_path, monkeypatch):
    cfg = tiny_world_model_train_config(tiny_play_data, tmp_path / "wm", updates=8, checkpoint_freq=100)
    trainer = WorldModelTrainer(cfg)
    sample, calls = trainer.dataset.sample, []

    def sample_then_kill(n, context, generator, episodes, **kwargs):
        assert not torch.isin(trainer.held_out_episodes, episodes).any(), "training never sees the held-out episodes"
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives during update 2: it finishes, then the run stops
        return sample(n, context, generator, episodes, **kwargs)

    monkeypatch.setattr(trainer.dataset, "sample", sample_then_kill)
    trainer.train()
    assert trainer.update == 2 and "resume with resume=true" in trainer.stop_message
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or signal.getsignal(signal.SIGTERM) != trainer._handle
    resumed = WorldModelTrainer(tiny_world_model_train_config(tiny_play_data, tmp_path / "wm", updates=8, checkpoint_freq=100, resume=True))
    assert resumed.update == 2
    resumed.train()
    assert resumed.update == 8 and resumed.stop_message is None


def test_training_input_errors(tiny_play_data, tmp_path):
    with pytest.raises(PlayDatasetError, match="No play dataset"):
        WorldModelTrainer(tiny_world_model_train_config(tmp_path / "missing", tmp_path / "x"))
    with pytest.raises(PlayDatasetError, match="holds 16x16 frames, but 64x64"):
        WorldModelTrainer(tiny_world_model_train_config(tiny_play_data, tmp_path / "x", image_size=64))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        WorldModelTrainer(tiny_world_model_train_config(tiny_play_data, tmp_path / "x", resume=True))
    train_world_model(tiny_world_model_train_config(tiny_play_data, tmp_path / "wm", updates=1))
    with pytest.raises(CheckpointError, match="resume=true"):
        WorldModelTrainer(tiny_world_model_train_config(tiny_play_data, tmp_path / "wm"))
    with pytest.raises(ArchitectureError, match=r"channels: checkpoint has \(8, 16\), requested \(8, 8\)"):
        WorldModelTrainer(tiny_world_model_train_config(tiny_play_data, tmp_path / "wm", channels=[8, 8], resume=True))
    with pytest.raises(ArchitectureError, match="context: checkpoint has 2, requested 3"):
        load_world_model(tmp_path / "wm" / "checkpoints" / "latest.pt", expect=tiny_diffusion_config(context=3))
    with pytest.raises(CheckpointError, match="No checkpoint"):
        load_world_model(tmp_path / "nothing.pt")


def test_frames_picture_of_a_perfect_model(tiny_play_data, tmp_path, monkeypatch):
    """A model that predicts the real frames gives zero error at every shown step: the picture compares like
    with like (same steps, same frames)."""
    ds = load_play_dataset(tiny_play_data)
    episode = ds.episode(1)
    model = _model()
    monkeypatch.setattr(model, "imagine", lambda frames, actions, future, generator=None: episode["pixels"][1 : 1 + future.shape[1]][None])
    out = write_frames_picture(model, episode, tmp_path / "frames.png", every=5, steps=50)
    assert out["steps"] == [0, 5, 10] and out["mse"] == [0.0, 0.0, 0.0]
    assert (tmp_path / "frames.png").stat().st_size > 1000
