"""MBDPO assembled by hand from TorchRL parts: env, Collector, replay buffer, loss, SoftUpdate.

This is what `mbdpo-train` does (plus evaluation, logging and checkpoints), in ~40 lines, at a tiny size:

    python examples/compose_with_torchrl.py                 # MBDPO, 1,500 agent steps (the first 1,000 random)
    python examples/compose_with_torchrl.py --tdmpc2        # the TD-MPC2 baseline: only the actor and loss classes change
    python examples/compose_with_torchrl.py --steps 1100    # shorter

``loss_energy`` prints 0.693 (log 2, chance) here, and so it should: the energy network F learns to tell the
replayed actions from the policy's, noisy and uniform proposals, and every replayed action so far is random (the
first 1,000 steps) or from a planner this young, whose actions on cartpole are still spread almost uniformly; no F
does better than chance then. It falls once the behaviour concentrates (longer runs, larger models: the `make demo`
run). ``test_energy_learns_a_behaviour_and_stays_at_chance_on_uniform_actions`` shows both cases.
"""

import argparse

import torch
from torchrl.collectors import Collector
from torchrl.objectives import SoftUpdate

from torchrl_mbdpo import DiffusionActor, MBDPOLoss, MBDPOWorldModel, MPPIActor, MPPIConfig, PlannerConfig, TDMPC2Loss, WorldModelConfig
from torchrl_mbdpo.data import EpisodeWriter, make_replay_buffer
from torchrl_mbdpo.envs import make_env
from torchrl_mbdpo.trainers.optimization import make_optimizers, update

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--tdmpc2", action="store_true", help="the TD-MPC2 baseline (MPPI planner, TD-MPC2 loss) on the same parts")
parser.add_argument("--steps", type=int, default=1500, help="agent steps, the first 1,000 of them random (default 1500)")
args = parser.parse_args()

torch.manual_seed(0)
env = make_env("cartpole-swingup", seed=0)  # action repeat 2, 500-step episodes, truncation only
obs_dim, action_dim = env.observation_spec["observation"].shape[-1], env.action_spec.shape[-1]

world_model = MBDPOWorldModel(WorldModelConfig.from_size(1, obs_dim, action_dim, latent_dim=32, mlp_dim=64, enc_dim=64))
if args.tdmpc2:
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

collector = Collector(env, actor, frames_per_batch=1, total_frames=args.steps, init_random_frames=1000)
for step, batch in enumerate(collector):
    if write_episodes(batch):
        print(f"step {step + 1}: episode return {batch['next', 'episode_reward'][-1].item():.1f}")
    if len(buffer) and step + 1 >= 1000:
        metrics = update(loss, buffer.sample().reshape(-1, 3), model_optim, pi_optim, target_updater)
        if (step + 1) % 100 == 0:
            print(f"step {step + 1}: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if k.startswith("loss_")))
collector.shutdown()
