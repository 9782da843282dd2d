"""What can a policy learn inside the Push-T state world model? DMO and PPO (``mbdpo-dmo policy`` / ``ppo``, their
own trainers) trained in a state world model with an *analytic* reward of the imagined states instead of a learned
one, each measured on the real Push-T env before and after training. It separates the parts of "no method learns":

- ``reach``: ``-|agent - block| / 256``, a task with no contact to model. If this is not learned, the pipeline is
  broken (the policy's observation, the action's scaling, the reward's keys, the rollouts).
- ``dense``: :func:`~torchrl_mbdpo.envs.pusht.pusht_dense_reward` (the block's distance to the goal pose plus half the
  agent's distance to the block), what ``mbdpo-dmo reward kind=dense`` regresses.
- ``behind``: the same, with the agent drawn to the point ``--behind`` units behind the block on the line from the
  goal (where a push moves the block towards it) instead of to the block.

    python benchmarks/dmo_state_shaping.py --world-model runs/state/wm/checkpoints/latest.pt --data runs/state/play \
        --reward runs/state/reward-dense/checkpoints/latest.pt

Every reward is standardised with its mean and spread over the play dataset's states (as the learned rewards are).
Prints one row per (algo, reward): the real env's mean agent-to-block distance over the episode, the change of the
block's distance to the goal from the first to the last step (negative: moved towards it) and the final coverage,
each before -> after training (``--episodes`` episodes of 300 steps from the same start states), and the wall time.
Runs go to ``--out/<algo>-<reward>`` (a new folder each time: delete it to re-run).
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from torch import nn

from torchrl_mbdpo.dmo.config import PixelDMOConfig, PPOConfig
from torchrl_mbdpo.dmo.policy_run import make_eval_env
from torchrl_mbdpo.dmo.policy_training import PixelDMOTrainer
from torchrl_mbdpo.dmo.ppo import PPOTrainer
from torchrl_mbdpo.envs.pusht import PUSHT_GOAL, pusht_dense_reward

REWARDS = ("reach", "dense", "behind")


def shaped_reward(state: torch.Tensor, kind: str, behind: float) -> torch.Tensor:
    """The analytic reward ``kind`` of Push-T states ``(..., 5)`` -> ``(..., 1)`` (module docstring)."""
    state = state.float()
    agent, block = state[..., 0:2], state[..., 2:4]
    if kind == "reach":
        return -(agent - block).norm(dim=-1, keepdim=True) / 256
    if kind == "dense":
        return pusht_dense_reward(state)
    away = block - torch.tensor(PUSHT_GOAL[:2], dtype=state.dtype)
    push_point = block + behind * away / away.norm(dim=-1, keepdim=True).clamp_min(1.0)
    return pusht_dense_reward(state, agent_weight=0.0) - 0.5 * (agent - push_point).norm(dim=-1, keepdim=True) / 256


class ShapedReward(nn.Module):
    """:func:`shaped_reward` as a model env's ``reward_fn``, standardised with ``shift`` and ``scale``."""

    def __init__(self, kind: str, behind: float, states: torch.Tensor):
        super().__init__()
        self.kind, self.behind = kind, behind
        values = shaped_reward(states, kind, behind)
        self.shift, self.scale = float(values.mean()), float(values.std())

    def forward(self, td) -> torch.Tensor:
        return (shaped_reward(td["state"], self.kind, self.behind) - self.shift) / self.scale


@torch.no_grad()
def real_behaviour(policy, episodes: int) -> tuple[float, float, float]:
    """Mean agent-to-block distance, change of the block's distance to the goal, final coverage on real Push-T."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    env = make_eval_env("state", image_size=None, seed=0, steps=300)
    goal = torch.tensor(PUSHT_GOAL[:2])
    reach, moved, coverage = [], [], []
    torch.manual_seed(0)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        for _ in range(episodes):
            td = env.rollout(300, policy)
            states = td["next", "state"]
            reach.append(float((states[:, :2] - states[:, 2:4]).norm(dim=-1).mean()))
            moved.append(float((states[-1, 2:4] - goal).norm() - (td["state"][0, 2:4] - goal).norm()))
            coverage.append(float(td["next", "coverage"][-1]))
    env.close()
    return tuple(sum(v) / len(v) for v in (reach, moved, coverage))


def run(args, algo: str, kind: str) -> dict:
    common = dict(
        world_model=args.world_model,
        reward=args.reward,
        data=args.data,
        work_dir=f"{args.out}/{algo}-{kind}",
        iterations=args.iterations,
        num_envs=args.num_envs,
        episode_steps=args.episode_steps,
        eval_freq=10**9,  # the measurement below replaces the run's own evaluations
        eval_episodes=1,
        eval_steps=2,
        seed=args.seed,
        threads=args.threads,
        progress=False,
    )
    trainer = PPOTrainer(PPOConfig(**common)) if algo == "ppo" else PixelDMOTrainer(PixelDMOConfig(**common))
    trainer.reward_fn = trainer.model_env.reward_fn = ShapedReward(kind, args.behind, trainer.dataset.rows["state"])
    before = real_behaviour(trainer.policy(), args.episodes)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    after = real_behaviour(trainer.policy(), args.episodes)
    samples = args.iterations * args.num_envs * (trainer.cfg.horizon if algo == "dmo" else trainer.cfg.rollout_steps)
    return {"algo": algo, "reward": kind, "samples": samples, "before": before, "after": after, "seconds": seconds}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world-model", required=True, help="a state world model checkpoint (mbdpo-dmo world_model obs=state)")
    p.add_argument("--data", required=True, help="its play dataset")
    p.add_argument("--reward", required=True, help="a state reward checkpoint (the trainers load one; it is then replaced)")
    p.add_argument("--algos", default="ppo,dmo")
    p.add_argument("--rewards", default=",".join(REWARDS))
    p.add_argument("--iterations", type=int, default=600)
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--episode-steps", type=int, default=100)
    p.add_argument("--behind", type=float, default=60.0, help="units behind the block of the 'behind' reward's push point")
    p.add_argument("--episodes", type=int, default=20, help="real episodes of each measurement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default="runs/dmo_state_shaping")
    args = p.parse_args(argv)
    unknown = sorted(set(args.rewards.split(",")) - set(REWARDS))
    if unknown:
        p.error(f"unknown rewards {unknown}; choose from {', '.join(REWARDS)}")
    rows = [run(args, algo, kind) for algo in args.algos.split(",") for kind in args.rewards.split(",")]
    print(f"\nPush-T state world model {args.world_model}; {platform.processor() or platform.machine()}, {args.threads} thread(s)")
    print("| algo | reward | samples | agent-block distance | block-goal change | final coverage | s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        (a0, m0, c0), (a1, m1, c1) = r["before"], r["after"]
        print(
            f"| {r['algo']} | {r['reward']} | {r['samples']:,} | {a0:.0f} -> {a1:.0f} | {m0:+.0f} -> {m1:+.0f} "
            f"| {c0:.3f} -> {c1:.3f} | {r['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
