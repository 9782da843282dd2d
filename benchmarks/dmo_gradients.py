"""How good are DMO's policy gradients? The gradient of an H-step return with respect to the actions, from
the decoupled rollout (simulator forward, local-model Jacobians at the simulator's states) and from the
"no decoupling" ablation (local-model imagination), each compared with the simulator's own gradient
(central finite differences with MuJoCo state restore). DMControl tasks only (they expose their physics).

    python benchmarks/dmo_gradients.py --checkpoint runs/dmo/cartpole-swingup/seed1/checkpoints/latest.pt

Prints one table: cosine similarity and norm ratio to the simulator's gradient (mean and median over the
start states), and the error of the H-step return each rollout reports.
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from torchrl_mbdpo.dmo.decoupled import decoupled_rollout
from torchrl_mbdpo.dmo.trainer import load_dmo_policy
from torchrl_mbdpo.envs import make_env

STEP_KEYS = ("reward", "done", "terminated", "truncated", "episode_reward")


def dmc_physics(env):
    """The MuJoCo physics behind a single DMControl env of ``make_env``."""
    base = env.base_env
    physics = getattr(getattr(base, "_env", None), "physics", None)
    if physics is None:
        raise SystemExit(f"{env.task_spec.name} is not a DMControl task: this check needs dm_control's physics state.")
    return physics


class Simulator:
    """Open-loop rollouts of fixed action sequences from a saved physics state."""

    def __init__(self, env, physics, root, state):
        self.env, self.physics, self.root, self.state = env, physics, root, state

    def restart(self):
        self.physics.set_state(self.state)
        self.td = self.root.clone()

    def step(self, action: torch.Tensor):
        out = self.env.step(self.td.set("action", action.detach().reshape(-1)))
        self.td = out["next"].exclude(*STEP_KEYS)
        return out["next", "observation"].reshape(1, -1), out["next", "reward"].reshape(1)

    @torch.no_grad()
    def total_reward(self, actions: torch.Tensor) -> float:
        self.restart()
        return sum(float(self.step(a)[1]) for a in actions)

    def fd_gradient(self, actions: torch.Tensor, eps: float) -> torch.Tensor:
        grad = torch.zeros_like(actions)
        for index in range(actions.numel()):
            plus, minus = actions.clone(), actions.clone()
            plus.view(-1)[index] += eps
            minus.view(-1)[index] -= eps
            grad.view(-1)[index] = (self.total_reward(plus) - self.total_reward(minus)) / (2 * eps)
        return grad


def model_gradient(loss, sim: Simulator | None, obs0: torch.Tensor, actions: torch.Tensor):
    """``(return, d return / d actions)`` of the fixed actions through :func:`decoupled_rollout`: decoupled when
    ``sim`` is given (its values, the local model's Jacobians), else pure local imagination."""
    wm = loss.world_model
    params = actions.clone().requires_grad_()
    steps = iter(range(len(actions)))

    def fixed_actions(z):
        return params[next(steps)].reshape(1, -1), torch.zeros(1)

    if sim is not None:
        sim.restart()
    out = decoupled_rollout(
        wm.encode_obs(obs0).detach().reshape(1, -1),
        fixed_actions,
        sim.step if sim is not None else None,
        wm.encode_obs,
        wm.next,
        lambda z, a: wm.decode_reward(wm.reward(z, a)),
        horizon=len(actions),
        decoupled=sim is not None,
    )
    total = out.rewards.sum()
    total.backward()
    return float(total.detach()), params.grad


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="a checkpoints/latest.pt of mbdpo-dmo train")
    p.add_argument("--horizon", type=int, default=None, help="default: the run's horizon")
    p.add_argument("--states", type=int, default=16, help="start states (reached by the run's policy)")
    p.add_argument("--eps", type=float, default=1e-3, help="finite-difference step")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    state, cfg, loss, policy = load_dmo_policy(args.checkpoint, deterministic=False)
    horizon = args.horizon or cfg.horizon
    env = make_env(cfg.task, seed=args.seed)
    physics = dmc_physics(env)

    rows = {"decoupled": [], "no decoupling": []}
    for k in range(args.states):
        td = env.reset()
        for _ in range(k * (env.task_spec.episode_length - horizon) // max(args.states - 1, 1)):
            with torch.no_grad():
                td = env.step(policy(td))["next"].exclude(*STEP_KEYS)
        sim = Simulator(env, physics, td.clone(), physics.get_state().copy())
        with torch.no_grad():  # the actions the stochastic policy takes from here, held fixed
            sim.restart()
            actions = []
            for _ in range(horizon):
                actions.append(policy(sim.td.clone())["action"].clamp(-0.99, 0.99).reshape(-1))
                sim.step(actions[-1])
            actions = torch.stack(actions)
        true_return = sim.total_reward(actions)
        fd = sim.fd_gradient(actions, args.eps)
        for name, source in (("decoupled", sim), ("no decoupling", None)):
            ret, grad = model_gradient(loss, source, td["observation"], actions)
            rows[name].append(
                (
                    F.cosine_similarity(grad.flatten(), fd.flatten(), dim=0).item(),
                    (grad.norm() / fd.norm().clamp_min(1e-12)).item(),
                    abs(ret - true_return),
                )
            )

    print(
        f"task {cfg.task}, checkpoint step {state['step']}, horizon {horizon}, {args.states} start states, "
        f"finite differences with eps {args.eps}"
    )
    print("| gradient of the H-step return | cosine to the simulator's, mean | median | norm ratio, median | |return error|, mean |")
    print("|---|---:|---:|---:|---:|")
    for name, values in rows.items():
        cos, ratio, err = zip(*values)
        print(
            f"| {name} | {statistics.mean(cos):.3f} | {statistics.median(cos):.3f} | {statistics.median(ratio):.2f} "
            f"| {statistics.mean(err):.3f} |"
        )


if __name__ == "__main__":
    main()
