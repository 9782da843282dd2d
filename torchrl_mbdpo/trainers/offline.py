"""Offline multi-task pretraining (spec §4.3): one world model for many tasks, trained on TD-MPC2's chunk
datasets, evaluated on every task (per-task return / success and the normalized score).

``mbdpo-train mode=offline task=mt30|mt80|[t1,t2] data_dir=<dir> model_size=<k>``; under ``torchrun
--nproc-per-node N`` every process trains on ``batch_size / N`` slices and the gradients are averaged
(:mod:`.distributed`). Checkpoints hold the model, optimisers, running statistics, step and RNG state, and
the task list; ``resume=true`` continues a run, ``mbdpo-finetune`` starts online fine-tuning from one.
"""
from __future__ import annotations

import csv
import math
import signal
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

import torch
from torchrl.record.loggers import get_logger
from tqdm.auto import tqdm

from ..data.task_sets import TASK_SETS
from ..data.tdmpc2_dataset import DatasetError, DatasetInfo, describe_dataset, load_dataset, transitions_in
from ..envs import make_multitask_env
from ..modules import MBDPOWorldModel
from ..objectives.mbdpo import make_optimizers
from .checkpoint import save_run_checkpoint
from .config import TrainConfig, to_container
from .distributed import DistContext, broadcast_state, init_distributed, make_gradient_averager, sync_running_stats
from .evaluation import episode_success, evaluate
from .agent import build_loss_and_actor, world_model_config
from .run_control import rng_state as _rng_state, run_to_resume, set_rng_state as _set_rng_state
from .trainer import MBDPOOptimizationStepper

__all__ = ["offline_tasks", "evaluate_tasks", "normalized_score", "OfflineTrainer", "make_offline_trainer"]


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
def evaluate_tasks(actor, task_names: list[str], tasks: list[str], obs_size: int, action_size: int, episodes: int,
                   seed: int = 0, progress: bool = False) -> list[dict]:
    """Planner returns of ``episodes`` episodes on each task, with success and the task's score."""
    rows = []
    for task in tqdm(tasks, desc="evaluating tasks", disable=not progress, leave=False):
        env = make_multitask_env(task, task_names.index(task), obs_size, action_size, seed=seed)
        env.append_transform(actor.make_tensordict_primer())
        played = []
        returns = evaluate(env, actor, episodes, env.task_spec.episode_length, transitions=played)
        success = episode_success(torch.cat([td.reshape(-1) for td in played]))
        reward = sum(returns) / len(returns)
        rows.append({"task": task, "episode_reward": reward, "episode_success": success,
                     "score": task_score(reward, success, env.task_spec.reports_success)})
        env.close()
    return rows


class TaskEvalLog:
    """``eval.csv`` (step, normalized score), ``eval_tasks.csv`` (one row per task and evaluation) and
    ``eval_tasks.png``: a bar per task, first vs latest evaluation, and the normalized-score curve."""

    TASK_FIELDS = ["step", "task", "episode_reward", "episode_success", "score"]

    def __init__(self, work_dir: Path):
        self.csv_path, self.tasks_path = work_dir / "eval.csv", work_dir / "eval_tasks.csv"
        self.png_path = work_dir / "eval_tasks.png"

    @staticmethod
    def _append(path: Path, fields: list[str], rows: list[dict]) -> None:
        new = not path.exists()
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def append(self, step: int, rows: list[dict], wall_time_s: float) -> float:
        score = normalized_score(rows)
        self._append(self.tasks_path, self.TASK_FIELDS, [{"step": step, **r} for r in rows])
        self._append(self.csv_path, ["step", "normalized_score", "wall_time_s"], [{"step": step, "normalized_score": score, "wall_time_s": wall_time_s}])
        self.plot()
        return score

    def rows(self, path=None) -> list[dict]:
        path = path or self.csv_path
        if not path.exists():
            return []
        with open(path) as f:
            return list(csv.DictReader(f))

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.rows(self.tasks_path)
        steps = sorted({int(r["step"]) for r in rows})
        tasks = list(dict.fromkeys(r["task"] for r in rows))
        score = {(int(r["step"]), r["task"]): float(r["score"]) for r in rows}
        fig, (bars, curve) = plt.subplots(1, 2, figsize=(max(8, 0.45 * len(tasks) + 5), 4.5), dpi=100,
                                          gridspec_kw={"width_ratios": [max(2, len(tasks) // 4), 1]})
        shown = [steps[0], steps[-1]] if len(steps) > 1 else steps
        width = 0.8 / len(shown)
        for i, step in enumerate(shown):
            bars.bar([t + i * width for t in range(len(tasks))], [score.get((step, t), math.nan) for t in tasks], width,
                     label=f"update {step}")
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
        for path in (self.csv_path, self.tasks_path):
            if path.exists():
                lines = path.read_text().splitlines(keepends=True)
                path.write_text("".join(lines[:1] + [ln for ln in lines[1:] if int(ln.split(",", 1)[0]) <= step]))


class OfflineTrainer:
    """The update loop of offline pretraining; see the module docstring."""

    def __init__(self, cfg: TrainConfig, *, dataset, info: DatasetInfo, tasks, world_model, loss, actor, work_dir, dist: DistContext):
        self.cfg, self.dataset, self.info, self.tasks = cfg, dataset, info, tasks
        self.world_model, self.loss, self.actor, self.dist = world_model, loss, actor, dist
        self.work_dir = Path(work_dir)
        model_optim, pi_optim = make_optimizers(loss, lr=cfg.lr, enc_lr_scale=cfg.enc_lr_scale)
        self.stepper = MBDPOOptimizationStepper(loss, model_optim, pi_optim, target_tau=cfg.tau, precision=cfg.precision,
                                                grad_sync=make_gradient_averager(dist))
        self.clip_norm = cfg.grad_clip_norm
        self.eval_log = TaskEvalLog(self.work_dir)
        self.logger = get_logger(cfg.logger, logger_name=str(self.work_dir / "logs"), experiment_name="mbdpo") if dist.is_main else None
        self.step = 0
        self.last_eval: dict = {}
        self.stop_message = ""
        self._signal = None
        self._t0 = time.time()

    # ----------------------------------------------------------------- loop
    def train(self) -> None:
        cfg = self.cfg

        def request_stop(signum, _frame):
            self._signal = signum

        previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
        bar = tqdm(total=cfg.steps, initial=self.step, desc="offline updates", disable=not (cfg.progress and self.dist.is_main))
        try:
            if self.step == 0:
                self.run_evaluation()
            log_every = max(1, min(1000, cfg.eval_freq))
            while self.step < cfg.steps:
                metrics = self.stepper.step(self, self.dataset.sample().to(cfg.device))
                sync_running_stats(self.dist, self.loss)
                self.step += 1
                bar.update()
                if self.stepper.skipped_in_a_row >= cfg.max_nonfinite:
                    self.stop_message = (f"Stopped at update {self.step}: {self.stepper.skipped_in_a_row} updates in a row had a non-finite "
                                         "loss or gradient. Lower lr, or check the dataset with `mbdpo-dataset check`.")
                    break
                if self.step % log_every == 0 and self.logger is not None:
                    for key, value in metrics.items():
                        self.logger.log_scalar(f"train/{key}", value.item(), step=self.step)
                    bar.set_postfix(loss=f"{metrics['loss_model'].item():.3f}", score=self.last_eval.get("normalized_score", math.nan),
                                    refresh=False)
                if self.step % cfg.eval_freq == 0 or self.step == cfg.steps:
                    self.run_evaluation()
                if self._signal is not None:
                    self.stop_message = f"Received signal {self._signal}: checkpoint written at update {self.step}, stopping."
                    break
                if self.step % cfg.checkpoint_freq == 0:
                    self.save_checkpoint()
        finally:
            bar.close()
            for s, handler in previous.items():
                signal.signal(s, handler)
        self.save_checkpoint()
        if self.stop_message and self.dist.is_main:
            print(self.stop_message, flush=True)

    def run_evaluation(self) -> dict:
        """Every trained task, ``eval_episodes`` episodes each, on the main process (the others wait)."""
        if self.cfg.eval_episodes > 0 and self.dist.is_main:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.cfg.seed * 1_000_003 + self.step)
                rows = evaluate_tasks(self.actor, self.info.tasks, self.tasks, self.world_model.cfg.obs_dim, self.world_model.cfg.action_dim,
                                      self.cfg.eval_episodes, seed=self.cfg.seed + 10_000 + self.step, progress=self.cfg.progress)
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
            "rng": _rng_state(),
        }

    def save_checkpoint(self):
        if self.dist.is_main:
            save_run_checkpoint(self.checkpoint_state(), self.work_dir, self.step)
        self.dist.barrier()

    def load_state(self, state: dict) -> None:
        self.world_model.load_state_dict(state["world_model"])
        self.loss.load_state_dict(state["loss"])
        self.stepper.load_state_dict(state["optimizers"])
        self.step = state["step"]
        if self.dist.is_main:
            self.eval_log.truncate(self.step)
        rows = self.eval_log.rows()
        self.last_eval = {"step": int(rows[-1]["step"]), "normalized_score": float(rows[-1]["normalized_score"])} if rows else {}
        _set_rng_state(state["rng"])


def make_offline_trainer(cfg: TrainConfig) -> OfflineTrainer:
    """Dataset, multi-task world model, loss, planner and (under torchrun) the process group of a run."""
    cfg = cfg.resolved()
    if not cfg.data_dir:
        raise ValueError("mode=offline needs data_dir=<folder of chunk_<i>.pt files>. Write a small one with "
                         "`mbdpo-dataset generate out=<dir>`, or see README.md (Offline multi-task) for TD-MPC2's mt30/mt80.")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dist = init_distributed(cfg.device)
    if cfg.batch_size % dist.world_size:
        raise ValueError(f"batch_size={cfg.batch_size} does not split over {dist.world_size} processes; pass a multiple of {dist.world_size}.")
    name = cfg.task if isinstance(cfg.task, str) else f"{len(cfg.task)}tasks"
    work_dir = Path(cfg.work_dir or f"runs/offline/{cfg.algo}/{name}/size{cfg.model_size}/seed{cfg.seed}")
    state = run_to_resume(cfg, work_dir)
    set_name = cfg.task if isinstance(cfg.task, str) and cfg.task in TASK_SETS else None
    horizon = cfg.active_planner().horizon
    tasks = offline_tasks(cfg.task, describe_dataset(cfg.data_dir), cfg.exclude_tasks)
    # The main process validates the data and builds the memory-mapped copy (once: later runs reuse it);
    # the others open it when it is complete.
    load = partial(load_dataset, cfg.data_dir, horizon, cfg.batch_size // dist.world_size, tasks=tasks, task_set=set_name,
                   cache_dir=cfg.cache_dir)
    if dist.is_main:
        dataset, info = load(progress=cfg.progress)
    dist.barrier()
    if not dist.is_main:
        dataset, info = load(progress=False)
    torch.manual_seed(cfg.seed)
    wm_cfg = world_model_config(cfg, info.padded_obs_dim, info.padded_action_dim, episodic=False, num_tasks=len(info.tasks),
                                action_dims=info.action_dims)
    world_model = MBDPOWorldModel(wm_cfg)
    loss, actor = build_loss_and_actor(cfg, world_model, info.discounts())
    broadcast_state(dist, world_model)
    torch.manual_seed(cfg.seed + 7919 * dist.rank)  # each process samples its own slices
    if dist.is_main:
        print(f"offline {cfg.algo}: {len(tasks)} task(s), {transitions_in(info, tasks):,} transitions, model_size={cfg.model_size} "
              f"({sum(p.numel() for p in world_model.parameters()):,} parameters), batch {cfg.batch_size} over {dist.world_size} "
              f"process(es), {cfg.steps:,} updates, work_dir={work_dir}", flush=True)
    trainer = OfflineTrainer(cfg, dataset=dataset, info=info, tasks=tasks, world_model=world_model, loss=loss, actor=actor,
                             work_dir=work_dir, dist=dist)
    if state is not None:
        trainer.load_state(state)
    return trainer
