"""Videos of evaluation episodes (``save_video``): TorchRL's VideoRecorder over the env's renderer, one MP4."""

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
from torchrl.envs import GymEnv
from torchrl.envs.utils import RandomPolicy

from torchrl_mbdpo.envs import make_env
from torchrl_mbdpo.trainers.config import TrainConfig
from torchrl_mbdpo.trainers.evaluation import evaluate, record_video, video_enabled, video_recording


def frames_of(path):
    reader = imageio.get_reader(path)
    try:
        return [frame for frame in reader], reader.get_meta_data()
    finally:
        reader.close()


def test_video_of_a_real_dmcontrol_episode_has_every_frame(tmp_path):
    env = make_env("cheetah-run", seed=1)
    transforms_before = len(env.transform)
    policy = RandomPolicy(env.action_spec)
    rng = torch.get_rng_state()
    path = record_video(env, policy, tmp_path / "videos" / "eval_0.mp4", episodes=2, max_steps=12, size=(48, 64), fps=15, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)  # recording perturbs no training run
    assert len(env.transform) == transforms_before  # the env is wrapped, not changed
    frames, meta = frames_of(path)
    assert len(frames) == 2 * (12 + 1)  # each episode: its reset frame, then one per step
    assert frames[0].shape == (48, 64, 3) and meta["fps"] == 15 and meta["codec"] == "h264"
    assert frames[0].std() > 10  # a rendered scene, not a blank image
    assert np.abs(frames[1].astype(int) - frames[12].astype(int)).mean() > 0.2  # the cheetah moves
    assert not list(path.parent.glob(".*tmp*"))  # written through a temporary file
    env.close()


def test_recording_during_evaluation_keeps_the_returns(tmp_path):
    """The video wrapper only renders: the same seeds give the same returns with and without it."""
    returns = {}
    for video in (False, True):
        env = make_env("cartpole-swingup", seed=4)
        torch.manual_seed(0)
        policy = RandomPolicy(env.action_spec)
        if video:
            with video_recording(env, tmp_path / "v.mp4", size=32) as recorded:
                returns[video] = evaluate(recorded, policy, 1, 20)
        else:
            returns[video] = evaluate(env, policy, 1, 20)
    assert returns[True] == returns[False]
    assert len(frames_of(tmp_path / "v.mp4")[0]) == 21


def test_videos_that_cannot_be_recorded_say_why(tmp_path):
    batched = make_env("cartpole-swingup", seed=0, num_envs=2)
    with pytest.raises(ValueError, match="single env"):
        record_video(batched, RandomPolicy(batched.action_spec), tmp_path / "x.mp4", max_steps=2)
    gym = make_env(GymEnv("Pendulum-v1"), seed=0)  # made without render_mode (make_env's own gym envs render)
    with pytest.raises(ValueError, match="no renderer"):
        record_video(gym, RandomPolicy(gym.action_spec), tmp_path / "x.mp4", max_steps=2)
    assert not (tmp_path / "x.mp4").exists()


def test_save_video_defaults_to_on_with_a_gpu_and_off_on_cpu():
    assert TrainConfig().save_video is None
    assert video_enabled(None) == torch.cuda.is_available()
    assert video_enabled(True) and not video_enabled(False)


def test_an_online_run_with_save_video_writes_one_mp4_per_evaluation(tmp_path, tiny_config):
    from torchrl_mbdpo.trainers.trainer import make_trainer

    cfg = tiny_config(
        task="cartpole-balance",
        num_envs=1,
        steps=10,
        seed_steps=5,
        pretrain_updates=2,
        eval_freq=10,
        eval_episodes=1,
        checkpoint_freq=10,
        save_video=True,
    )
    make_trainer(cfg).train()
    videos = sorted((tmp_path / "run" / "videos").glob("*.mp4"), key=lambda p: int(p.stem.split("_")[1]))
    assert [p.name for p in videos] == ["eval_0.mp4", "eval_10.mp4"]
    frames, _ = frames_of(videos[0])
    assert len(frames) == 501  # cartpole's 500-step episode and its reset frame
