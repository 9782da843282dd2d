"""Offline multi-task pretraining (spec §4.3): one world model for many tasks, trained on TD-MPC2's chunk
datasets, evaluated on every task (per-task return / success and the normalized score).

``mbdpo-train mode=offline task=mt30|mt80|[t1,t2] data_dir=<dir> model_size=<k>``; under ``torchrun
--nproc-per-node N`` every process trains on ``batch_size / N`` slices and the gradients are averaged
(:mod:`.distributed`). Checkpoints hold the model, optimisers, running statistics, step and RNG state, and
the task list; ``resume=true`` continues a run, ``mbdpo-finetune`` starts online fine-tuning from one.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from tensordict import TensorDict
from torchrl.record.loggers import get_logger
from torchrl.trainers import Trainer
from tqdm.auto import tqdm

from ..data.task_sets import TASK_SETS
from ..data.tdmpc2_dataset import DatasetError, DatasetInfo, describe_dataset, load_dataset, transitions_in
from ..envs import make_multitask_env
from ..modules import MBDPOWorldModel
from .agent import build_loss_and_actor, world_model_config
from .config import TrainConfig, to_container
from .distributed import DistContext, broadcast_state, init_distributed, make_gradient_averager, sync_running_stats
from .evaluation import CsvLog, episode_success, evaluate, evaluation_seeds
from .optimization import MBDPOOptimizationStepper, make_optimizers
from .run_control import RunControl, RunInterrupted, named_seed, rng_state, run_to_resume, set_rng_state

__all__ = ["offline_tasks", "evaluate_tasks", "normalized_score", "UpdateClock", "OfflineTrainer", "make_offline_trainer"]


def offline_tasks(task, info: DatasetInfo, exclude=()) -> list[str]:
    """The tasks a run trains on: a whole set (``mt30``/``mt80``), one task or a list, minus ``exclude``."""
    if isinstance(task, str) and task in TASK_SETS and task != info.task_set:
        raise DatasetError(f"task={task}, but the dataset holds {info.task_set} data (its task list and padding).")
    if isinstance(task, str):
        tasks = list(TASK_SETS[task]) if task in TASK_SETS else [task]
    else:
        tasks = list(task)
    unknown = [t for t in [*tasks, *exclude] if t not in info.tasks]
    if unknown:
        raise DatasetError(f"{unknown} are not tasks of this {info.task_set} dataset; its tasks are {info.present_tasks or info.tasks}.")
    kept = [t for t in tasks if t not in set(exclude)]
    if not kept:
        raise ValueError(f"exclude_tasks={list(exclude)} leaves no task to train on.")
    return kept


def task_score(episode_reward: float, success: float, reports_success: bool) -> float:
    """One task's share of the normalized score (evaluate.py:74-77): success x 100 where the suite reports
    success (MetaWorld), return / 10 otherwise (DMControl)."""
    return 100.0 * success if reports_success else episode_reward / 10.0


def normalized_score(rows: list[dict]) -> float:
    """Mean task score of a multi-task evaluation."""
    return sum(r["score"] for r in rows) / len(rows)


@torch.no_grad()
def evaluate_tasks(
    actor,
    task_names: list[str],
    tasks: list[str],
    obs_size: int,
    action_size: int,
    episodes: int,
    seed: int = 0,
    progress: bool = False,
    check=None,
) -> list[dict]:
    """Planner returns of ``episodes`` episodes on each task, with success and the task's score (``check``: as
    :func:`~torchrl_mbdpo.trainers.evaluation.evaluate`'s)."""
    rows = []
    for task in tqdm(tasks, desc="evaluating tasks", disable=not progress, leave=False):
        env = make_multitask_env(task, task_names.index(task), obs_size, action_size, seed=seed)
        env.append_transform(actor.make_tensordict_primer())
        played = []
        try:
            returns = evaluate(env, actor, episodes, env.task_spec.episode_length, transitions=played, check=check)
        finally:
            env.close()
        success = episode_success(torch.cat([td.reshape(-1) for td in played]))
        reward = sum(returns) / len(returns)
        rows.append(
            {
                "task": task,
                "episode_reward": reward,
                "episode_success": success,
                "score": task_score(reward, success, env.task_spec.reports_success),
            }
        )
    return rows


class TaskEvalLog:
    """``eval.csv`` (step, normalized score), ``eval_tasks.csv`` (one row per task and evaluation) and
    ``eval_tasks.png``: a bar per task, first vs latest evaluation, and the normalized-score curve."""

    TASK_FIELDS = ["step", "task", "episode_reward", "episode_success", "score"]

    def __init__(self, work_dir: Path):
        self.csv_path, self.tasks_path = work_dir / "eval.csv", work_dir / "eval_tasks.csv"
        self.png_path = work_dir / "eval_tasks.png"
        self.scores = CsvLog(self.csv_path, ["step", "normalized_score", "wall_time_s"])
        self.per_task = CsvLog(self.tasks_path, self.TASK_FIELDS)

    def append(self, step: int, rows: list[dict], wall_time_s: float) -> float:
        score = normalized_score(rows)
        self.per_task.append([{"step": step, **r} for r in rows])
        self.scores.append({"step": step, "normalized_score": score, "wall_time_s": wall_time_s})
        self.plot()
        return score

    def rows(self, path=None) -> list[dict]:
        return (self.per_task if path == self.tasks_path else self.scores).rows()

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows(self.tasks_path)
        steps = sorted({int(r["step"]) for r in rows})
        tasks = list(dict.fromkeys(r["task"] for r in rows))
        score = {(int(r["step"]), r["task"]): float(r["score"]) for r in rows}
        fig, (bars, curve) = plt.subplots(
            1, 2, figsize=(max(8, 0.45 * len(tasks) + 5), 4.5), dpi=100, gridspec_kw={"width_ratios": [max(2, len(tasks) // 4), 1]}
        )
        shown = [steps[0], steps[-1]] if len(steps) > 1 else steps
        width = 0.8 / len(shown)
        for i, step in enumerate(shown):
            bars.bar(
                [t + i * width for t in range(len(tasks))], [score.get((step, t), math.nan) for t in tasks], width, label=f"update {step}"
            )
        bars.set_xticks([t + width * (len(shown) - 1) / 2 for t in range(len(tasks))], tasks, rotation=60, ha="right", fontsize=8)
        bars.set_ylabel("task score (return / 10, or success %)")
        bars.legend()
        totals = self.rows()
        curve.plot([int(r["step"]) for r in totals], [float(r["normalized_score"]) for r in totals], "o-")
        curve.set_xlabel("updates")
        curve.set_ylabel("normalized score")
        for ax in (bars, curve):
            ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(self.png_path)
        plt.close(fig)

    def truncate(self, step: int) -> None:
        """Drop rows written after ``step`` (a run killed after its last checkpoint)."""
        self.scores.truncate(step)
        self.per_task.truncate(step)


class UpdateClock:
    """The collector of an offline run, for TorchRL's ``Trainer`` loop: one empty batch per update (the loop
    counts it as one frame), nothing collected. Its position is the run's update count."""

    init_random_frames = 0

    def __init__(self, total_updates: int):
        self.total_frames = total_updates
        self.frames = 0

    def __iter__(self):
        while self.frames < self.total_frames:
            self.frames += 1
            yield TensorDict(batch_size=[1])

    def set_seed(self, seed, static_seed: bool = False):
        return seed

    def shutdown(self) -> None:
        pass

    def state_dict(self) -> dict:
        return {"frames": self.frames}

    def load_state_dict(self, state: dict) -> None:
        self.frames = state["frames"]


class OfflineTrainer(Trainer):
    """Offline pretraining as a ``torchrl.trainers.Trainer``: an :class:`UpdateClock` drives the loop, the
    dataset's ``ReplayBuffer`` (``SliceSampler`` over episodes) gives each update its batch, the
    :class:`~torchrl_mbdpo.trainers.trainer.MBDPOOptimizationStepper` makes it (gradients averaged over
    processes under torchrun), and the run control of :mod:`.run_control` checkpoints, stops on signals and
    resumes. Every update leaves the state resumable; evaluations run every ``eval_freq`` updates."""

    def __init__(self, cfg: TrainConfig, *, dataset, info: DatasetInfo, tasks, world_model, loss, actor, work_dir, dist: DistContext):
        self.cfg, self.dataset, self.info, self.tasks = cfg, dataset, info, tasks
        self.world_model, self.loss, self.actor, self.dist = world_model, loss, actor, dist
        self.work_dir = Path(work_dir)
        model_optim, pi_optim = make_optimizers(loss, lr=cfg.lr, enc_lr_scale=cfg.enc_lr_scale)
        compile_options = cfg.compile_options()
        if compile_options is not None:
            actor.compile_planner(options=compile_options)
        stepper = MBDPOOptimizationStepper(
            loss,
            model_optim,
            pi_optim,
            target_tau=cfg.tau,
            precision=cfg.precision,
            grad_sync=make_gradient_averager(dist),
            compile_options=compile_options,
        )
        logger = get_logger(cfg.logger, logger_name=str(self.work_dir / "logs"), experiment_name="mbdpo") if dist.is_main else None
        super().__init__(
            collector=UpdateClock(cfg.steps),
            total_frames=cfg.steps,
            frame_skip=1,
            optim_steps_per_batch=1,
            loss_module=loss,
            optimization_stepper=stepper,
            logger=logger,
            progress_bar=cfg.progress and dist.is_main,
            save_trainer_interval=math.inf,
            log_interval=max(1, min(1000, cfg.eval_freq)),
            clip_norm=cfg.grad_clip_norm,
        )
        self.stepper = stepper
        self.eval_log = TaskEvalLog(self.work_dir)
        self.control = RunControl(
            self.work_dir, cfg.checkpoint_freq, self.checkpoint_state, unit="updates", writer=dist.is_main, threads=cfg.threads
        )
        self.next_eval = 0
        self.last_eval: dict = {}
        self.stop_message = ""
        self._device = next(loss.parameters()).device
        self._t0 = time.time()
        self.register_op("setup", self._evaluate_if_due)
        self.register_op("process_optim_batch", self._sample)
        self.register_op("post_optim", partial(sync_running_stats, dist, loss))
        self.register_op("post_steps_log", self._after_update)
        self.register_op("shutdown", self._on_shutdown)

    @property
    def step(self) -> int:
        return self.collected_frames

    @property
    def _signal(self):
        return self.control.signal

    # ----------------------------------------------------------------- the loop's hooks
    def _sample(self, _batch):
        self.control.enter("train")
        return self.dataset.sample().to(self._device)

    def _after_update(self, _batch=None):
        if self.stepper.skipped_in_a_row >= self.cfg.max_nonfinite:
            self.stop_message = (
                f"Stopped at update {self.step}: {self.stepper.skipped_in_a_row} updates in a row had a non-finite "
                "loss or gradient. Lower lr, or check the dataset with `mbdpo-dataset check`."
            )
            self.request_stop(self.stop_message)
            return
        self._evaluate_if_due()
        if self.step >= self.control.next_checkpoint:
            self.control.point(self.step, keep_snapshot=False)
            self.dist.barrier()

    def _evaluate_if_due(self, _batch=None):
        if self.step >= self.next_eval and not self._stop_training:
            try:
                with self.control.in_phase("eval"):
                    self.run_evaluation()
            except RunInterrupted:
                return  # abandoned; the checkpoint written on stop still owes it
            self.next_eval = (self.step // self.cfg.eval_freq + 1) * self.cfg.eval_freq

    def _on_shutdown(self):
        self.control.finish(
            self.step,
            complete=self.step >= self.total_frames,
            final_eval=None if self.last_eval.get("step") == self.step else self._evaluate_if_due,
            reason="" if self.control.stop_requested else self.stop_message,
        )
        if self.control.stop_requested:
            self.stop_message = self.control.stop_message
        self.dist.barrier()
        if self.stop_message and self.dist.is_main:
            print(self.stop_message, flush=True)

    # ----------------------------------------------------------------- public
    def train(self) -> None:
        """Train, stopping after the current update (an evaluation is abandoned) with a checkpoint on SIGTERM/SIGINT."""
        with self.control.handle_signals(self.request_stop):
            super().train()
        return self.control.exit_code

    def run_evaluation(self) -> dict:
        """Every trained task, ``eval_episodes`` episodes each, on the main process (the others wait)."""
        if self.cfg.eval_episodes > 0 and self.dist.is_main:
            seeds = evaluation_seeds(self.cfg.seed, self.step)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seeds.torch)
                rows = evaluate_tasks(
                    self.actor,
                    self.info.tasks,
                    self.tasks,
                    self.world_model.cfg.obs_dim,
                    self.world_model.cfg.action_dim,
                    self.cfg.eval_episodes,
                    seed=seeds.env,
                    progress=self.cfg.progress,
                    check=self.control.check,
                )
            score = self.eval_log.append(self.step, rows, round(time.time() - self._t0, 1))
            self.last_eval = {"step": self.step, "normalized_score": score, "tasks": rows}
            if self.logger is not None:
                self.logger.log_scalar("eval/normalized_score", score, step=self.step)
        self.dist.barrier()
        return self.last_eval

    # ----------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict:
        return {
            "config": to_container(self.cfg),
            "mode": "offline",
            "dataset": asdict(self.info),
            "task_names": self.info.tasks,
            "trained_tasks": self.tasks,
            "discounts": self.info.discounts().tolist(),
            "world_model_config": self.world_model.cfg.to_dict(),
            "step": self.step,
            "world_model": self.world_model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizers": self.stepper.state_dict(),
            "trainer": {"next_eval": self.next_eval, "run_control": self.control.state_dict()},
            "rng": rng_state(),
        }

    def save_checkpoint(self):
        path = self.control.save()
        self.dist.barrier()
        return path

    def load_state(self, state: dict) -> None:
        self.world_model.load_state_dict(state["world_model"])
        self.loss.load_state_dict(state["loss"])
        self.stepper.load_state_dict(state["optimizers"])
        self.collected_frames = self.collector.frames = state["step"]
        trainer_state = state.get("trainer", {})  # absent in checkpoints of earlier versions
        self.next_eval = trainer_state.get("next_eval", (self.step // self.cfg.eval_freq + 1) * self.cfg.eval_freq)
        if "run_control" in trainer_state:
            self.control.load_state_dict(trainer_state["run_control"])
        else:
            self.control.next_checkpoint = (self.step // self.cfg.checkpoint_freq + 1) * self.cfg.checkpoint_freq
        if self.dist.is_main:
            self.eval_log.truncate(self.step if self.next_eval > self.step else self.step - 1)
        rows = self.eval_log.rows()
        self.last_eval = {"step": int(rows[-1]["step"]), "normalized_score": float(rows[-1]["normalized_score"])} if rows else {}
        set_rng_state(state["rng"])


def make_offline_trainer(cfg: TrainConfig) -> OfflineTrainer:
    """Dataset, multi-task world model, loss, planner and (under torchrun) the process group of a run."""
    cfg = cfg.resolved()
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = init_distributed(cfg.device)
    if cfg.batch_size % dist.world_size:
        raise ValueError(
            f"batch_size={cfg.batch_size} does not split over {dist.world_size} processes; pass a multiple of {dist.world_size}."
        )
    name = cfg.task if isinstance(cfg.task, str) else f"{len(cfg.task)}tasks"
    work_dir = Path(cfg.work_dir or f"runs/offline/{cfg.algo}/{name}/size{cfg.model_size}/seed{cfg.seed}")
    state = run_to_resume(cfg, work_dir)
    set_name = cfg.task if isinstance(cfg.task, str) and cfg.task in TASK_SETS else None
    horizon = cfg.active_planner().horizon
    tasks = offline_tasks(cfg.task, describe_dataset(cfg.data_dir), cfg.exclude_tasks)
    # The main process validates the data and builds the memory-mapped copy (once: later runs reuse it);
    # the others open it when it is complete.
    load = partial(
        load_dataset, cfg.data_dir, horizon, cfg.batch_size // dist.world_size, tasks=tasks, task_set=set_name, cache_dir=cfg.cache_dir
    )
    if dist.is_main:
        dataset, info = load(progress=cfg.progress)
    dist.barrier()
    if not dist.is_main:
        dataset, info = load(progress=False)
    torch.manual_seed(cfg.seed)
    wm_cfg = world_model_config(
        cfg, info.padded_obs_dim, info.padded_action_dim, episodic=False, num_tasks=len(info.tasks), action_dims=info.action_dims
    )
    world_model = MBDPOWorldModel(wm_cfg)
    loss, actor = build_loss_and_actor(cfg, world_model, info.discounts())
    broadcast_state(dist, world_model)
    torch.manual_seed(named_seed("data_parallel", cfg.seed, dist.rank))  # each process samples its own slices
    if dist.is_main:
        print(
            f"offline {cfg.algo}: {len(tasks)} task(s), {transitions_in(info, tasks):,} transitions, model_size={cfg.model_size} "
            f"({sum(p.numel() for p in world_model.parameters()):,} parameters), batch {cfg.batch_size} over {dist.world_size} "
            f"process(es), {cfg.steps:,} updates, work_dir={work_dir}",
            flush=True,
        )
    trainer = OfflineTrainer(
        cfg, dataset=dataset, info=info, tasks=tasks, world_model=world_model, loss=loss, actor=actor, work_dir=work_dir, dist=dist
    )
    if state is not None:
        trainer.load_state(state)
    return trainer
