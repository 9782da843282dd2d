"""MBDPO assembled by hand from TorchRL parts: env, Collector, replay buffer, loss, SoftUpdate.

This is what `mbdpo-train` does (plus evaluation, logging and checkpoints), in ~40 lines, at a tiny size:

    python examples/compose_with_torchrl.py            # MBDPO
    python examples/compose_with_torchrl.py --tdmpc2   # the TD-MPC2 baseline: only the actor and loss classes change
"""

import sys

import torch
from torchrl.collectors import Collector
from torchrl.objectives import SoftUpdate

from torchrl_mbdpo import DiffusionActor, MBDPOLoss, MBDPOWorldModel, MPPIActor, MPPIConfig, PlannerConfig, TDMPC2Loss, WorldModelConfig
from torchrl_mbdpo.data import EpisodeWriter, make_replay_buffer
from torchrl_mbdpo.envs import make_env
from torchrl_mbdpo.objectives import make_optimizers, update

torch.manual_seed(0)
env = make_env("cartpole-swingup", seed=0)  # action repeat 2, 500-step episodes, truncation only
obs_dim, action_dim = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]

world_model = MBDPOWorldModel(WorldModelConfig.from_size(1, obs_dim, action_dim, latent_dim=32, mlp_dim=64, enc_dim=64))
if "--tdmpc2" in sys.argv:
    actor = MPPIActor(world_model, MPPIConfig(iterations=3, num_samples=64, num_elites=8, num_pi_trajs=4), discount=env.task_spec.discount)
    loss = TDMPC2Loss(world_model, discount=env.task_spec.discount)
else:
    planner = PlannerConfig(steps=4, num_samples=64, num_elites=8, num_pi_trajs=4)
    actor = DiffusionActor(world_model, planner, discount=env.task_spec.discount)
    loss = MBDPOLoss(world_model, discount=env.task_spec.discount)
env.append_transform(actor.make_tensordict_primer())  # the warm-start plan travels in the TensorDict

model_optim, pi_optim = make_optimizers(loss)
target_updater = SoftUpdate(loss, tau=0.01)
buffer = make_replay_buffer(horizon=3, batch_size=64, capacity=100_000)
write_episodes = EpisodeWriter(buffer)

collector = Collector(env, actor, frames_per_batch=1, total_frames=1500, init_random_frames=1000)
for step, batch in enumerate(collector):
    if write_episodes(batch):
        print(f"step {step + 1}: episode return {batch['next', 'episode_reward'][-1].item():.1f}")
    if len(buffer) and step + 1 >= 1000:
        metrics = update(loss, buffer.sample().reshape(-1, 3), model_optim, pi_optim, target_updater)
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("loss_")))
collector.shutdown()
