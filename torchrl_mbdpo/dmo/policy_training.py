"""DMO-SAPO inside the learned pixel world model of Push-T (``mbdpo-dmo policy``): no simulator in the loop.

- **Global model** (the forward pass): :class:`~torchrl_mbdpo.dmo.diffusion_env.DiffusionWorldModelEnv`, the
  trained diffusion world model as a batched TorchRL env (``num_envs`` imagined episodes of ``episode_steps``
  steps, restarted from play-data contexts when they end), whose reward is the learned one (a
  ``mbdpo-dmo reward`` checkpoint: the contrastive energy, or the real-env-reward regression: that choice is the
  reward switch), driven through :class:`~torchrl_mbdpo.modules.decoupled.EnvGlobalModel`.
- **Local model** (the gradients): the library's world model with its pixel encoder (``obs_type="rgb"``, the
  last 3 frames stacked), latent dynamics and two-hot reward head, pre-trained for ``pretrain_updates`` steps on
  the play data (one-step latent consistency + the learned reward of each transition) and fine-tuned during
  policy optimisation on the global model's transitions and on play-data batches.
- **Policy**: :class:`~torchrl_mbdpo.objectives.dmo.DMOLoss` (SAPO actor on the latent, soft TD(lambda) critic,
  learned temperature) on ``H = horizon``-step rollouts of :meth:`DMOLoss.rollout`: values from the global
  model, Jacobians from the local one (the gradient swap ``sg(g) + l - sg(l)``).
- ``forward=local`` is the paper's "No Diffusion" ablation: the local model makes the forward pass too
  (pure latent imagination from play-data start frames; no diffusion sample is drawn, and the local model is
  fine-tuned on the play data only).

Evaluation on the **real** Push-T env (``make_pusht_env``, frames stacked as the local model reads them) with the
deterministic policy: ``eval_episodes`` episodes of ``eval_steps`` steps every ``eval_freq`` iterations; ``eval.csv``
holds the success rate (gym-pusht's own test) and the return against the world-model samples drawn so far
(``world_model_samples``: diffusion samples; ``model_steps``: imagined transitions of either model) and the
wall time. ``checkpoints/latest.pt`` every ``checkpoint_freq`` iterations and at the end; ``resume=true``
continues from it (the imagined episodes restart, so not bit-identical); SIGTERM/SIGINT stop after the
iteration with a checkpoint.
"""

from __future__ import annotations

import math
import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from tensordict import TensorDict
from tensordict.nn import TensorDictModule
from torchrl.objectives import SoftUpdate
from tqdm.auto import tqdm

from .play_data import load_play_dataset

__all__ = ["FORWARDS", "PixelDMOConfig", "PixelDMOTrainer", "train_pixel_dmo", "evaluate_on_pusht"]

FORWARDS = ("diffusion", "local")
CHECKPOINT_KIND = "dmo_pixel_policy"
OBSERVATION_FRAMES = 3  # the local model's input: the last 3 frames stacked (as TD-MPC2's pixel tasks)
EVAL_FIELDS = ["iteration", "world_model_samples", "model_steps", "seconds", "success_rate", "mean_return", "rollout_reward"]


@dataclass
class PixelDMOConfig:
    """``mbdpo-dmo policy`` (CPU-sized defaults)."""

    world_model: Optional[str] = None  # the diffusion world model checkpoint (mbdpo-dmo world_model)
    reward: Optional[str] = None  # the reward checkpoint (mbdpo-dmo reward kind=energy|env): the reward switch
    data: Optional[str] = None  # the play dataset (start contexts, local-model pre-training)
    work_dir: Optional[str] = None  # default: runs/dmo_pixel/<forward>/seed<seed>
    forward: str = "diffusion"  # diffusion: DMO | local: the "No Diffusion" ablation
    iterations: int = 200
    num_envs: int = 16
    horizon: int = 16
    episode_steps: int = 32  # imagined episode length before a restart from play data
    latent_dim: int = 64
    mlp_dim: int = 128
    enc_dim: int = 128
    discount: float = 0.98
    lmbda: float = 0.95
    alpha_init: float = 0.1
    actor_lr: float = 2e-3
    critic_lr: float = 5e-4
    alpha_lr: float = 5e-3
    local_model_lr: float = 3e-4
    tau: float = 0.2
    grad_clip_norm: float = 1.0
    critic_updates: int = 8
    local_model_updates: int = 2  # play-data batches per iteration (besides the rollout's transitions)
    pretrain_updates: int = 500
    batch_size: int = 64
    eval_freq: int = 25  # iterations
    eval_episodes: int = 10
    eval_steps: int = 300  # real env steps per evaluation episode (Push-T's 300)
    checkpoint_freq: int = 25
    reward_normalization: bool = True  # standardise the learned reward with its mean/std on play-data transitions
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = None
    resume: bool = False
    progress: bool = True


@torch.no_grad()
def evaluate_on_pusht(policy, *, image_size: int, seed: int, step: int, episodes: int, steps: int, device="cpu") -> dict:
    """``episodes`` episodes of ``policy`` (a TorchRL policy reading ``"observation"``, the last 3 frames stacked) on the
    real Push-T env: the success rate (gym-pusht's test at any step) and the mean return. Seeds: the library's
    ``evaluation_seeds(seed, step)``, so DMO, its ablations and PPO meet the same start states."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from ..envs.pusht import make_pusht_env
    from ..trainers.evaluation import evaluation_seeds

    seeds = evaluation_seeds(seed, step)
    env = make_pusht_env(
        image_size=image_size, seed=seeds.env, max_episode_steps=steps, observation_frames=OBSERVATION_FRAMES, device=device
    )
    successes, returns = [], []
    with torch.random.fork_rng(devices=[]), set_exploration_type(ExplorationType.DETERMINISTIC):
        torch.manual_seed(seeds.torch)
        for _ in range(episodes):
            episode = env.rollout(steps, policy, break_when_any_done=True)
            successes.append(bool(episode["next", "success"].any()))
            returns.append(float(episode["next", "reward"].sum()))
    env.close()
    return {"success_rate": sum(successes) / len(successes), "mean_return": sum(returns) / len(returns)}


class PixelDMOTrainer:
    """Runs the protocol of the module docstring; :meth:`train` returns the last ``eval.csv`` row."""

    def __init__(self, cfg: PixelDMOConfig):
        from ..modules import MBDPOWorldModel, WorldModelConfig
        from ..modules.decoupled import EnvGlobalModel
        from ..objectives.dmo import DMOLoss
        from ..trainers.checkpoint import CheckpointError, load_latest
        from ..trainers.evaluation import CsvLog
        from .diffusion_env import DiffusionWorldModelEnv, play_data_start_sampler
        from .reward import load_frame_reward
        from .world_model_training import load_world_model

        self.cfg = cfg
        self._check(cfg)
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        torch.manual_seed(cfg.seed)
        self.global_world_model, _ = load_world_model(cfg.world_model)
        size = self.global_world_model.cfg.image_size
        self.dataset = load_play_dataset(cfg.data, image_size=size)
        self.raw_reward_fn, reward_state = load_frame_reward(cfg.reward, image_size=size)
        self.reward_kind = reward_state["model_config"]["kind"]
        self.reward_fn = self.raw_reward_fn
        self.work_dir = Path(cfg.work_dir or Path("runs") / "dmo_pixel" / cfg.forward / f"seed{cfg.seed}")
        self.checkpoint_path = self.work_dir / "checkpoints" / "latest.pt"
        k, A = self.global_world_model.cfg.context, self.global_world_model.cfg.action_dim
        if k < OBSERVATION_FRAMES:
            raise ValueError(
                f"The local model reads the last {OBSERVATION_FRAMES} frames: the world model's context must be >= "
                f"{OBSERVATION_FRAMES}, {cfg.world_model} has {k}."
            )
        self.sampler = play_data_start_sampler(self.dataset, k, generator=torch.Generator().manual_seed(cfg.seed + 3))
        self.model_env = DiffusionWorldModelEnv(
            self.global_world_model,
            self.sampler,
            batch_size=cfg.num_envs,
            max_episode_steps=cfg.episode_steps,
            observation_frames=OBSERVATION_FRAMES,
            device=cfg.device,
        )
        self.global_model = EnvGlobalModel(self.model_env) if cfg.forward == "diffusion" else None
        wm_cfg = WorldModelConfig.from_size(
            1, 3 * OBSERVATION_FRAMES, A, obs_type="rgb", latent_dim=cfg.latent_dim, mlp_dim=cfg.mlp_dim, enc_dim=cfg.enc_dim
        )
        self.local_model = MBDPOWorldModel(wm_cfg).to(cfg.device)
        self.loss = DMOLoss(
            self.local_model,
            discount=cfg.discount,
            lmbda=cfg.lmbda,
            alpha_init=cfg.alpha_init,
            decoupled=cfg.forward == "diffusion",
            log_std_min=-5.0,
            log_std_max=2.0,
        ).to(cfg.device)
        groups = self.loss.parameter_groups()
        lrs = {"actor": cfg.actor_lr, "critic": cfg.critic_lr, "alpha": cfg.alpha_lr, "local_model": cfg.local_model_lr}
        self.optimizers = {name: torch.optim.Adam(groups[name], lr=lr) for name, lr in lrs.items()}
        self.target_updater = SoftUpdate(self.loss, tau=cfg.tau)
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.train_rows = self.dataset.transition_rows(self.dataset.split(0)[0])
        if cfg.reward_normalization:  # an energy is defined up to an affine map: give it unit scale
            with torch.no_grad():
                r = self._play_batch(1024)["reward"]
            self.reward_fn.shift, self.reward_fn.scale = float(r.mean()), float(r.std().clamp_min(1e-6))
        self.model_env.reward_fn = self.reward_fn
        self.iteration = 0
        self.world_model_samples = 0
        self.model_steps = 0
        self.pretrained = False
        self.seconds = 0.0
        self.log = CsvLog(self.work_dir / "eval.csv", EVAL_FIELDS)
        self.last_eval: dict = {}
        self.stop_message = None
        self._signal = None
        self.last_metrics: dict = {}
        if self.checkpoint_path.exists():
            if not cfg.resume:
                raise CheckpointError(f"{self.work_dir} already holds a policy run: pass resume=true to continue it, or another work_dir.")
            state, path = load_latest(self.checkpoint_path.parent)
            self._restore(state, path)
        elif cfg.resume:
            raise CheckpointError(f"resume=true, but there is no checkpoint at {self.checkpoint_path} to continue.")

    @staticmethod
    def _check(cfg: PixelDMOConfig) -> None:
        from .play_data import PlayDatasetError

        missing = [name for name in ("world_model", "reward", "data") if not getattr(cfg, name)]
        if missing:
            raise PlayDatasetError(
                f"mbdpo-dmo policy needs {', '.join(f'{m}=<...>' for m in missing)}: the world model checkpoint "
                "(mbdpo-dmo world_model), the reward checkpoint (mbdpo-dmo reward) and the play dataset."
            )
        if cfg.forward not in FORWARDS:
            raise ValueError(f"forward must be one of {FORWARDS} (local: the 'No Diffusion' ablation), got {cfg.forward!r}.")
        for name in (
            "iterations",
            "num_envs",
            "horizon",
            "episode_steps",
            "batch_size",
            "eval_freq",
            "eval_episodes",
            "eval_steps",
            "checkpoint_freq",
        ):
            if getattr(cfg, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}.")

    # ------------------------------------------------------------------ data
    def _play_batch(self, n: int) -> TensorDict:
        """Play-data transitions as the local model reads them: 3 stacked frames before and after ``a_t``, and the
        learned reward of the transition (start frame: the episode's first)."""
        rows = self.train_rows[torch.randint(len(self.train_rows), (n,), generator=self.generator)]
        w = self.dataset.windows(rows, OBSERVATION_FRAMES)
        start = self.dataset.rows["pixels"][self.dataset.episode_start[self.dataset.rows["episode"][rows]]]
        reward = self.reward_fn(TensorDict({"pixels": w["target"], "start_pixels": start}, batch_size=[n]))
        next_frames = torch.cat([w["frames"][:, 1:], w["target"][:, None]], 1)
        return TensorDict(
            {
                "observation": w["frames"].flatten(1, 2),
                "action": w["actions"][:, -1],
                "next_observation": next_frames.flatten(1, 2),
                "reward": reward,
            },
            batch_size=[n],
        ).to(self.cfg.device)

    def _step(self, name: str, loss: torch.Tensor, clip: float | None) -> bool:
        optim = self.optimizers[name]
        optim.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):
            return False
        loss.backward()
        params = [p for group in optim.param_groups for p in group["params"]]
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf)
        if not torch.isfinite(norm):
            optim.zero_grad(set_to_none=True)
            return False
        optim.step()
        return True

    def local_model_step(self, batch: TensorDict) -> float:
        loss, _, _ = self.loss.local_model_loss(batch["observation"], batch["action"], batch["next_observation"], batch["reward"])
        self._step("local_model", loss, self.cfg.grad_clip_norm)
        return loss.item()

    def pretrain(self) -> None:
        bar = tqdm(range(self.cfg.pretrain_updates), desc="local model on play data", disable=not self.cfg.progress, leave=False)
        for _ in bar:
            self.local_model_step(self._play_batch(self.cfg.batch_size))
        self.pretrained = True

    # ------------------------------------------------------------------ one iteration
    def rollout(self):
        """An ``H``-step rollout: forward through the diffusion env (DMO) or the local model (No Diffusion)."""
        from ..modules.decoupled import decoupled_rollout
        from ..objectives.dmo import _detached_call

        cfg = self.cfg
        if self.global_model is not None:
            td = self.loss.rollout(self.global_model, cfg.horizon)
            self.world_model_samples += cfg.num_envs * cfg.horizon
        else:
            wm = self.local_model
            obs0 = self.sampler(cfg.num_envs)["frames"][:, -OBSERVATION_FRAMES:].flatten(1, 2).to(cfg.device)
            with torch.no_grad():
                z0 = wm.encode_obs(obs0)
            out = decoupled_rollout(
                z0,
                self.loss.policy,
                None,
                encode=wm.encode_obs,
                local_next=lambda z, a: _detached_call(wm.dynamics.module, z, a),
                local_reward=lambda z, a: wm.decode_reward(_detached_call(wm.reward_head.module, z, a)),
                horizon=cfg.horizon,
                decoupled=False,
            )
            td = self.loss.rollout_to_tensordict(out)
        self.model_steps += cfg.num_envs * cfg.horizon
        return td

    def train_iteration(self) -> dict:
        cfg, loss = self.cfg, self.loss
        td = self.rollout()
        actor_loss = loss.actor_loss(td)
        self._step("actor", actor_loss, cfg.grad_clip_norm)
        td = td.detach()
        critic_loss = torch.zeros(())
        for _ in range(cfg.critic_updates):
            critic_loss = loss.critic_loss(td)
            self._step("critic", critic_loss, cfg.grad_clip_norm)
        self._step("alpha", loss.alpha_loss(td), None)
        self.target_updater.step()
        local = []
        k = loss.tensor_keys
        if k.observation in td.keys(True) and k.global_reward in td.keys(True):  # the diffusion env's transitions
            global_batch = TensorDict(
                {
                    "observation": td[k.observation].flatten(0, 1),
                    "action": td[k.action].flatten(0, 1),
                    "next_observation": td[k.next_observation].flatten(0, 1),
                    "reward": td[k.global_reward].flatten(0, 1),
                },
                batch_size=[td.numel()],
            )
            local.append(self.local_model_step(global_batch))
        for _ in range(cfg.local_model_updates):
            local.append(self.local_model_step(self._play_batch(cfg.batch_size)))
        self.iteration += 1
        return {
            "loss_actor": actor_loss.item(),
            "loss_critic": critic_loss.item(),
            "alpha": loss.alpha.item(),
            "rollout_reward": td["next", "reward"].mean().item(),
            "loss_local_model": sum(local) / max(len(local), 1),
        }

    # ------------------------------------------------------------------ evaluation on the real env
    def evaluate_real(self) -> dict:
        from ..trainers.dmo import DMOPolicy

        policy = TensorDictModule(DMOPolicy(self.loss, deterministic=True), in_keys=["observation"], out_keys=["action"])
        return evaluate_on_pusht(
            policy,
            image_size=self.global_world_model.cfg.image_size,
            seed=self.cfg.seed,
            step=self.iteration,
            episodes=self.cfg.eval_episodes,
            steps=self.cfg.eval_steps,
            device=self.cfg.device,
        )

    def _eval_row(self, seconds: float) -> dict:
        result = self.evaluate_real()
        row = {
            "iteration": self.iteration,
            "world_model_samples": self.world_model_samples,
            "model_steps": self.model_steps,
            "seconds": f"{seconds:.1f}",
            "success_rate": f"{result['success_rate']:.3f}",
            "mean_return": f"{result['mean_return']:.3f}",
            "rollout_reward": f"{self.last_metrics.get('rollout_reward', float('nan')):.4f}",
        }
        self.log.append(row)
        self.last_eval = row
        return row

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self, seconds: float) -> dict:
        return {
            "kind": CHECKPOINT_KIND,
            "loss": self.loss.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "iteration": self.iteration,
            "world_model_samples": self.world_model_samples,
            "model_steps": self.model_steps,
            "pretrained": self.pretrained,
            "seconds": seconds,
            "generator": self.generator.get_state(),
            "config": asdict(self.cfg),
            "local_model_config": self.local_model.cfg.to_dict(),
            "reward_kind": self.reward_kind,
        }

    def save(self, seconds: float) -> Path:
        from ..trainers.checkpoint import save_checkpoint

        return save_checkpoint(self.state_dict(seconds), self.checkpoint_path)

    def _restore(self, state: dict, path) -> None:
        from ..trainers.checkpoint import CheckpointError, check_compatible

        if state.get("kind") != CHECKPOINT_KIND:
            raise CheckpointError(f"{path} is not a pixel DMO policy checkpoint (kind={state.get('kind')!r}).")
        check_compatible(state["local_model_config"], self.local_model.cfg.to_dict(), "local model", path)
        saved = {k: state["config"][k] for k in ("forward", "num_envs", "horizon")}
        check_compatible(saved, {k: getattr(self.cfg, k) for k in saved}, "run setting", path)
        self.loss.load_state_dict(state["loss"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.iteration, self.world_model_samples, self.model_steps = state["iteration"], state["world_model_samples"], state["model_steps"]
        self.pretrained, self.seconds = state["pretrained"], float(state["seconds"])
        self.generator.set_state(state["generator"])
        self.log.truncate(self.iteration)
        rows = self.log.rows()
        self.last_eval = rows[-1] if rows else {}

    # ------------------------------------------------------------------ the run
    def _handle(self, signum, frame):
        self._signal = signum

    def train(self) -> dict:
        cfg = self.cfg
        handlers = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        start = time.perf_counter()
        clock = lambda: self.seconds + time.perf_counter() - start  # noqa: E731
        try:
            if not self.pretrained:
                self.pretrain()
            if self.iteration == 0 and not self.log.rows():
                self._eval_row(clock())
            with tqdm(
                total=cfg.iterations,
                initial=min(self.iteration, cfg.iterations),
                desc=f"dmo ({cfg.forward} forward)",
                disable=not cfg.progress,
            ) as bar:
                while self.iteration < cfg.iterations:
                    if self._signal is not None:
                        self.stop_message = f"stopped by signal {self._signal} at iteration {self.iteration}; resume with resume=true"
                        break
                    self.last_metrics = self.train_iteration()
                    bar.update()
                    bar.set_postfix(actor=f"{self.last_metrics['loss_actor']:.3g}", success=self.last_eval.get("success_rate", ""))
                    if self.iteration % cfg.eval_freq == 0 or self.iteration == cfg.iterations:
                        self._eval_row(clock())
                    if self.iteration % cfg.checkpoint_freq == 0 and self.iteration < cfg.iterations:
                        self.save(clock())
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        self.save(clock())
        return self.last_eval


def train_pixel_dmo(cfg: PixelDMOConfig) -> PixelDMOTrainer:
    trainer = PixelDMOTrainer(cfg)
    trainer.train()
    return trainer
