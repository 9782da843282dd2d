"""Online single-task training: a ``torchrl.trainers.Trainer`` wired with a ``Collector``, an episode
replay buffer sampled by ``SliceSampler``, the MBDPO optimisation stepper and ``SoftUpdate`` targets.

Protocol (spec §4.2): ``seed_steps`` random actions, then ``pretrain_updates`` updates at once, then
``utd`` updates per agent step; evaluation every ``eval_freq`` agent steps (and at step 0) on a separate
env, reporting the planner's and the policy prior's returns.

Nothing lost (checkpoints): every ``checkpoint_freq`` steps, at the first step where every env ends an
episode, the whole run state is written (models, optimisers, running statistics, replay buffer, counters,
RNG states). The training envs are then re-seeded from ``(seed, step)``; a resumed run does the same, so
a run killed at any moment and resumed with ``resume=true`` continues exactly as if never stopped.
Evaluations draw from their own RNG streams, seeded by ``(seed, step)``, and perturb nothing.
"""
from __future__ import annotations

import dataclasses
import math
import random
import signal
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torchrl.collectors import Collector
from torchrl.objectives import SoftUpdate
from torchrl.record.loggers import get_logger
from torchrl.trainers import OptimizationStepper, Trainer
from tqdm.auto import tqdm

from ..data import TRANSITION_KEYS, EpisodeWriter, make_replay_buffer
from ..envs import make_env, make_multitask_env, observation_size
from ..modules import DiffusionActor, MBDPOWorldModel, MPPIActor, PolicyPriorActor, WorldModelConfig
from ..objectives import MBDPOLoss, TDMPC2Loss
from ..objectives.mbdpo import make_optimizers, update
from .checkpoint import CheckpointError, check_compatible, load_checkpoint, load_latest, save_run_checkpoint
from .config import RESUMABLE_FIELDS, TrainConfig, default_work_dir, from_container, to_container
from .diagnostics import action_drift, td_error
from .evaluation import EvalLog, episode_success, evaluate, truncate_csv_logs

__all__ = ["MBDPOOptimizationStepper", "MBDPOTrainer", "make_trainer", "build_agent", "build_loss_and_actor", "make_actor", "load_agent",
           "checkpoint_env", "run_to_resume"]


class MBDPOOptimizationStepper(OptimizationStepper):
    """One MBDPO update (world-model step, policy-prior step, Polyak target update; :func:`update`), with
    the constructor of TorchRL's ``TdMpc2OptimizationStepper``: ``(loss_module, optimizer_model,
    optimizer_actor, *, target_tau=0.01, zero_grad_set_to_none=True)``, plus ``precision`` (``fp32``/``bf16``)
    and ``grad_sync`` (data-parallel gradient averaging). Gradients are clipped to the trainer's
    ``clip_norm`` (20, the official value). Counts the updates skipped because of a non-finite loss or
    gradient; its metrics are TorchRL's (``loss_model``, ``loss_actor``, ``model_grad_norm``,
    ``actor_grad_norm``, ...) plus MBDPO's terms (``loss_energy``, ``loss_score``, ...)."""

    def __init__(self, loss_module: MBDPOLoss, optimizer_model, optimizer_actor, *, target_tau: float = 0.01,
                 zero_grad_set_to_none: bool = True, precision: str = "fp32", grad_sync=None):
        if not 0 <= target_tau <= 1:
            raise ValueError(f"target_tau must be in [0, 1], got {target_tau!r}.")
        model_ids = {id(p) for group in optimizer_model.param_groups for p in group["params"]}
        if any(id(p) in model_ids for group in optimizer_actor.param_groups for p in group["params"]):
            raise ValueError("optimizer_model and optimizer_actor must not share parameters.")
        self.loss_module, self.optimizer_model, self.optimizer_actor = loss_module, optimizer_model, optimizer_actor
        self.target_tau, self.precision, self.grad_sync = float(target_tau), precision, grad_sync
        self.target_updater = SoftUpdate(loss_module, tau=target_tau)
        self.update_count = 0
        self.skipped_total = 0
        self.skipped_in_a_row = 0

    def step(self, trainer, sub_batch):
        clip_norm = getattr(trainer, "clip_norm", None)
        metrics = update(self.loss_module, sub_batch, self.optimizer_model, self.optimizer_actor, self.target_updater,
                         20.0 if clip_norm is None else clip_norm, self.precision, self.grad_sync)
        self.update_count += 1
        if metrics["nonfinite_skipped"].item():
            self.skipped_total += 1
            self.skipped_in_a_row += 1
        else:
            self.skipped_in_a_row = 0
        return metrics

    def state_dict(self):
        return {"update_count": self.update_count, "optimizer_model": self.optimizer_model.state_dict(),
                "optimizer_actor": self.optimizer_actor.state_dict(), "skipped_total": self.skipped_total,
                "skipped_in_a_row": self.skipped_in_a_row}

    def load_state_dict(self, state_dict):
        self.optimizer_model.load_state_dict(state_dict["optimizer_model"])
        self.optimizer_actor.load_state_dict(state_dict["optimizer_actor"])
        self.update_count = state_dict.get("update_count", 0)
        self.skipped_total = state_dict["skipped_total"]
        self.skipped_in_a_row = state_dict["skipped_in_a_row"]


ALGOS = ("mbdpo", "tdmpc2")


def make_actor(cfg: TrainConfig, world_model, discount):
    """The planner of ``cfg.algo``: ``DiffusionActor`` (mbdpo) or ``MPPIActor`` (tdmpc2)."""
    actor_cls = MPPIActor if cfg.algo == "tdmpc2" else DiffusionActor
    return actor_cls(world_model, cfg.active_planner(), discount=discount, precision=cfg.precision)


def world_model_config(cfg: TrainConfig, obs_dim: int, action_dim: int, episodic: bool, **multitask) -> WorldModelConfig:
    """The architecture a run config asks for (``multitask``: ``num_tasks``, ``action_dims``; the task
    embedding then defaults to the paper's 96 dims)."""
    overrides = cfg.model.as_kwargs()
    if cfg.algo == "tdmpc2":
        overrides.setdefault("q_init", "trunc_normal")  # TD-MPC2 since e9f5932 initialises its Q heads (spec §1.1)
    if multitask:
        overrides.setdefault("task_dim", 96)
    return WorldModelConfig.from_size(cfg.model_size, obs_dim, action_dim, horizon=cfg.active_planner().horizon,
                                      episodic=episodic, obs_type=cfg.obs, **overrides, **multitask)


def build_agent(cfg: TrainConfig, obs_dim: int, action_dim: int, task_spec):
    """World model, loss and actor for a config and an environment's dimensions."""
    episodic = task_spec.episodic if cfg.episodic is None else cfg.episodic
    world_model = MBDPOWorldModel(world_model_config(cfg, obs_dim, action_dim, episodic))
    return (world_model, *build_loss_and_actor(cfg, world_model, task_spec.discount))


def build_loss_and_actor(cfg: TrainConfig, world_model: MBDPOWorldModel, discount):
    """The loss and planner of ``cfg.algo`` around a world model (moved to ``cfg.device``). ``discount``: a
    float, or one per task index (multi-task; batches may also carry their own ``discount``)."""
    if cfg.algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {cfg.algo!r}")
    world_model.to(cfg.device)
    if cfg.algo == "tdmpc2":
        shared = {k: v for k, v in vars(cfg.loss).items() if k not in TDMPC2Loss._MBDPO_ONLY and k != "target_q_pair"}
        loss = TDMPC2Loss(world_model, discount=discount, **shared).to(cfg.device)
    else:
        # The score-matching target re-uses the planner's schedule and energy weight: one setting each.
        planner = cfg.planner
        loss = MBDPOLoss(world_model, discount=discount, contrastive_eta=planner.energy_eta, diffusion_steps=planner.steps,
                         beta0=planner.beta0, betaT=planner.betaT, **vars(cfg.loss)).to(cfg.device)
    actor = make_actor(cfg, world_model, discount).to(cfg.device)
    return loss, actor


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class MBDPOTrainer(Trainer):
    """TorchRL ``Trainer`` running the MBDPO protocol; see the module docstring."""

    def __init__(self, cfg: TrainConfig, *, collector, env_spec, world_model, loss, actor, eval_env, replay_buffer, work_dir,
                 task_names=None):
        self.cfg = cfg
        self.task_names = task_names
        self.task_spec = env_spec
        self.world_model, self.actor, self.eval_env = world_model, actor, eval_env
        self.prior_actor = PolicyPriorActor(world_model)
        self.work_dir = Path(work_dir)
        self.pretrain_updates = cfg.pretrain_updates if cfg.pretrain_updates is not None else collector.init_random_frames
        model_optim, pi_optim = make_optimizers(loss, lr=cfg.lr, enc_lr_scale=cfg.enc_lr_scale)
        stepper = MBDPOOptimizationStepper(loss, model_optim, pi_optim, target_tau=cfg.tau, precision=cfg.precision)
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
            clip_norm=cfg.grad_clip_norm,
            log_interval=min(1000, max(cfg.eval_freq, 1)),
        )
        self.replay_buffer_ = replay_buffer
        self.episode_writer = EpisodeWriter(replay_buffer, TRANSITION_KEYS + (["task"] if world_model.cfg.multitask else []))
        self.eval_log = EvalLog(self.work_dir, title=f"{cfg.algo} {cfg.task} (seed {cfg.seed})")
        self._pretrained = self.pretrain_updates == 0
        self._update_credit = 0.0
        self._next_eval = cfg.eval_freq
        self._next_ckpt = cfg.checkpoint_freq
        # With equal-length episodes in lock-step, every env ends an episode within one episode length.
        self._ckpt_max_delay = env_spec.episode_length * max(1, cfg.num_envs)
        self._signal = None
        self._last_batch_done = False
        self.stop_message = ""
        self.last_eval: dict = {}
        self._t0 = time.time()
        self.register_op("setup", self._on_setup)
        self.register_op("batch_process", self._write_episodes)
        self.register_op("pre_steps_log", self._log_train_episodes)
        self.register_op("pre_optim_steps", self._pretrain_once)
        self.register_op("process_optim_batch", self._sample)
        self.register_op("post_steps_log", self._evaluate_if_due)
        self.register_op("post_steps_log", self._checkpoint_if_due)  # after the evaluation of that step
        self.register_op("shutdown", self._final)

    # ----------------------------------------------------------------- hooks
    def _on_setup(self):
        if self.collected_frames == 0:
            self.run_evaluation()  # the step-0 evaluation
        elif self.progress_bar:
            self._pbar.update(self.collected_frames)

    def _write_episodes(self, batch):
        self.episode_writer(batch)
        self._last_batch_done = bool(batch["next", "done"].all())
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
        if self._too_many_nonfinite():
            self.stop_message = (
                f"Stopped at step {self.collected_frames}: {self.optimization_stepper.skipped_in_a_row} updates in a row had a "
                "non-finite loss or gradient (they were skipped; the checkpoint holds the last finite parameters). "
                "Lower lr, check the rewards/observations for NaN or huge values, or raise max_nonfinite."
            )
            self._stop_training = True

    def _too_many_nonfinite(self) -> bool:
        return self.optimization_stepper.skipped_in_a_row >= self.cfg.max_nonfinite

    def _sample(self, _batch):
        if self._too_many_nonfinite():
            raise StopIteration  # ends the Trainer's update loop for this batch
        return self.replay_buffer_.sample().reshape(-1, self.cfg.active_planner().horizon).to(self.cfg.device)

    def _pretrain_once(self):
        """Run the pretraining updates once, as soon as the buffer holds a complete episode (with many
        envs and long episodes that can be after ``seed_steps``: episodes are written when they end)."""
        if self._pretrained or not len(self.replay_buffer_):
            return
        self._pretrained = True
        bar = tqdm(range(self.pretrain_updates), desc="pretraining on seed data", disable=not self.cfg.progress, leave=False)
        for _ in bar:
            metrics = self.optimization_stepper.step(self, self._sample(None))
            if self._too_many_nonfinite():
                break
        if self.pretrain_updates:
            self._log(**{k: v.item() for k, v in metrics.items()})

    def _evaluate_if_due(self, _batch=None):
        if self.collected_frames >= self._next_eval:
            self._next_eval = (self.collected_frames // self.cfg.eval_freq + 1) * self.cfg.eval_freq
            self.run_evaluation()

    def _checkpoint_if_due(self, _batch=None):
        if self._signal is not None or self._stop_training:
            self.stop_message = self.stop_message or f"Received signal {self._signal}: checkpoint written, stopping."
            self._stop_training = True
            return  # the shutdown hook writes the checkpoint
        due = self.collected_frames >= self._next_ckpt
        if due and (self._last_batch_done or self.collected_frames >= self._next_ckpt + self._ckpt_max_delay):
            self.save_checkpoint()
            self._next_ckpt = (self.collected_frames // self.cfg.checkpoint_freq + 1) * self.cfg.checkpoint_freq

    def _final(self):
        if not self._stop_training and self.last_eval.get("step") != self.collected_frames:
            self.run_evaluation()
        self.save_checkpoint()

    def _pbar_description(self) -> None:
        # No forced refresh: tqdm redraws at its own rate, so logs of non-interactive runs stay short.
        if self.progress_bar:
            desc = ", ".join(f"{k} {v:.1f}" for k, v in sorted(self._pbar_str.items()))
            self._pbar.set_description(desc, refresh=False)

    # ----------------------------------------------------------------- public
    def train(self):
        """Train, checkpointing and stopping cleanly on SIGTERM/SIGINT."""

        def request_stop(signum, _frame):
            self._signal = signum

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            super().train()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if self.stop_message:
            print(self.stop_message, flush=True)

    def run_evaluation(self) -> dict:
        """Planner and policy-prior returns; seeded by ``(seed, step)`` and isolated from training RNGs."""
        L, n, step = self.task_spec.episode_length, self.cfg.eval_episodes, self.collected_frames
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed * 1_000_003 + step)
            self.eval_env.set_seed(self.cfg.seed + 10_000 + step)
            played = []
            planner = torch.tensor(evaluate(self.eval_env, self.actor, n, L, transitions=played))
            prior = torch.tensor(evaluate(self.eval_env, self.prior_actor, n, L))
            played = torch.cat([td.reshape(-1) for td in played])
            diagnostics = self._diagnostics(played)
        row = {
            "step": step,
            "episode_reward": planner.mean().item(),
            "episode_reward_std": planner.std(unbiased=False).item(),
            "prior_episode_reward": prior.mean().item(),
            "episode_success": episode_success(played),
            **diagnostics,
            "env_steps": step * self.task_spec.action_repeat,
            "wall_time_s": round(time.time() - self._t0, 1),
        }
        self.eval_log.append(row)
        self.last_eval = row
        if self.logger is not None:
            for k in ("episode_reward", "prior_episode_reward", "episode_success", "td_error_replay", "td_error_planner", "action_drift_l2",
                      "action_drift_logratio"):
                self.logger.log_scalar(f"eval/{k}", row[k], step=step)
        if self.progress_bar and hasattr(self, "_pbar"):
            self._pbar_str["eval_return"] = row["episode_reward"]
            self._pbar_description()
        return row

    def _diagnostics(self, played) -> dict:
        """Cross TD error and action drift (see :mod:`.diagnostics`) on the planner's evaluation steps and
        one replay batch (NaN for the replay column before the first data)."""
        played = played.to(self.cfg.device)
        task = played.get("task", None) if self.world_model.cfg.multitask else None
        out = {"td_error_planner": td_error(self.loss_module, played),
               **action_drift(self.world_model, played.get("observation"), played.get("action"), task)}
        replay = self.replay_buffer_.sample().to(self.cfg.device) if len(self.replay_buffer_) else None
        out["td_error_replay"] = td_error(self.loss_module, replay) if replay is not None else math.nan
        return out

    def _reseed_training_envs(self) -> None:
        """Fresh episodes from a seed of ``(seed, step)``: identical in an uninterrupted and a resumed run."""
        if self.collector.env.is_closed:  # the collector closes its env once total_frames are collected
            return
        self.collector.env.set_seed(self.cfg.seed + 7919 * self.collected_frames)
        self.collector.reset()
        self.episode_writer.discard_pending()

    def checkpoint_state(self) -> dict:
        return {
            "config": to_container(self.cfg),
            "task": {**dataclasses.asdict(self.task_spec), "discount": self.task_spec.discount},
            "world_model_config": self.world_model.cfg.to_dict(),
            "task_names": self.task_names,
            "discounts": self.actor.discount.tolist() if self.actor.discount.ndim else None,
            "step": self.collected_frames,
            "world_model": self.world_model.state_dict(),
            "loss": self.loss_module.state_dict(),
            "optimizers": self.optimization_stepper.state_dict(),
            "replay_buffer": self.replay_buffer_.state_dict(),
            "episode_writer": self.episode_writer.state_dict(),
            "trainer": {"next_eval": self._next_eval, "next_ckpt": self._next_ckpt, "pretrained": self._pretrained,
                        "update_credit": self._update_credit, "optim_count": self._optim_count,
                        "collector_iter": self.collector._iter},
            "rng": _rng_state(),
        }

    def save_checkpoint(self) -> Path | None:
        """Re-seed the training envs, then write the whole run state (see the module docstring). A failed
        write (e.g. a full disk) keeps the previous checkpoints and training goes on, with a warning."""
        self._reseed_training_envs()
        return save_run_checkpoint(self.checkpoint_state(), self.work_dir, self.collected_frames)

    def load_state(self, state: dict) -> None:
        """Continue from a checkpoint written by :meth:`save_checkpoint`."""
        self.world_model.load_state_dict(state["world_model"])
        self.loss_module.load_state_dict(state["loss"])
        self.optimization_stepper.load_state_dict(state["optimizers"])
        self.replay_buffer_.load_state_dict(state["replay_buffer"])
        self.episode_writer.load_state_dict(state["episode_writer"])
        t = state["trainer"]
        self.collected_frames = state["step"]
        self._next_eval, self._next_ckpt, self._pretrained = t["next_eval"], t["next_ckpt"], t["pretrained"]
        self._update_credit, self._optim_count = t["update_credit"], t["optim_count"]
        self.collector.load_state_dict({"frames": state["step"], "iter": t["collector_iter"]}, strict=False)
        self._reseed_training_envs()
        truncate_csv_logs(self.work_dir, state["step"])
        rows = self.eval_log.rows()
        self.last_eval = rows[-1] if rows else {}
        _set_rng_state(state["rng"])


def run_to_resume(cfg: TrainConfig, work_dir: Path) -> dict | None:
    """The checkpoint ``resume=true`` continues (its config checked against ``cfg``), or None for a new run;
    a new run never overwrites an existing one."""
    if not cfg.resume:
        if (work_dir / "checkpoints" / "latest.pt").exists():
            raise ValueError(f"{work_dir} already holds a run. Pass resume=true to continue it, or another work_dir=.")
        return None
    try:
        state, path = load_latest(work_dir / "checkpoints")
    except CheckpointError as err:
        raise CheckpointError(f"resume=true, but {err} (Drop resume=true to start a new run in {work_dir}.)") from err
    saved, requested = state["config"], to_container(cfg)
    keep = [k for k in saved if k not in RESUMABLE_FIELDS]
    check_compatible({k: saved[k] for k in keep}, {k: requested.get(k) for k in keep}, "config", path)
    return state


def make_trainer(cfg: TrainConfig, *, env_maker=None, agent=None, task_names=None) -> MBDPOTrainer:
    """Build envs, agent, collector and replay buffer from a config (and restore them with ``resume``).

    ``env_maker(seed, num_envs)`` replaces ``make_env(cfg.task, ...)``, ``agent`` a ``(world_model, loss,
    actor)`` triple replaces :func:`build_agent`; ``task_names`` lists a multi-task model's tasks in
    embedding order (for its checkpoints). ``mbdpo-finetune`` uses them."""
    cfg = cfg.resolved()
    if cfg.algo == "dmo":  # DMO-SAPO has its own loop (no planner, no collector)
        from .dmo import make_dmo_trainer
        return make_dmo_trainer(cfg)
    if cfg.mode != "online":
        raise ValueError(f"make_trainer runs mode=online; mode={cfg.mode!r} runs through torchrl_mbdpo.trainers.offline.")
    if not isinstance(cfg.task, str):
        raise ValueError(f"mode=online trains one task; got task={list(cfg.task)}. Several tasks train offline: mode=offline data_dir=<dir>.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work_dir = Path(cfg.work_dir or default_work_dir(cfg.algo, cfg.task, cfg.seed))
    state = run_to_resume(cfg, work_dir)
    torch.manual_seed(cfg.seed)
    env_maker = env_maker or partial(make_env, cfg.task, obs=cfg.obs)
    env = env_maker(seed=cfg.seed, num_envs=cfg.num_envs)
    spec = env.task_spec
    world_model, loss, actor = agent or build_agent(cfg, observation_size(env), env.action_spec.shape[-1], spec)
    env.append_transform(actor.make_tensordict_primer())
    eval_env = env_maker(seed=cfg.seed + 10_000, num_envs=max(1, min(cfg.num_envs, cfg.eval_episodes)))
    eval_env.append_transform(actor.make_tensordict_primer())
    seed_steps = cfg.seed_steps if cfg.seed_steps is not None else max(1000, 5 * spec.episode_length)
    frames_per_batch = max(1, cfg.num_envs)
    seed_steps = -(-seed_steps // frames_per_batch) * frames_per_batch
    collector = Collector(
        env, actor, frames_per_batch=frames_per_batch, total_frames=cfg.steps, init_random_frames=seed_steps,
        policy_device=cfg.device, env_device="cpu", storing_device="cpu",
    )
    # Capacity as the official code, min(buffer_size, steps), fixed by the run's first config: a resumed
    # run that asks for more steps keeps the buffer it had.
    first_steps = state["config"]["steps"] if state is not None else cfg.steps
    replay_buffer = make_replay_buffer(cfg.active_planner().horizon, cfg.batch_size, min(cfg.buffer_size, max(first_steps, 1)))
    trainer = MBDPOTrainer(cfg, collector=collector, env_spec=spec, world_model=world_model, loss=loss, actor=actor,
                           eval_env=eval_env, replay_buffer=replay_buffer, work_dir=work_dir, task_names=task_names)
    if state is not None:
        trainer.load_state(state)
    return trainer


def load_agent(checkpoint_path, cfg: TrainConfig | None = None, *, state: dict | None = None):
    """World model + actor from a checkpoint (``state``: its content, if already loaded); with ``cfg``,
    refuse a checkpoint of another architecture."""
    state = load_checkpoint(checkpoint_path) if state is None else state
    saved_cfg = from_container(state["config"])
    cfg = cfg or saved_cfg
    wm_cfg = WorldModelConfig.from_dict(state["world_model_config"])
    if cfg is not saved_cfg:
        requested = world_model_config(cfg, wm_cfg.obs_dim, wm_cfg.action_dim, wm_cfg.episodic)
        check_compatible(wm_cfg.to_dict(), requested.to_dict(), "world-model architecture", checkpoint_path)
    world_model = MBDPOWorldModel(wm_cfg)
    world_model.load_state_dict(state["world_model"])
    discount = torch.tensor(state["discounts"]) if state.get("discounts") else state["task"]["discount"]
    actor = make_actor(cfg, world_model, discount)
    return state, cfg, world_model, actor


def checkpoint_env(state: dict, task: str, *, seed: int, obs: str = "state"):
    """An env of ``task`` shaped for a checkpoint's world model: multi-task checkpoints get their padded
    observation/action sizes and the task's index (the task must be one they were trained on)."""
    names = state.get("task_names")
    if not names:
        return make_env(task, seed=seed, obs=obs)
    trained = state.get("trained_tasks") or names
    if task not in trained:
        raise ValueError(f"task={task} is not a task of this multi-task checkpoint; it was trained on {trained}. "
                         "A new task needs fine-tuning first: mbdpo-finetune checkpoint=... task=<new> source_task=<known>.")
    wm_cfg = state["world_model_config"]
    return make_multitask_env(task, names.index(task), wm_cfg["obs_dim"], wm_cfg["action_dim"], seed=seed)
