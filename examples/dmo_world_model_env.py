"""Roll out TorchRL policies inside DMO's trained diffusion world model of Push-T.

    python examples/dmo_world_model_env.py --checkpoint runs/dmo_world_model/pusht-play/checkpoints/latest.pt \
        --data data/pusht-play --envs 8 --steps 20

1. a TorchRL ``Collector`` with a random policy in a batch of model envs started from play-data contexts;
2. ``env.rollout`` of the same model env started from the real env's first frames (``context_from_frame``),
   beside the real env driven by the same actions, written as a picture (real top, model bottom).
Prints the world-model samples per second.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torchrl.collectors import Collector
from torchrl.envs.utils import RandomPolicy

from torchrl_mbdpo.dmo.diffusion_env import DiffusionWorldModelEnv, context_from_frame, play_data_start_sampler
from torchrl_mbdpo.dmo.play_data import load_play_dataset
from torchrl_mbdpo.dmo.world_model_training import load_world_model
from torchrl_mbdpo.envs.pusht import make_pusht_env


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", default=None, help="picture path (default: beside the checkpoint)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model, _ = load_world_model(args.checkpoint)
    dataset = load_play_dataset(args.data, image_size=model.cfg.image_size)
    k, A = model.cfg.context, model.cfg.action_dim
    env = DiffusionWorldModelEnv(model, play_data_start_sampler(dataset, k), batch_size=args.envs, max_episode_steps=args.steps)

    collector = Collector(env, RandomPolicy(env.action_spec), frames_per_batch=args.envs * args.steps, total_frames=args.envs * args.steps)
    start = time.perf_counter()
    batch = next(iter(collector))
    seconds = time.perf_counter() - start
    collector.shutdown()
    print(
        f"collector: {tuple(batch.shape)} transitions in {seconds:.1f} s = {batch.numel() / seconds:.1f} world-model samples/s "
        f"({model.cfg.num_steps} denoising steps each)"
    )

    # the same model env, started from real first frames, driven by the actions that drive the real env
    real_env = make_pusht_env(image_size=model.cfg.image_size, seed=123, max_episode_steps=args.steps)
    real = real_env.rollout(args.steps, RandomPolicy(real_env.action_spec), break_when_any_done=False)
    model_env = DiffusionWorldModelEnv(model, batch_size=1, max_episode_steps=args.steps, generator=torch.Generator().manual_seed(0))
    td = model_env.reset(context_from_frame(real["pixels"][:1], k, A))
    imagined = [td["pixels"][0]]
    for t in range(args.steps):
        td["action"] = real["action"][t : t + 1]
        td = model_env.step(td)
        imagined.append(td["next", "pixels"][0])
        td = td["next"]
    frames = [real["pixels"][0], *real["next", "pixels"]]
    rows = torch.cat([torch.cat(frames[::5], -1), torch.cat(imagined[::5], -1)], -2)
    out = Path(args.out or Path(args.checkpoint).with_name("model_env_vs_real.png"))
    import imageio

    imageio.imwrite(out, rows.permute(1, 2, 0).numpy())
    print(f"real (top) vs model env (bottom), steps 0, 5, ...: {out}")


if __name__ == "__main__":
    main()
