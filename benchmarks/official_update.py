"""One update of the official MBDPO agent and of torchrl_mbdpo, side by side, at 1 thread, fp32 (batch 256,
horizon 3, obs 17 / action 6), alternating the two, median over repeats after warm-up.

    git --git-dir=<mirror of Edmond1Cheng/MBDPO> archive HEAD MBDPO cfgs | tar -x -C /tmp/official
    python benchmarks/official_update.py --official /tmp/official [--sizes 1 5] [--repeats 9]

The official code assumes CUDA; it is patched on the fly only (``torch.device("cuda:0")`` -> CPU while the
agent is built, Adam's ``capturable`` off), never edited.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from torchrl_mbdpo.modules import MBDPOWorldModel, WorldModelConfig
from torchrl_mbdpo.objectives import MBDPOLoss
from torchrl_mbdpo.trainers.optimization import make_optimizers, update

OBS_DIM, ACTION_DIM, B, H = 17, 6, 256, 3


def official_agent(root: Path, size: int):
    sys.path.insert(0, str(root / "MBDPO"))
    import common
    import common.scale
    import common.world_model
    import mbdpo

    cfg = OmegaConf.to_container(OmegaConf.load(root / "cfgs" / "config.yaml"))
    cfg.pop("defaults", None)
    cfg.update(common.MODEL_SIZE[size], model_size=size, task="cheetah-run", multitask=False, task_dim=0, tasks=["cheetah-run"])
    cfg.update(obs_shape={"state": (OBS_DIM,)}, action_dim=ACTION_DIM, episode_length=1000, batch_size=B, horizon=H, compile=False)
    cfg.update(bin_size=(cfg["vmax"] - cfg["vmin"]) / (cfg["num_bins"] - 1))
    cfg = types.SimpleNamespace(**cfg, get=lambda key, default=None: getattr(cfg, key, default))

    # While the agent is built: torch.device("cuda:0") -> cpu (mbdpo.py and common/scale.py read it), and no
    # WorldModel.to(): already on the CPU, and its meta-tensor module copies cannot be moved.
    cpu_torch = types.ModuleType("torch")
    cpu_torch.__dict__.update({k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})
    cpu_torch.device = lambda *args, **kwargs: torch.device("cpu")
    world_model, to = common.world_model.WorldModel, common.world_model.WorldModel.to
    mbdpo.torch = common.scale.torch = cpu_torch
    world_model.to = lambda self, *args, **kwargs: self
    try:
        agent = mbdpo.MBDPO(cfg)
    finally:
        mbdpo.torch = common.scale.torch = torch
        world_model.to = to
    for optim in (agent.optim, agent.pi_optim):
        for group in optim.param_groups:
            group["capturable"] = False  # CUDA-only in torch's Adam
    obs = torch.randn(H + 1, B, OBS_DIM)
    action = torch.rand(H, B, ACTION_DIM) * 2 - 1
    reward, terminated = torch.rand(H, B, 1), torch.zeros(H, B, 1)
    return lambda: agent._update(obs, action, reward, terminated)


def our_update(size: int):
    batch = TensorDict(
        {
            "observation": torch.randn(B, H, OBS_DIM),
            "action": torch.rand(B, H, ACTION_DIM) * 2 - 1,
            ("next", "observation"): torch.randn(B, H, OBS_DIM),
            ("next", "reward"): torch.rand(B, H, 1),
            ("next", "terminated"): torch.zeros(B, H, 1, dtype=torch.bool),
        },
        batch_size=[B, H],
    )
    loss = MBDPOLoss(MBDPOWorldModel(WorldModelConfig.from_size(size, OBS_DIM, ACTION_DIM)))
    model_optim, pi_optim = make_optimizers(loss)
    updater = SoftUpdate(loss, tau=0.01)
    return lambda: update(loss, batch, model_optim, pi_optim, updater)


def machine() -> str:
    names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")][:1]
    return " / ".join(names + [platform.processor() or platform.machine()])


def side_by_side(fns: dict, repeats: int, warmup: int) -> dict:
    times = {name: [] for name in fns}
    for i in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            if i >= warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) * 1e3 for name, t in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", type=Path, default=Path("/tmp/official"), help="an extracted checkout of the official code")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 5])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    if not (args.official / "MBDPO" / "mbdpo.py").is_file():
        sys.exit(
            f"No official checkout at {args.official}. Extract one (MBDPO/ and cfgs/ are enough) with\n"
            f"  mkdir -p {args.official}\n"
            f"  git --git-dir=<mirror of Edmond1Cheng/MBDPO> archive HEAD MBDPO cfgs | tar -x -C {args.official}"
        )
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rows = []
    for size in args.sizes:
        ms = side_by_side({"official": official_agent(args.official, size), "ours": our_update(size)}, args.repeats, args.warmup)
        rows.append((size, ms["official"], ms["ours"]))
    print(
        f"\nmachine: {machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread, fp32; "
        f"one update, batch {B}, horizon {H}, obs {OBS_DIM} / action {ACTION_DIM}; median of {args.repeats} after {args.warmup} "
        "warm-up, alternating\n"
    )
    print("| model_size | official ms | ours ms | ours / official |")
    print("|---:|---:|---:|---:|")
    for size, official, ours in rows:
        print(f"| {size} | {official:.1f} | {ours:.1f} | {ours / official:.2f} |")


if __name__ == "__main__":
    main()
