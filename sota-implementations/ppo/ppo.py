"""PPO baseline from TorchRL's own parts, on the same envs, step budget and eval.csv as MBDPO.

    python sota-implementations/ppo/ppo.py --task cartpole-swingup --steps 2000000 --seed 1

``--steps`` and ``step`` in ``eval.csv`` count agent steps (policy actions, summed over ``--num-envs``), as
the MBDPO trainer does; ``env_steps = step * action_repeat``. Each PPO iteration collects
``--rollout-steps`` steps in each of the ``--num-envs`` envs (``--steps`` is rounded up to whole
iterations), then runs ``--epochs`` passes of ``--minibatch-size`` minibatches of ``ClipPPOLoss`` on
GAE advantages. The policy (``tanh`` of the Gaussian's mean) is evaluated at step 0, every
``--eval-freq`` steps and at the end.
"""

import argparse
import time
from pathlib import Path

import torch
import tqdm
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.modules import MLP, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import ClipPPOLoss
from torchrl.objectives.value import GAE

from torchrl_mbdpo.cli import ScriptArgumentParser
from torchrl_mbdpo.envs import make_env
from torchrl_mbdpo.trainers.config import default_work_dir
from torchrl_mbdpo.trainers.evaluation import CsvLog, evaluate

FIELDS = ["step", "episode_reward", "env_steps", "wall_time_s"]


def parse_args(argv=None):
    p = ScriptArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", default="cartpole-swingup")
    p.add_argument("--steps", type=int, default=2_000_000, help="agent steps")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--num-envs", type=int, default=16)
    p.add_argument("--eval-freq", type=int, default=50_000, help="agent steps between evaluations")
    p.add_argument("--eval-episodes", type=int, default=5)
    p.add_argument("--work-dir", default=None, help="default: runs/ppo/<task>/seed<seed> (as mbdpo-compare finds it)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--rollout-steps", type=int, default=128, help="steps per env per iteration")
    p.add_argument("--epochs", type=int, default=10, help="passes over each rollout")
    p.add_argument("--minibatch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--gamma", type=float, default=0.99)
    p.add_argument("--lmbda", type=float, default=0.95)
    p.add_argument("--clip-epsilon", type=float, default=0.2)
    p.add_argument("--entropy-coef", type=float, default=0.0)
    p.add_argument("--critic-coef", type=float, default=0.5)
    p.add_argument("--max-grad-norm", type=float, default=0.5)
    p.add_argument("--reward-scale", type=float, default=0.1, help="rewards are multiplied by this for training")
    args = p.parse_args(argv)
    positive = ("steps", "num_envs", "eval_freq", "eval_episodes", "rollout_steps", "epochs", "minibatch_size")
    p.check_run(args, positive, work_dir(args) / "eval.csv")
    return args


def work_dir(args) -> Path:
    return Path(args.work_dir or default_work_dir("ppo", args.task, args.seed))


class RunningNorm(nn.Module):
    """Observation normaliser: running mean and variance of the observations seen so far, clipped to +-10."""

    def __init__(self, dim):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("var", torch.ones(dim))
        self.register_buffer("count", torch.tensor(1e-4))

    def forward(self, x):
        return ((x - self.mean) / (self.var + 1e-8).sqrt()).clamp(-10, 10)

    @torch.no_grad()
    def update(self, x):  # in place: the loss module holds these very tensors
        x = x.reshape(-1, x.shape[-1])
        n, delta, total = x.shape[0], x.mean(0) - self.mean, self.count + x.shape[0]
        self.var.mul_(self.count).add_(x.var(0, unbiased=False) * n + delta**2 * self.count * n / total).div_(total)
        self.mean.add_(delta * n / total)
        self.count.copy_(total)


def make_agent(obs_dim, action_spec, hidden=(64, 64)):
    """TanhNormal actor and state-value critic, both reading the observation through one RunningNorm."""
    act_dim, norm = action_spec.shape[-1], RunningNorm(obs_dim)
    actor_net = nn.Sequential(
        norm,
        MLP(in_features=obs_dim, out_features=2 * act_dim, num_cells=hidden, activation_class=nn.Tanh),
        NormalParamExtractor(),
    )
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": action_spec.space.low, "high": action_spec.space.high, "tanh_loc": False},
        return_log_prob=True,
    )
    critic = ValueOperator(
        nn.Sequential(norm, MLP(in_features=obs_dim, out_features=1, num_cells=hidden, activation_class=nn.Tanh)),
        in_keys=["observation"],
    )
    return actor, critic, norm


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    csv_path = work_dir(args) / "eval.csv"
    csv_path.parent.mkdir(parents=True, exist_ok=True)

    env = make_env(args.task, seed=args.seed, num_envs=args.num_envs)
    eval_env = make_env(args.task, seed=args.seed + 10_000, num_envs=1)
    spec = env.task_spec
    actor, critic, obs_norm = make_agent(env.observation_spec["observation"].shape[-1], env.action_spec_unbatched)

    loss = ClipPPOLoss(
        actor,
        critic,
        clip_epsilon=args.clip_epsilon,
        entropy_bonus=args.entropy_coef > 0,
        entropy_coeff=args.entropy_coef,
        critic_coeff=args.critic_coef,
        loss_critic_type="l2",
        normalize_advantage=True,
    )
    gae = GAE(gamma=args.gamma, lmbda=args.lmbda, value_network=critic, average_gae=False)
    optim = torch.optim.Adam(loss.parameters(), lr=args.lr, eps=1e-5)

    frames_per_batch = args.rollout_steps * args.num_envs
    total = -(-args.steps // frames_per_batch) * frames_per_batch
    collector = Collector(env, actor, frames_per_batch=frames_per_batch, total_frames=total)

    t0 = time.time()
    pbar = tqdm.tqdm(total=total, desc=f"PPO {spec.name}", unit="step")

    def run_eval(step):
        eval_env.set_seed(args.seed + 10_000 + step)
        ret = sum(evaluate(eval_env, actor, args.eval_episodes, spec.episode_length)) / args.eval_episodes
        row = {"step": step, "episode_reward": ret, "env_steps": step * spec.action_repeat, "wall_time_s": round(time.time() - t0, 1)}
        CsvLog(csv_path, FIELDS).append(row)
        pbar.set_postfix(eval_return=f"{ret:.1f}")
        tqdm.tqdm.write(f"eval step {step} env_steps {row['env_steps']}: return {ret:.1f} ({row['wall_time_s']}s)")

    run_eval(0)
    step, next_eval = 0, args.eval_freq
    for data in collector:  # [num_envs, rollout_steps]
        data["next", "reward"] = data["next", "reward"] * args.reward_scale
        with torch.no_grad():
            gae(data)  # advantage and value_target; a truncated episode bootstraps from its last next state
        flat = data.reshape(-1)
        for _ in range(args.epochs):
            for idx in torch.randperm(flat.numel()).split(args.minibatch_size):
                losses = loss(flat[idx])
                optim.zero_grad(set_to_none=True)
                (losses["loss_objective"] + losses["loss_critic"] + losses.get("loss_entropy", 0.0)).backward()
                nn.utils.clip_grad_norm_(loss.parameters(), args.max_grad_norm)
                optim.step()
        obs_norm.update(data["observation"])  # after the update, so each rollout is trained on with its own statistics
        step += data.numel()
        pbar.update(data.numel())
        if step >= next_eval or step >= total:
            run_eval(step)
            next_eval = (step // args.eval_freq + 1) * args.eval_freq
    pbar.close()
    collector.shutdown()
    eval_env.close()


if __name__ == "__main__":
    main()
