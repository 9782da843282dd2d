"""The actor and the loss against real env specs and real replay-buffer samples."""

import torch
from torchrl.envs.utils import check_env_specs

from torchrl_mbdpo import DiffusionActor, MBDPOLoss, MBDPOWorldModel, PlannerConfig, WorldModelConfig
from torchrl_mbdpo.data import EpisodeWriter, make_replay_buffer
from torchrl_mbdpo.envs import make_env


def test_actor_and_loss_keys_match_env_specs_and_buffer_samples():
    env = make_env("cheetah-run", seed=0, num_envs=2)
    obs_dim, action_dim = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]
    wm = MBDPOWorldModel(WorldModelConfig.from_size(1, obs_dim, action_dim, latent_dim=16, mlp_dim=16, enc_dim=16))
    actor = DiffusionActor(wm, PlannerConfig(steps=2, num_samples=8, num_elites=2, num_pi_trajs=2), discount=env.task_spec.discount)
    env.append_transform(actor.make_tensordict_primer())
    check_env_specs(env)

    provided = set(env.observation_spec.keys(True, True)) | set(env.full_done_spec.keys(True, True))
    assert set(actor.in_keys) <= provided
    assert set(actor.out_keys) == {"action", ("next", actor.plan_key)}

    rollout = env.rollout(20, actor)
    assert rollout["action"].shape == (2, 20, action_dim) and rollout["action"].abs().max() <= 1  # in the Bounded spec
    assert torch.equal(rollout[actor.plan_key][:, 1:], rollout["next", actor.plan_key][:, :-1])

    rb = make_replay_buffer(horizon=3, batch_size=4, capacity=100)
    rollout["next", "done"][:, -1] = True  # close the episodes so the writer stores them
    EpisodeWriter(rb)(rollout)
    batch = rb.sample().reshape(4, 3)
    loss = MBDPOLoss(wm, discount=env.task_spec.discount)
    assert set(loss.in_keys) <= set(batch.keys(True, True))
    out = loss(batch)
    assert set(loss.out_keys) <= set(out.keys()) and all(torch.isfinite(out[k]) for k in loss.out_keys)
