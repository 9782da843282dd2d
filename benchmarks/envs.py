"""Environment throughput through ``make_env`` (agent steps per second, random actions, one env and a
SerialEnv of 4), one row per suite that runs on this machine. Prints one table.

    python benchmarks/envs.py [--steps 500]
"""

from __future__ import annotations

import argparse
import time

import torch

from torchrl_mbdpo.envs import make_env
from torchrl_mbdpo.envs.suite import SuiteUnavailableError

ROWS = [
    ("DMControl", "cheetah-run", "state"),
    ("DMControl", "walker-walk", "state"),
    ("DMControl pixels", "cheetah-run", "rgb"),
    ("MetaWorld", "mw-reach", "state"),
    ("MyoSuite", "myo-reach", "state"),
    ("ManiSkill3", "pick-cube", "state"),
]


def steps_per_second(task: str, obs: str, num_envs: int, steps: int) -> float:
    env = make_env(task, seed=0, num_envs=num_envs, obs=obs)
    env.rollout(5, break_when_any_done=False)  # warm-up (first renders, lazy imports)
    start = time.perf_counter()
    env.rollout(steps, break_when_any_done=False)
    rate = steps * num_envs / (time.perf_counter() - start)
    env.close()
    return rate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"\n{args.steps} agent steps per measurement, random actions; torch {torch.__version__}\n")
    print("| suite | task | obs | 1 env, steps/s | SerialEnv of 4, steps/s |")
    print("|---|---|---|---:|---:|")
    for suite, task, obs in ROWS:
        try:
            one = steps_per_second(task, obs, 1, args.steps)
            four = steps_per_second(task, obs, 4, max(args.steps // 4, 10))
            print(f"| {suite} | {task} | {obs} | {one:.0f} | {four:.0f} |", flush=True)
        except SuiteUnavailableError as err:
            print(f"| {suite} | {task} | {obs} | not available: {err} | |", flush=True)


if __name__ == "__main__":
    main()
