"""Online single-task training: a ``torchrl.trainers.Trainer`` wired with a ``Collector``, an episode
replay buffer sampled by ``SliceSampler``, the MBDPO optimisation stepper and ``SoftUpdate`` targets.

Protocol (spec §4.2): ``seed_steps`` random actions, then ``pretrain_updates`` updates at once, then
``utd`` updates per agent step; evaluation every ``eval_freq`` agent steps (and at step 0) on a separate
env, reporting the planner's and the policy prior's returns.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import torch
from torchrl.collectors import Collector
from torchrl.objectives import SoftUpdate
from torchrl.record.loggers import get_logger
from torchrl.trainers import OptimizationStepper, TargetNetUpdaterHook, Trainer
from tqdm.auto import tqdm

from ..data import EpisodeWriter, make_replay_buffer
from ..envs import make_env
from ..modules import DiffusionActor, MBDPOWorldModel, PolicyPriorActor, WorldModelConfig
from ..objectives import MBDPOLoss
from ..objectives.mbdpo import make_optimizers, update
from .checkpoint import check_compatible, load_checkpoint, save_checkpoint
from .config import TrainConfig, to_container
from .evaluation import EvalLog, evaluate

__all__ = ["MBDPOOptimizationStepper", "MBDPOTrainer", "make_trainer", "build_agent"]


class MBDPOOptimizationStepper(OptimizationStepper):
    """One MBDPO update: world-model step (model optimiser), then policy-prior step (pi optimiser)."""

    def __init__(self, loss: MBDPOLoss, model_optim, pi_optim, grad_clip_norm: float = 20.0):
        self.loss, self.model_optim, self.pi_optim, self.grad_clip_norm = loss, model_optim, pi_optim, grad_clip_norm

    def step(self, trainer, sub_batch):
        # The target Qs are Polyak-updated by the trainer's TargetNetUpdaterHook after this step.
        return update(self.loss, sub_batch, self.model_optim, self.pi_optim, None, self.grad_clip_norm)

    def state_dict(self):
        return {"model_optim": self.model_optim.state_dict(), "pi_optim": self.pi_optim.state_dict()}

    def load_state_dict(self, state_dict):
        self.model_optim.load_state_dict(state_dict["model_optim"])
        self.pi_optim.load_state_dict(state_dict["pi_optim"])


def build_agent(cfg: TrainConfig, obs_dim: int, action_dim: int, task_spec):
    """World model, loss and actor for a config and an environment's dimensions."""
    episodic = task_spec.episodic if cfg.episodic is None else cfg.episodic
    wm_cfg = WorldModelConfig.from_size(
        cfg.model_size, obs_dim, action_dim, horizon=cfg.planner.horizon, episodic=episodic, **cfg.model.as_kwargs()
    )
    world_model = MBDPOWorldModel(wm_cfg).to(cfg.device)
    # The score-matching target re-uses the planner's schedule and energy weight: one setting each.
    planner = cfg.planner
    loss = MBDPOLoss(world_model, discount=task_spec.discount, contrastive_eta=planner.energy_eta, diffusion_steps=planner.steps,
                     beta0=planner.beta0, betaT=planner.betaT, **vars(cfg.loss)).to(cfg.device)
    actor = DiffusionActor(world_model, cfg.planner, discount=task_spec.discount).to(cfg.device)
    return world_model, loss, actor


class MBDPOTrainer(Trainer):
    """TorchRL ``Trainer`` running the MBDPO protocol; see the module docstring."""

    def __init__(self, cfg: TrainConfig, *, collector, env_spec, world_model, loss, actor, eval_env, replay_buffer, work_dir):
        self.cfg = cfg
        self.task_spec = env_spec
        self.world_model, self.actor, self.eval_env = world_model, actor, eval_env
        self.prior_actor = PolicyPriorActor(world_model)
        self.work_dir = Path(work_dir)
        self.seed_steps = collector.init_random_frames
        self.pretrain_updates = cfg.pretrain_updates if cfg.pretrain_updates is not None else self.seed_steps
        model_optim, pi_optim = make_optimizers(loss, lr=cfg.lr, enc_lr_scale=cfg.enc_lr_scale)
        stepper = MBDPOOptimizationStepper(loss, model_optim, pi_optim, cfg.grad_clip_norm)
        logger = get_logger(cfg.logger, logger_name=str(self.work_dir / "logs"), experiment_name="mbdpo")
        super().__init__(
            collector=collector,
            total_frames=cfg.steps,
            frame_skip=1,
            optim_steps_per_batch=1,  # set per batch from cfg.utd in optim_steps
            loss_module=loss,
            optimization_stepper=stepper,
            logger=logger,
            progress_bar=cfg.progress,
            seed=cfg.seed,
            save_trainer_interval=math.inf,
            log_interval=min(1000, max(cfg.eval_freq, 1)),
        )
        self.replay_buffer_ = replay_buffer
        self.episode_writer = EpisodeWriter(replay_buffer)
        self.updater = SoftUpdate(loss, tau=cfg.tau)
        TargetNetUpdaterHook(self.updater).register(self, "target_net_updater")
        self.eval_log = EvalLog(self.work_dir, title=f"MBDPO {cfg.task} (seed {cfg.seed})")
        self._pretrained = self.pretrain_updates == 0
        self._update_credit = 0.0
        self._next_eval = cfg.eval_freq
        self._next_ckpt = cfg.checkpoint_freq
        self._t0 = time.time()
        self.last_eval: dict = {}
        self.register_op("setup", self.run_evaluation)  # the step-0 evaluation
        self.register_op("batch_process", self._write_episodes)
        self.register_op("pre_steps_log", self._log_train_episodes)
        self.register_op("pre_optim_steps", self._pretrain_once)
        self.register_op("process_optim_batch", self._sample)
        self.register_op("post_steps", self._checkpoint_if_due)
        self.register_op("post_steps_log", self._evaluate_if_due)
        self.register_op("shutdown", self._final)

    # ----------------------------------------------------------------- hooks
    def _write_episodes(self, batch):
        self.episode_writer(batch)
        return batch

    def _log_train_episodes(self, batch):
        done = batch["next", "done"]
        if done.any() and ("next", "episode_reward") in batch.keys(True):
            return {"train_return": batch["next", "episode_reward"][done].mean().item(), "log_pbar": True}

    def optim_steps(self, batch) -> None:
        # Episodes enter the buffer when they end: nothing to learn from before the first one has.
        if not len(self.replay_buffer_):
            return
        # `utd` updates per agent step, fractional ratios included (0.5: one update every other step).
        self._update_credit += batch.numel() * self.cfg.utd
        self.optim_steps_per_batch = int(self._update_credit)
        self._update_credit -= self.optim_steps_per_batch
        if self.optim_steps_per_batch:
            super().optim_steps(batch)

    def _sample(self, _batch):
        sample = self.replay_buffer_.sample()
        return sample.reshape(-1, self.cfg.planner.horizon).to(self.cfg.device)

    def _pretrain_once(self):
        """Run the pretraining updates once, as soon as the buffer holds a complete episode (with many
        envs and long episodes that can be after ``seed_steps``: episodes are written when they end)."""
        if self._pretrained or not len(self.replay_buffer_):
            return
        self._pretrained = True
        bar = tqdm(range(self.pretrain_updates), desc="pretraining on seed data", disable=not self.cfg.progress, leave=False)
        for _ in bar:
            metrics = self.optimization_stepper.step(self, self._sample(None))
            self.updater.step()
        if self.pretrain_updates:
            self._log(**{k: v.item() for k, v in metrics.items()})

    def _checkpoint_if_due(self):
        if self.collected_frames >= self._next_ckpt:
            self.save_checkpoint()
            self._next_ckpt += self.cfg.checkpoint_freq

    def _evaluate_if_due(self, _batch=None):
        if self.collected_frames < self._next_eval:
            return None
        self._next_eval = (self.collected_frames // self.cfg.eval_freq + 1) * self.cfg.eval_freq
        self.run_evaluation()

    def _final(self):
        if self.last_eval.get("step") != self.collected_frames:
            self.run_evaluation()
        self.save_checkpoint()

    def _pbar_description(self) -> None:
        # No forced refresh: tqdm redraws at its own rate, so logs of non-interactive runs stay short.
        if self.progress_bar:
            desc = ", ".join(f"{k} {v:.1f}" for k, v in sorted(self._pbar_str.items()))
            self._pbar.set_description(desc, refresh=False)

    # ----------------------------------------------------------------- public
    def run_evaluation(self) -> dict:
        L, n = self.task_spec.episode_length, self.cfg.eval_episodes
        planner = torch.tensor(evaluate(self.eval_env, self.actor, n, L))
        prior = torch.tensor(evaluate(self.eval_env, self.prior_actor, n, L))
        row = {
            "step": self.collected_frames,
            "episode_reward": planner.mean().item(),
            "episode_reward_std": planner.std(unbiased=False).item(),
            "prior_episode_reward": prior.mean().item(),
            "env_steps": self.collected_frames * self.task_spec.action_repeat,
            "wall_time_s": round(time.time() - self._t0, 1),
        }
        self.eval_log.append(row)
        self.last_eval = row
        if self.logger is not None:
            for k in ("episode_reward", "prior_episode_reward"):
                self.logger.log_scalar(f"eval/{k}", row[k], step=self.collected_frames)
        if self.progress_bar and hasattr(self, "_pbar"):
            self._pbar_str["eval_return"] = row["episode_reward"]
            self._pbar_description()
        return row

    def checkpoint_state(self) -> dict:
        return {
            "config": to_container(self.cfg),
            "task": {**dataclasses.asdict(self.task_spec), "discount": self.task_spec.discount},
            "world_model_config": self.world_model.cfg.to_dict(),
            "step": self.collected_frames,
            "world_model": self.world_model.state_dict(),
            "loss": self.loss_module.state_dict(),
            "optimizers": self.optimization_stepper.state_dict(),
        }

    def save_checkpoint(self) -> Path:
        return save_checkpoint(self.checkpoint_state(), self.work_dir / "checkpoints" / "latest.pt")


def make_trainer(cfg: TrainConfig) -> MBDPOTrainer:
    """Build envs, agent, collector and replay buffer from a config."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    work_dir = Path(cfg.work_dir or f"runs/{cfg.task}/seed{cfg.seed}")
    env = make_env(cfg.task, seed=cfg.seed, num_envs=cfg.num_envs)
    spec = env.task_spec
    obs_dim = env.observation_spec["observation"].shape[-1]
    action_dim = env.action_spec.shape[-1]
    world_model, loss, actor = build_agent(cfg, obs_dim, action_dim, spec)
    env.append_transform(actor.make_tensordict_primer())
    eval_env = make_env(cfg.task, seed=cfg.seed + 10_000, num_envs=max(1, min(cfg.num_envs, cfg.eval_episodes)))
    eval_env.append_transform(actor.make_tensordict_primer())
    seed_steps = cfg.seed_steps if cfg.seed_steps is not None else max(1000, 5 * spec.episode_length)
    frames_per_batch = max(1, cfg.num_envs)
    seed_steps = -(-seed_steps // frames_per_batch) * frames_per_batch
    collector = Collector(
        env, actor, frames_per_batch=frames_per_batch, total_frames=cfg.steps, init_random_frames=seed_steps,
        policy_device=cfg.device, env_device="cpu", storing_device="cpu",
    )
    replay_buffer = make_replay_buffer(cfg.planner.horizon, cfg.batch_size, min(cfg.buffer_size, max(cfg.steps, 1)))
    return MBDPOTrainer(cfg, collector=collector, env_spec=spec, world_model=world_model, loss=loss, actor=actor,
                        eval_env=eval_env, replay_buffer=replay_buffer, work_dir=work_dir)


def load_agent(checkpoint_path, cfg: TrainConfig | None = None):
    """World model + actor from a checkpoint; with ``cfg``, refuse a checkpoint of another architecture."""
    from .config import from_container

    state = load_checkpoint(checkpoint_path)
    saved_cfg = from_container(state["config"])
    cfg = cfg or saved_cfg
    wm_cfg = WorldModelConfig.from_dict(state["world_model_config"])
    if cfg is not saved_cfg:
        requested = WorldModelConfig.from_size(cfg.model_size, wm_cfg.obs_dim, wm_cfg.action_dim, horizon=cfg.planner.horizon,
                                               episodic=wm_cfg.episodic, **cfg.model.as_kwargs())
        check_compatible(wm_cfg.to_dict(), requested.to_dict(), "world-model architecture", checkpoint_path)
    world_model = MBDPOWorldModel(wm_cfg)
    world_model.load_state_dict(state["world_model"])
    actor = DiffusionActor(world_model, cfg.planner, discount=state["task"]["discount"])
    return state, cfg, world_model, actor
