"""SAC baseline from TorchRL's own parts, on the same envs, step budget and eval.csv as MBDPO.

    python sota-implementations/sac/sac.py --task cartpole-swingup --steps 100000 --seed 1

``--steps`` and ``step`` in ``eval.csv`` count agent steps (policy actions, summed over ``--num-envs``), as
the MBDPO trainer does; ``env_steps = step * action_repeat``. The policy is evaluated deterministically
at step 0, every ``--eval-freq`` steps and at the end.
"""

import argparse
import time
from pathlib import Path

import torch
import tqdm
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, RandomSampler, TensorDictReplayBuffer
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import SACLoss, SoftUpdate

from torchrl_mbdpo.cli import ScriptArgumentParser
from torchrl_mbdpo.envs import make_env
from torchrl_mbdpo.trainers.config import default_work_dir
from torchrl_mbdpo.trainers.evaluation import CsvLog, evaluate

FIELDS = ["step", "episode_reward", "env_steps", "wall_time_s"]


def parse_args(argv=None):
    p = ScriptArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="cartpole-swingup")
    p.add_argument("--steps", type=int, default=100_000, help="agent steps")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--num-envs", type=int, default=1)
    p.add_argument("--eval-freq", type=int, default=10_000, help="agent steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--work-dir", default=None, help="default: runs/sac/<task>/seed<seed> (as mbdpo-compare finds it)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--init-random-frames", type=int, default=None, help="default: min(5000, steps // 10)")
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--tau", type=float, default=0.005)
    p.add_argument("--utd", type=float, default=1.0, help="gradient updates per agent step")
    p.add_argument("--buffer-size", type=int, default=1_000_000)
    args = p.parse_args(argv)
    if args.utd <= 0 or (args.init_random_frames or 0) < 0:
        p.error(f"need --utd > 0 and --init-random-frames >= 0, got {args.utd} and {args.init_random_frames}.")
    positive = ("steps", "num_envs", "eval_freq", "eval_episodes", "batch_size", "buffer_size")
    p.check_run(args, positive, work_dir(args) / "eval.csv")
    return args


def work_dir(args) -> Path:
    return Path(args.work_dir or default_work_dir("sac", args.task, args.seed))


def make_agent(obs_dim, action_spec, hidden=(256, 256)):
    """TanhNormal actor and Q-network (SACLoss makes the two Q copies and their targets)."""
    act_dim = action_spec.shape[-1]
    actor_net = nn.Sequential(
        MLP(in_features=obs_dim, out_features=2 * act_dim, num_cells=hidden, activation_class=nn.ReLU),
        NormalParamExtractor(scale_mapping="biased_softplus_1.0", scale_lb=0.1),
    )
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": action_spec.space.low, "high": action_spec.space.high, "tanh_loc": False},
    )
    qvalue = ValueOperator(
        MLP(in_features=obs_dim + act_dim, out_features=1, num_cells=hidden, activation_class=nn.ReLU),
        in_keys=["observation", "action"],
    )
    return actor, qvalue


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    out = work_dir(args)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / "eval.csv"

    env = make_env(args.task, seed=args.seed, num_envs=args.num_envs)
    eval_env = make_env(args.task, seed=args.seed + 10_000, num_envs=1)
    spec = env.task_spec
    actor, qvalue = make_agent(env.observation_spec["observation"].shape[-1], env.action_spec_unbatched)

    loss = SACLoss(actor, qvalue, num_qvalue_nets=2, loss_function="l2", delay_qvalue=True, alpha_init=1.0)
    loss.make_value_estimator(gamma=args.gamma)
    target_update = SoftUpdate(loss, tau=args.tau)
    optim = torch.optim.Adam(loss.parameters(), lr=args.lr)  # actor, Q-nets and log_alpha (targets are buffers)

    init_random = args.init_random_frames if args.init_random_frames is not None else min(5000, args.steps // 10)
    frames_per_batch = args.num_envs
    collector = Collector(
        env,
        actor,
        frames_per_batch=frames_per_batch,
        total_frames=args.steps,
        init_random_frames=-(-init_random // frames_per_batch) * frames_per_batch,
    )
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(min(args.buffer_size, max(args.steps, 1))), sampler=RandomSampler(), batch_size=args.batch_size
    )

    t0 = time.time()
    pbar = tqdm.tqdm(total=args.steps, desc=f"SAC {spec.name}", unit="step")

    def run_eval(step):
        eval_env.set_seed(args.seed + 10_000 + step)
        ret = sum(evaluate(eval_env, actor, args.eval_episodes, spec.episode_length)) / args.eval_episodes
        row = {"step": step, "episode_reward": ret, "env_steps": step * spec.action_repeat, "wall_time_s": round(time.time() - t0, 1)}
        CsvLog(csv_path, FIELDS).append(row)
        pbar.set_postfix(eval_return=f"{ret:.1f}")
        tqdm.tqdm.write(f"eval step {step} env_steps {row['env_steps']}: return {ret:.1f} ({row['wall_time_s']}s)")

    run_eval(0)
    step, next_eval = 0, args.eval_freq
    for data in collector:
        data = data.reshape(-1)
        buffer.extend(data)
        step += data.numel()
        pbar.update(data.numel())
        if step >= init_random:
            for _ in range(max(1, round(args.utd * data.numel()))):
                losses = loss(buffer.sample())
                optim.zero_grad(set_to_none=True)
                (losses["loss_actor"] + losses["loss_qvalue"] + losses["loss_alpha"]).backward()
                optim.step()
                target_update.step()
        if step >= next_eval or step >= args.steps:
            run_eval(step)
            next_eval = (step // args.eval_freq + 1) * args.eval_freq
    pbar.close()
    collector.shutdown()
    eval_env.close()


if __name__ == "__main__":
    main()
