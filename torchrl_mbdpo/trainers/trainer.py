"""Online training: :class:`MBDPOTrainer`, a ``torchrl.trainers.Trainer`` with the keyword arguments of
TorchRL's ``TdMpc2Trainer`` (torchrl >= 0.15), built from TorchRL's hooks: the replay buffer
(``ReplayBufferTrainer``: a ``TensorDictReplayBuffer`` sampled by ``SliceSampler``), the optimisation
stepper (:class:`MBDPOOptimizationStepper`: model step, policy step, target update) and
``UpdateWeights`` (collector workers get the new weights after every batch).

Protocol (official code): ``collector.init_random_frames`` random actions, then ``seed_pretrain_steps``
updates at once (as soon as the buffer holds data), then ``optim_steps_per_batch`` updates per batch
(or ``updates_per_frame`` per collected frame, fractions included).

:func:`make_trainer` builds one from a :class:`~torchrl_mbdpo.trainers.config.TrainConfig` for
``mbdpo-train`` and hooks :class:`OnlineRun` onto it: evaluation (``eval.csv``, ``eval.png``,
diagnostics), resumable points, checkpoint files, signals and resume (see
:mod:`~torchrl_mbdpo.trainers.run_control`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from functools import partial
from pathlib import Path

import torch
from tensordict import TensorDict
from torchrl.collectors import Collector
from torchrl.data import SliceSampler
from torchrl.record.loggers import get_logger
from torchrl.trainers import ReplayBufferTrainer, Trainer, UpdateWeights
from tqdm.auto import tqdm

from ..data import TRANSITION_KEYS, EpisodeWriter, make_replay_buffer
from ..envs import make_env, observation_size
from ..modules import PolicyPriorActor
from ..objectives import MBDPOLoss
from .agent import build_agent
from .config import TrainConfig, default_work_dir, seed_phase, to_container
from .diagnostics import action_drift, td_error
from .evaluation import EvalLog, episode_success, evaluate, evaluation_seeds, record_video, truncate_csv_logs, video_enabled
from .optimization import MBDPOOptimizationStepper, make_optimizers
from .run_control import RunControl, RunInterrupted, named_seed, rng_state, run_to_resume, seed_everything, set_rng_state

__all__ = ["MBDPOOptimizationStepper", "MBDPOTrainer", "OnlineRun", "make_trainer"]


def _model_parts(module) -> tuple:
    """The live networks a planner or loss runs on (to check that both share them)."""
    model = module.latent_model
    parts = getattr(model, "world_model", None), getattr(model, "policy_prior", None), getattr(model, "q_ensemble", None)
    return parts if parts[0] is not None else (model,)


def _flat_extend(replay: ReplayBufferTrainer, batch):
    """TorchRL's TD-MPC2 writing: the collector's valid frames, flattened, into flat storage."""
    mask = batch.get(("collector", "mask"), default=None)
    return replay.extend(batch[mask] if mask is not None else batch.reshape(-1))


class MBDPOTrainer(Trainer):
    """MBDPO training with the keyword arguments of TorchRL's ``TdMpc2Trainer``.

    ``MBDPOTrainer(*, collector, total_frames, loss_module, planner, optimizer_model=None,
    optimizer_actor=None, optimization_stepper=None, replay_buffer, batch_size=None, frame_skip=1,
    optim_steps_per_batch=1, seed_pretrain_steps=0, logger=None, clip_grad_norm=True, clip_norm=20.0,
    progress_bar=True, seed=None, save_trainer_interval=10000, log_interval=10000, save_trainer_file=None,
    checkpoint=None, ...)`` as ``TdMpc2Trainer``: the planner must run on the loss's own networks, the
    replay buffer must be sampled by a ``SliceSampler`` of the loss's horizon, and the collector's policy is
    the planner (its workers receive the new weights after every batch). Without optimisers, the official
    ones are made (:func:`~torchrl_mbdpo.trainers.optimization.make_optimizers`). MBDPO's keyword arguments,
    beyond TorchRL's, follow.

    Keyword Args:
        replay_writer: ``writer(batch)`` storing collector batches (default: TorchRL's flat ``extend``; the
            command line stores whole episodes with :class:`~torchrl_mbdpo.data.EpisodeWriter`).
        updates_per_frame: updates per collected frame (fractions accumulate) instead of
            ``optim_steps_per_batch``.
        precision: ``fp32`` or ``bf16`` (autocast of the updates), for the stepper made here.
        max_nonfinite: stop after this many updates in a row skipped for a non-finite loss or gradient.
    """

    def __init__(
        self,
        *,
        collector,
        total_frames=None,
        loss_module: MBDPOLoss,
        planner=None,
        optimizer_model=None,
        optimizer_actor=None,
        optimization_stepper: MBDPOOptimizationStepper | None = None,
        replay_buffer=None,
        batch_size: int | None = None,
        frame_skip: int = 1,
        optim_steps_per_batch: int = 1,
        seed_pretrain_steps: int = 0,
        logger=None,
        clip_grad_norm: bool = True,
        clip_norm: float | None = 20.0,
        progress_bar: bool = True,
        seed: int | None = None,
        save_trainer_interval: int = 10000,
        log_interval: int = 10000,
        save_trainer_file=None,
        checkpoint=None,
        checkpoint_rotation=None,
        checkpoint_metadata=None,
        num_epochs: int = 1,
        async_collection: bool = False,
        log_timings: bool = False,
        auto_log_optim_steps: bool = True,
        learner_backend: str = "local",
        learner_backend_options: dict | None = None,
        learner_poll_interval: float = 0.05,
        replay_writer=None,
        updates_per_frame: float | None = None,
        precision: str = "fp32",
        max_nonfinite: int | None = None,
    ):
        if learner_backend != "local":
            raise NotImplementedError("MBDPOTrainer optimises locally (learner_backend='local').")
        if async_collection:
            raise NotImplementedError("MBDPOTrainer collects synchronously (async_collection=False).")
        if total_frames is None:
            total_frames = collector.total_frames
        if planner is None:
            raise ValueError("planner is required: the MBDPO planner (DiffusionActor / MBDPOPlanner) acting in the collector.")
        planner_parts, loss_parts = _model_parts(planner), _model_parts(loss_module)
        if len(planner_parts) != len(loss_parts) or any(a is not b for a, b in zip(planner_parts, loss_parts)):
            raise ValueError("The planner must run on the loss module's own networks (world model, policy prior, Q ensemble).")
        if planner.planner.horizon != loss_module.horizon:
            raise ValueError(f"The planner's horizon ({planner.planner.horizon}) must match the loss module's ({loss_module.horizon}).")
        if planner.discount.shape != loss_module.discount.shape or not torch.allclose(planner.discount.cpu(), loss_module.discount.cpu()):
            raise ValueError("The planner's discount must match the loss module's.")
        collector_policy = getattr(collector, "policy", None)
        if collector_policy is not None and collector_policy is not planner and not hasattr(collector, "num_workers"):
            raise ValueError("The collector's policy must be the planner given to the trainer.")
        if replay_buffer is None:
            raise ValueError("replay_buffer is required (a TensorDictReplayBuffer sampled by SliceSampler).")
        sampler = getattr(replay_buffer, "sampler", None)
        if not isinstance(sampler, SliceSampler):
            raise TypeError("replay_buffer must use a SliceSampler, so that updates see consecutive steps of one episode.")
        if sampler.slice_len not in (None, loss_module.horizon) or (sampler.slice_len is None and batch_size is None):
            raise ValueError(f"The replay SliceSampler must draw slices of slice_len={loss_module.horizon} (the loss's horizon).")
        if not getattr(sampler, "strict_length", True):
            raise ValueError("The replay SliceSampler must use strict_length=True (no short slices).")
        if seed_pretrain_steps < 0:
            raise ValueError("seed_pretrain_steps must be non-negative.")
        if optimization_stepper is None:
            if (optimizer_model is None) != (optimizer_actor is None):
                raise TypeError("Pass both optimizer_model and optimizer_actor, or neither (the official optimisers are made).")
            if optimizer_model is None:
                optimizer_model, optimizer_actor = make_optimizers(loss_module)
            optimization_stepper = MBDPOOptimizationStepper(loss_module, optimizer_model, optimizer_actor, precision=precision)
        elif optimizer_model is not None or optimizer_actor is not None:
            raise ValueError("Pass optimizers directly or provide optimization_stepper, not both.")
        elif optimization_stepper.loss_module is not loss_module:
            raise ValueError("optimization_stepper must reference the trainer's loss_module.")
        self.planner = planner
        super().__init__(
            collector=collector,
            total_frames=total_frames,
            frame_skip=frame_skip,
            optim_steps_per_batch=optim_steps_per_batch,
            loss_module=loss_module,
            optimizer=None,
            optimization_stepper=optimization_stepper,
            replay_buffer=replay_buffer,
            target_net_updater=None,
            batch_size=batch_size,
            logger=logger,
            clip_grad_norm=clip_grad_norm,
            clip_norm=clip_norm,
            progress_bar=progress_bar,
            seed=seed,
            save_trainer_interval=save_trainer_interval,
            log_interval=log_interval,
            save_trainer_file=save_trainer_file,
            checkpoint=checkpoint,
            checkpoint_rotation=checkpoint_rotation,
            checkpoint_metadata=checkpoint_metadata,
            num_epochs=num_epochs,
            log_timings=log_timings,
            auto_log_optim_steps=auto_log_optim_steps,
        )
        self.seed_pretrain_steps = int(seed_pretrain_steps)
        self.updates_per_frame = updates_per_frame
        self.max_nonfinite = max_nonfinite
        self.stop_message = ""
        self.pending_updates = 0  # updates of the current batch still to run (a checkpoint taken among them resumes them)
        self._update_credit = 0.0
        self._device = next(loss_module.parameters()).device
        replay = ReplayBufferTrainer(
            replay_buffer,
            batch_size=None if batch_size is None else batch_size * loss_module.horizon,
            flatten_tensordicts=False,
            memmap=False,
            device=self._device,
        )
        self.replay_hook = replay
        self.register_module("replay_buffer", replay)
        self.register_op("batch_process", replay_writer or partial(_flat_extend, replay))
        self.register_op("process_optim_batch", self._sample)
        self.register_op("pre_steps_log", self._owe_updates)
        weights = UpdateWeights(self.collector, 1, policy_weights_getter=partial(TensorDict.from_module, planner))
        self.register_op("post_steps", weights)

    @property
    def world_model(self):
        return self.loss_module.world_model

    def train(self):
        """``Trainer.train``; with a run control hooked on (:class:`OnlineRun`), SIGTERM/SIGINT stop it within a
        step (an update, an environment step) with a checkpoint."""
        run = getattr(self, "run", None)
        if run is None:
            return super().train()
        with run.control.handle_signals(self.request_stop):
            super().train()
        if self.stop_message:
            print(self.stop_message, flush=True)
        return run.control.exit_code

    def _checkpoint_policy(self):
        return self.planner

    def save_checkpoint(self):
        """Write the run's checkpoint now (with a run control hooked on: :meth:`OnlineRun.save_checkpoint`)."""
        run = getattr(self, "run", None)
        if run is None:
            raise RuntimeError("This trainer has no run control: pass save_trainer_file= or checkpoint= (TorchRL's checkpointing).")
        return run.save_checkpoint()

    # ----------------------------------------------------------------- updates
    def _updates_for(self, batch) -> int:
        """Updates owed for a batch: the one-off seed burst (as soon as the buffer holds data), then
        ``optim_steps_per_batch`` or ``updates_per_frame`` per collected frame."""
        stepper = self.optimization_stepper
        if stepper.update_count < self.seed_pretrain_steps:
            return self.seed_pretrain_steps - stepper.update_count
        if self.updates_per_frame is None:
            return self.optim_steps_per_batch
        frames = 0 if batch is None else batch.numel()
        self._update_credit += frames * self.updates_per_frame
        owed = int(self._update_credit)
        self._update_credit -= owed
        return owed

    def _owe_updates(self, batch):
        """Before the updates of a batch: how many it owes (kept in the trainer's state, so that a checkpoint
        taken before or among them resumes them)."""
        if self.collected_frames >= self.collector.init_random_frames and len(self.replay_buffer) and not self.pending_updates:
            self.pending_updates = self._updates_for(batch)

    def optim_steps(self, batch) -> None:
        """Run the updates the batch owes (episodes enter the buffer when they end: none before the first)."""
        if self.pending_updates:
            bursting = self.optimization_stepper.update_count < self.seed_pretrain_steps
            self.optim_steps_per_batch, per_batch = self.pending_updates, self.optim_steps_per_batch
            run = getattr(self, "run", None)
            try:
                with (
                    run.control.in_phase("pretrain") if run and bursting else contextlib.nullcontext(),
                    tqdm(
                        total=self.pending_updates,
                        desc="updates on the seed data",
                        leave=False,
                        disable=not (self.progress_bar and bursting),
                    ) as self._burst_bar,
                ):
                    super().optim_steps(batch)
            finally:
                self.optim_steps_per_batch = per_batch
        if self.max_nonfinite and self.optimization_stepper.skipped_in_a_row >= self.max_nonfinite:
            self.stop_message = (
                f"Stopped at step {self.collected_frames}: {self.optimization_stepper.skipped_in_a_row} updates in a row had a "
                "non-finite loss or gradient (they were skipped; the checkpoint holds the last finite parameters). "
                "Lower lr, check the rewards/observations for NaN or huge values, or raise max_nonfinite."
            )
            self.request_stop(self.stop_message)

    def _sample(self, _batch):
        # A stop request (signal, non-finite updates) ends the updates of this batch; the ones still owed
        # stay in ``pending_updates``, so a checkpoint taken now resumes them.
        # Per update on CPU (free); off the CPU once per batch (below), not to synchronise every update.
        too_many_nonfinite = (
            self.max_nonfinite and self._device.type == "cpu" and self.optimization_stepper.skipped_in_a_row >= self.max_nonfinite
        )
        if self._stop_training or too_many_nonfinite or not self.pending_updates:
            raise StopIteration
        self.pending_updates -= 1
        self._burst_bar.update()
        return self.replay_hook.sample(None)

    def _pbar_description(self) -> None:
        # No forced refresh: tqdm redraws at its own rate, so logs of non-interactive runs stay short.
        if self.progress_bar:
            desc = ", ".join(f"{k} {v:.1f}" for k, v in sorted(self._pbar_str.items()))
            self._pbar.set_description(desc, refresh=False)

    def state_dict(self) -> dict:
        state = super().state_dict()
        state["mbdpo"] = {"pending_updates": self.pending_updates, "update_credit": self._update_credit}
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        mbdpo = state_dict.pop("mbdpo", {})
        super().load_state_dict(state_dict)
        self.pending_updates = mbdpo.get("pending_updates", 0)
        self._update_credit = mbdpo.get("update_credit", 0.0)


class OnlineRun:
    """The run control of ``mbdpo-train``'s online runs, hooked onto an :class:`MBDPOTrainer`: evaluation
    (planner and policy-prior returns, diagnostics; ``eval.csv``, ``eval.png``), resumable points,
    checkpoint files, signals and resume (:mod:`~torchrl_mbdpo.trainers.run_control`)."""

    def __init__(
        self,
        trainer: MBDPOTrainer,
        cfg: TrainConfig,
        *,
        task_spec,
        eval_env,
        episode_writer: EpisodeWriter,
        work_dir,
        task_names=None,
        env_maker=None,
    ):
        self.trainer, self.cfg, self.task_spec, self.eval_env = trainer, cfg, task_spec, eval_env
        self.env_maker = env_maker  # ``env_maker(seed, num_envs)``: the env of the evaluation videos
        self.episode_writer, self.task_names = episode_writer, task_names
        self.work_dir = Path(work_dir)
        self.prior_actor = PolicyPriorActor(trainer.loss_module.latent_model)
        self.eval_log = EvalLog(self.work_dir, title=f"{cfg.algo} {cfg.task} (seed {cfg.seed})")
        self.control = RunControl(self.work_dir, cfg.checkpoint_freq, self.checkpoint_state, unit="agent steps", threads=cfg.threads)
        self.next_eval = 0
        self.last_eval: dict = {}
        self.steps_since_point = 0
        self._at_point = False
        self._t0 = time.time()
        trainer.run = self
        trainer.register_op("setup", self._on_setup)
        trainer.register_op("batch_process", self._on_batch)  # after the trainer's own: the writer has staged the batch
        trainer.register_op("pre_steps_log", self._log_train_episodes)
        trainer.register_op("pre_steps_log", self._on_point)
        trainer.register_op("post_steps_log", self._evaluate_if_due)
        trainer.register_op("shutdown", self._on_shutdown)

    # ----------------------------------------------------------------- the loop's hooks
    def _on_setup(self):
        """Fresh run: the first resumable point (envs seeded from (seed, 0)) and the step-0 evaluation.
        Resumed run: the same envs as at the checkpoint's point, then what that batch still owed (updates,
        evaluation) before collecting on."""
        self.control.enter("seed" if self.trainer.collected_frames < self.trainer.collector.init_random_frames else "train")
        self._reseed_training_envs()
        if self.trainer.collected_frames == 0 and not self.trainer.pending_updates:
            self.control.point(0)
        elif self.trainer.pending_updates:
            self.trainer.optim_steps(None)
        if self.trainer.progress_bar and self.trainer.collected_frames:
            self.trainer._pbar.update(self.trainer.collected_frames)
        self._evaluate_if_due()

    def _on_batch(self, batch):
        """Resumable points: when every env ended an episode with this batch, or ``episode_length`` steps
        after the last point, the finished episodes enter the buffer and every env starts a new episode."""
        done = batch["next", "done"].reshape(max(1, self.cfg.num_envs), -1)
        if self.trainer.collected_frames + batch.numel() >= self.trainer.collector.init_random_frames:
            self.control.enter("train")
        self.steps_since_point += done.shape[1]
        all_done = bool(done[:, -1].all())
        if all_done or self.steps_since_point >= self.task_spec.episode_length:
            self.episode_writer.flush(close_pending=not all_done)
            self.steps_since_point = 0
            self._at_point = True
            self._reseed_training_envs(self.trainer.collected_frames + batch.numel())
        else:
            self.control.left_point()
        return batch

    def _on_point(self, _batch=None):
        if self._at_point:
            self._at_point = False
            self.control.point(self.trainer.collected_frames)

    def _log_train_episodes(self, batch):
        done = batch["next", "done"]
        if done.any() and ("next", "episode_reward") in batch.keys(True):
            return {"train_return": batch["next", "episode_reward"][done].mean().item(), "log_pbar": True}

    def _evaluate_if_due(self, _batch=None):
        if self.trainer.collected_frames >= self.next_eval and not self.trainer._stop_training:
            try:
                with self.control.in_phase("eval"):
                    self.run_evaluation()
            except RunInterrupted:
                return  # abandoned; the checkpoint written on stop still owes it
            self.next_eval = (self.trainer.collected_frames // self.cfg.eval_freq + 1) * self.cfg.eval_freq

    def _on_shutdown(self):
        trainer, step = self.trainer, self.trainer.collected_frames
        evaluated = int(float(self.last_eval.get("step", -1))) == step  # (a resumed run reads its rows back as strings)
        self.control.finish(
            step,
            complete=step >= trainer.total_frames,
            final_eval=None if evaluated else self.run_evaluation,
            reason="" if self.control.stop_requested else trainer.stop_message,
        )
        self.eval_env.close()
        if self.control.stop_requested:
            self.stop_message = self.control.stop_message

    # ----------------------------------------------------------------- public
    @property
    def stop_message(self) -> str:
        return self.trainer.stop_message

    @stop_message.setter
    def stop_message(self, message: str) -> None:
        self.trainer.stop_message = message

    def run_evaluation(self) -> dict:
        """Planner and policy-prior returns; seeded by ``(seed, step)`` and isolated from training RNGs.
        A stop request abandons it (:class:`~torchrl_mbdpo.trainers.run_control.RunInterrupted`)."""
        cfg, step = self.cfg, self.trainer.collected_frames
        L, n = self.task_spec.episode_length, cfg.eval_episodes
        with torch.random.fork_rng(devices=[]):
            seeds = evaluation_seeds(cfg.seed, step)
            torch.manual_seed(seeds.torch)
            self.eval_env.set_seed(seeds.env)
            played = []
            planner = torch.tensor(evaluate(self.eval_env, self.trainer.planner, n, L, transitions=played, check=self.control.check))
            prior = torch.tensor(evaluate(self.eval_env, self.prior_actor, n, L, check=self.control.check))
            played = torch.cat([td.reshape(-1) for td in played])
            diagnostics = self._diagnostics(played)
            if self.env_maker is not None and video_enabled(cfg.save_video):  # one more episode, on its own env
                record_video(
                    partial(self.env_maker, seed=seeds.env, num_envs=1),
                    self.trainer.planner,
                    self.work_dir / "videos" / f"eval_{step}.mp4",
                    max_steps=L,
                    seed=seeds.torch,
                    check=self.control.check,
                )
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
        logger = self.trainer.logger
        if logger is not None:
            for k in (
                "episode_reward",
                "prior_episode_reward",
                "episode_success",
                "td_error_replay",
                "td_error_planner",
                "action_drift_l2",
                "action_drift_logratio",
            ):
                logger.log_scalar(f"eval/{k}", row[k], step=step)
        if self.trainer.progress_bar and hasattr(self.trainer, "_pbar"):
            self.trainer._pbar_str["eval_return"] = row["episode_reward"]
            self.trainer._pbar_description()
        return row

    def _diagnostics(self, played) -> dict:
        """Cross TD error and action drift (see :mod:`.diagnostics`) on the planner's evaluation steps and
        one replay batch (NaN for the replay column before the first data)."""
        loss, device = self.trainer.loss_module, self.trainer._device
        model = loss.latent_model
        played = played.to(device)
        task = played.get("task", None) if model.cfg.multitask else None
        out = {"td_error_planner": td_error(loss, played), **action_drift(model, played.get("observation"), played.get("action"), task)}
        buffer = self.trainer.replay_buffer
        out["td_error_replay"] = td_error(loss, buffer.sample().to(device)) if len(buffer) else math.nan
        return out

    def _reseed_training_envs(self, step: int | None = None) -> None:
        """Fresh episodes from a seed of ``(seed, step)``: identical in an uninterrupted and a resumed run."""
        collector = self.trainer.collector
        if collector.env.is_closed:  # the collector closes its env once total_frames are collected
            return
        step = self.trainer.collected_frames if step is None else step
        collector.env.set_seed(named_seed("train_envs", self.cfg.seed, step))
        collector.reset()
        self.episode_writer.discard_pending()

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict:
        trainer = self.trainer
        model = trainer.loss_module.latent_model
        return {
            "config": to_container(self.cfg),
            "task": {**dataclasses.asdict(self.task_spec), "discount": self.task_spec.discount},
            "world_model_config": model.cfg.to_dict(),
            "task_names": self.task_names,
            "discounts": trainer.planner.discount.tolist() if trainer.planner.discount.ndim else None,
            "step": trainer.collected_frames,
            "world_model": model.state_dict(),
            "loss": trainer.loss_module.state_dict(),
            "optimizers": trainer.optimization_stepper.state_dict(),
            "replay_buffer": trainer.replay_buffer.state_dict(),
            "episode_writer": self.episode_writer.state_dict(),
            "trainer": {
                "next_eval": self.next_eval,
                "pending_updates": trainer.pending_updates,
                "update_credit": trainer._update_credit,
                "optim_count": trainer._optim_count,
                "collector_iter": trainer.collector._iter,
                "steps_since_point": self.steps_since_point,
                "run_control": self.control.state_dict(),
            },
            "rng": rng_state(),
        }

    def save_checkpoint(self) -> Path | None:
        """Write the current state now (a resumable one: at a point, between batches)."""
        return self.control.save()

    def load_state(self, state: dict) -> None:
        """Continue from a checkpoint written by this run control."""
        trainer = self.trainer
        trainer.loss_module.latent_model.load_state_dict(state["world_model"])
        trainer.loss_module.load_state_dict(state["loss"])
        trainer.optimization_stepper.load_state_dict(state["optimizers"])
        trainer.replay_buffer.load_state_dict(state["replay_buffer"])
        self.episode_writer.load_state_dict(state["episode_writer"])
        t = state["trainer"]
        trainer.collected_frames = state["step"]
        self.next_eval, trainer.pending_updates, trainer._update_credit = t["next_eval"], t["pending_updates"], t["update_credit"]
        trainer._optim_count, self.steps_since_point = t["optim_count"], t["steps_since_point"]
        self.control.load_state_dict(t["run_control"])
        trainer.collector.load_state_dict({"frames": state["step"], "iter": t["collector_iter"]}, strict=False)
        truncate_csv_logs(self.work_dir, state["step"], keep_last=self.next_eval > state["step"])
        rows = self.eval_log.rows()
        self.last_eval = rows[-1] if rows else {}
        set_rng_state(state["rng"])


def make_trainer(cfg: TrainConfig, *, env_maker=None, agent=None, task_names=None) -> MBDPOTrainer:
    """An online run of ``mbdpo-train``: envs, agent, collector, replay buffer and an :class:`MBDPOTrainer`
    with :class:`OnlineRun` hooked on (restored from the last checkpoint with ``resume``).

    ``env_maker(seed, num_envs)`` replaces ``make_env(cfg.task, ...)``, ``agent`` a ``(world_model, loss,
    actor)`` triple replaces :func:`~torchrl_mbdpo.trainers.agent.build_agent`; ``task_names`` lists a
    multi-task model's tasks in embedding order (for its checkpoints). ``mbdpo-finetune`` uses them."""
    cfg = cfg.resolved()
    if cfg.mode != "online":
        raise ValueError(f"make_trainer runs mode=online; mode={cfg.mode!r} runs through torchrl_mbdpo.trainers.offline.")
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work_dir = Path(cfg.work_dir or default_work_dir(cfg.algo, cfg.task, cfg.seed))
    state = run_to_resume(cfg, work_dir)
    seed_everything(cfg.seed)
    env_maker = env_maker or partial(make_env, cfg.task, obs=cfg.obs)
    env = env_maker(seed=cfg.seed, num_envs=cfg.num_envs)
    spec = env.task_spec
    world_model, loss, actor = agent or build_agent(cfg, observation_size(env), env.action_spec.shape[-1], spec)
    env.append_transform(actor.make_tensordict_primer())
    eval_env = env_maker(seed=evaluation_seeds(cfg.seed, 0).env, num_envs=max(1, min(cfg.num_envs, cfg.eval_episodes)))
    eval_env.append_transform(actor.make_tensordict_primer())
    frames_per_batch = max(1, cfg.num_envs)
    random_frames, pretrain_updates = seed_phase(cfg, spec, frames_per_batch)
    collector = Collector(
        env,
        actor,
        frames_per_batch=frames_per_batch,
        total_frames=cfg.steps,
        init_random_frames=random_frames,
        policy_device=cfg.device,
        env_device="cpu",
        storing_device="cpu",
    )
    # Capacity as the official code, min(buffer_size, steps), fixed by the run's first config: a resumed
    # run that asks for more steps keeps the buffer it had.
    first_steps = state["config"]["steps"] if state is not None else cfg.steps
    replay_buffer = make_replay_buffer(cfg.active_planner().horizon, cfg.batch_size, min(cfg.buffer_size, max(first_steps, 1)))
    writer = EpisodeWriter(replay_buffer, TRANSITION_KEYS + (["task"] if world_model.cfg.multitask else []), deferred=True)
    model_optim, pi_optim = make_optimizers(
        loss, lr=cfg.lr, enc_lr_scale=cfg.enc_lr_scale, capturable=cfg.compile and not cfg.device.startswith("cpu")
    )
    compile_options = cfg.compile_options()
    if compile_options is not None:
        actor.compile_planner(options=compile_options)
    stepper = MBDPOOptimizationStepper(
        loss, model_optim, pi_optim, target_tau=cfg.tau, precision=cfg.precision, compile_options=compile_options
    )
    logger = get_logger(cfg.logger, logger_name=str(work_dir / "logs"), experiment_name="mbdpo")
    trainer = MBDPOTrainer(
        collector=collector,
        total_frames=cfg.steps,
        loss_module=loss,
        planner=actor,
        optimization_stepper=stepper,
        replay_buffer=replay_buffer,
        seed_pretrain_steps=pretrain_updates,
        logger=logger,
        clip_norm=cfg.grad_clip_norm,
        progress_bar=cfg.progress,
        seed=cfg.seed,
        save_trainer_interval=math.inf,
        log_interval=min(1000, max(cfg.eval_freq, 1)),
        replay_writer=writer,
        updates_per_frame=cfg.utd,
        max_nonfinite=cfg.max_nonfinite,
    )
    run = OnlineRun(
        trainer,
        cfg,
        task_spec=spec,
        eval_env=eval_env,
        episode_writer=writer,
        work_dir=work_dir,
        task_names=task_names,
        env_maker=env_maker,
    )
    if state is not None:
        run.load_state(state)
    return trainer
