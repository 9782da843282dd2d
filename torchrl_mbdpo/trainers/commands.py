"""What the MBDPO / TD-MPC2 console commands do, one function each: it receives its validated settings (a schema
of :mod:`torchrl_mbdpo.trainers.config`) and returns the exit code. The command line (:mod:`torchrl_mbdpo.cli`) composes and validates
the settings, catches the signals and prints errors; a run's own lifecycle (checkpoints, the final evaluation,
the stop line, 128+signal) is its :class:`~torchrl_mbdpo.trainers.run_control.RunControl`'s."""

from __future__ import annotations

import contextlib
import copy
import os
from functools import partial
from pathlib import Path

from ..config import UserError
from .config import (
    SWEPT_KEYS_ENV,
    CompareConfig,
    DatasetConfig,
    EvalConfig,
    ExportConfig,
    ImportConfig,
    TrainConfig,
    file_name_of,
    sweep_work_dir,
)
from .finetune import FinetuneConfig

__all__ = ["train", "evaluate", "compare", "finetune", "dataset", "import_checkpoint", "export_checkpoint", "find_latest_checkpoint"]


# ------------------------------------------------------------------------------------------ mbdpo-train
def train(cfg: TrainConfig) -> int:
    """``mbdpo-train``: an online or offline run."""
    _multirun_job_settings(cfg)
    if cfg.mode == "offline":
        from .offline import make_offline_trainer

        return _offline(make_offline_trainer(cfg))
    from .trainer import make_trainer

    return online(make_trainer(cfg))


def online(trainer) -> int:
    """Run an online trainer (``mbdpo-train``, ``mbdpo-finetune``) and say how it ended."""
    run = trainer.run
    cfg = run.cfg
    print(
        f"{cfg.algo} on {cfg.task}: {cfg.steps} agent steps, model_size={cfg.model_size}, {cfg.num_envs} env(s), work_dir={run.work_dir}",
        flush=True,
    )
    code = trainer.train()
    if code == 0:
        last, updates = run.last_eval, trainer.optimization_stepper.update_count
        print(
            f"final eval at step {last.get('step')}: return {float(last['episode_reward']):.1f} "
            f"(policy prior {float(last['prior_episode_reward']):.1f}) after {updates} updates; curve: {run.eval_log.png_path}",
            flush=True,
        )
    return code


def _offline(trainer) -> int:
    code = trainer.train()
    if code == 0 and trainer.dist.is_main and trainer.last_eval:
        first = trainer.eval_log.rows()[0]
        print(
            f"normalized score: {float(first['normalized_score']):.1f} at update {first['step']} -> "
            f"{trainer.last_eval['normalized_score']:.1f} at update {trainer.last_eval['step']}; "
            f"per task: {trainer.eval_log.tasks_path}, {trainer.eval_log.png_path}",
            flush=True,
        )
    return code


def _multirun_job_settings(cfg: TrainConfig) -> None:
    """In a job of ``mbdpo-train -m ...``: its own work dir (see ``sweep_work_dir``) and, under the joblib
    launcher, a share of the CPU threads (``threads=`` overrides it)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hydra_cfg = HydraConfig.get()
    if cfg.work_dir is None:
        swept = [k for k in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if k]
        cfg.work_dir = sweep_work_dir(cfg, list(hydra_cfg.overrides.task), swept)
    n_jobs = OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=None)
    if cfg.threads is None and n_jobs is not None:  # joblib: the runs in parallel share the cores
        cpus = os.cpu_count() or 1
        parallel = cpus if n_jobs < 1 else n_jobs
        total = int(os.environ.get(SWEPT_KEYS_ENV + "_JOBS", "0") or 0)
        cfg.threads = max(1, cpus // max(1, min(parallel, total or parallel, cpus)))


def swept_keys(argv: list[str]) -> tuple[list[str], int]:
    """The config keys a multirun command line sweeps (``seed=1,2``, ``lr=range(...)``), Hydra's own excluded,
    and the number of runs (0: unknown)."""
    if not any(a in ("-m", "--multirun") or a == "hydra.mode=MULTIRUN" for a in argv):
        return [], 0
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in argv if "=" in a and not a.startswith("-")])
    except Exception:  # Hydra reports bad overrides itself
        return [], 0
    swept = [o for o in overrides if o.is_sweep_override() and not o.key_or_group.startswith("hydra")]
    jobs = 1
    for o in swept:
        try:
            jobs *= len(list(o.sweep_string_iterator()))
        except Exception:  # e.g. interval(): only an optimizing sweeper knows
            jobs = 0
    return sorted({o.key_or_group for o in swept}), jobs


def mark_sweep(argv: list[str]) -> list[str]:
    """``mbdpo-train -m ...``: tell every job which keys vary and how many runs there are, whatever launcher runs it."""
    swept, jobs = swept_keys(argv)
    if not swept:
        return argv
    at = next(i for i, a in enumerate(argv) if "=" in a and not a.startswith("-"))  # beside the other overrides
    return [
        *argv[:at],
        f"+hydra.job.env_set.{SWEPT_KEYS_ENV}='{','.join(swept)}'",
        f"+hydra.job.env_set.{SWEPT_KEYS_ENV}_JOBS='{jobs}'",
        *argv[at:],
    ]


# ------------------------------------------------------------------------------------------ mbdpo-finetune
def finetune(cfg: FinetuneConfig) -> int:
    from .finetune import make_finetune_trainer

    return online(make_finetune_trainer(cfg))


# ------------------------------------------------------------------------------------------ mbdpo-compare
def compare(cfg: CompareConfig) -> int:
    from .compare import compare as run_compare
    from .compare import markdown_table
    from .run_control import RunStopped

    def make_config(task, algo, seed):
        run_cfg = copy.deepcopy(cfg.train)
        run_cfg.task, run_cfg.algo, run_cfg.seed = task, algo, seed
        return run_cfg

    try:
        final = run_compare(
            list(cfg.tasks), list(cfg.algos), list(cfg.seeds), cfg.steps, cfg.root, cfg.out_dir, make_config if cfg.run else None
        )
    except RunStopped as stop:  # a signal or a diverged run: that run's checkpoint is written; `resume` by running the command again
        return stop.code
    print(markdown_table(final))
    print(f"plots and tables: {cfg.out_dir}/<task>.png, {cfg.out_dir}/summary.csv, {cfg.out_dir}/final.csv")
    return 0


# ------------------------------------------------------------------------------------------ mbdpo-eval
def find_latest_checkpoint() -> Path:
    """The newest ``runs/**/checkpoints/latest.pt`` (the default checkpoint of mbdpo-eval and mbdpo-export)."""
    found = sorted(Path("runs").glob("**/checkpoints/latest.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError("No checkpoint given and none found under runs/: pass checkpoint=<a run's work_dir>/checkpoints/latest.pt.")
    return found[-1]


def _load_for_eval(path: Path) -> tuple[dict, Path]:
    """A checkpoint, or, where ``latest.pt`` is damaged, the ``previous.pt`` beside it (with a warning), as training does."""
    from .checkpoint import load_checkpoint, load_latest

    if path.name == "latest.pt":
        return load_latest(path.parent)
    return load_checkpoint(path), path


def _video_path(cfg: EvalConfig, checkpoint: Path, task: str, state: dict) -> Path:
    """``<video_dir>/eval_<task>_step<step>.mp4``; the default folder is ``videos/`` beside the run's ``eval.csv``."""
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return Path(cfg.video_dir or run_dir / "videos") / f"eval_{file_name_of(task)}_step{state['step']}.mp4"


def _policy_loader(state: dict, path):
    """The function a checkpoint names to load its policy (``"torchrl_mbdpo.<module>:<name>"``, this package's only)."""
    import importlib

    from .checkpoint import CheckpointError

    module, _, name = state["policy_loader"].partition(":")
    if not module.startswith("torchrl_mbdpo."):
        raise CheckpointError(f"{path} names a policy loader outside torchrl_mbdpo ({state['policy_loader']!r}); it is not loaded.")
    return getattr(importlib.import_module(module), name)


def evaluate(cfg: EvalConfig) -> int:
    """``mbdpo-eval``: a checkpoint's returns on its task (every trained task of a multi-task checkpoint)."""
    import torch

    from ..envs import observation_size
    from .agent import checkpoint_env, load_agent
    from .checkpoint import CheckpointError
    from .evaluation import evaluate as run_episodes
    from .evaluation import video_enabled, video_recording

    state, path = _load_for_eval(Path(cfg.checkpoint) if cfg.checkpoint else find_latest_checkpoint())
    cfg.check_checkpoint(state, path)
    if state.get("policy_loader"):  # a policy without a planner: its trainer's package loads it
        _, train_cfg, loss, actor = _policy_loader(state, path)(path, state=state)
        world_model = loss.world_model
    else:
        _, train_cfg, world_model, actor = load_agent(path, state=state)
        overrides = cfg.overrides("mppi" if train_cfg.algo == "tdmpc2" else "planner")
        actor.planner = type(actor.planner)(**{**vars(actor.planner), **overrides})
    if state.get("trained_tasks") and cfg.task is None:  # an offline multi-task checkpoint: all its tasks
        return _evaluate_tasks(cfg, path, state, world_model, actor)
    task = cfg.task or train_cfg.task
    env = checkpoint_env(state, task, seed=cfg.seed, obs=state["config"].get("obs", "state"))
    if env.action_spec.shape[-1] != world_model.cfg.action_dim or observation_size(env) != world_model.cfg.obs_dim:
        raise CheckpointError(f"{path} was trained on {train_cfg.task}; task={task} has other observation/action sizes.")
    if hasattr(actor, "make_tensordict_primer"):  # the planners keep their warm start in the TensorDict
        env.append_transform(actor.make_tensordict_primer())
    torch.manual_seed(cfg.seed)
    actor.to(cfg.device)
    video = _video_path(cfg, path, task, state) if video_enabled(cfg.save_video) else None
    with video_recording(env, video, size=cfg.video_size) if video else contextlib.nullcontext(env) as played:
        returns = run_episodes(played, actor, cfg.eval_episodes, env.task_spec.episode_length)
    mean = sum(returns) / len(returns)
    print(f"checkpoint {path} (step {state['step']}), task {task}: mean return {mean:.1f} over {len(returns)} episodes")
    if video:
        print(f"video of the {len(returns)} episodes: {video}")
    print(f"mean_return={mean:.3f}")
    return 0


def _evaluate_tasks(cfg: EvalConfig, path: Path, state: dict, world_model, actor) -> int:
    from .agent import checkpoint_env
    from .evaluation import record_video, video_enabled
    from .offline import evaluate_tasks, normalized_score

    tasks = state["trained_tasks"]
    rows = evaluate_tasks(
        actor.to(cfg.device),
        state["task_names"],
        tasks,
        world_model.cfg.obs_dim,
        world_model.cfg.action_dim,
        cfg.eval_episodes,
        seed=cfg.seed,
        progress=True,
    )
    for row in rows:
        print(f"  {row['task']:28s} return {row['episode_reward']:8.1f}  success {row['episode_success']:.2f}  score {row['score']:6.1f}")
    if video_enabled(cfg.save_video):  # one episode per task
        for task in tasks:
            env_maker = partial(checkpoint_env, state, task, seed=cfg.seed)
            video = record_video(env_maker, actor, _video_path(cfg, path, task, state), size=cfg.video_size, seed=cfg.seed)
            print(f"  video: {video}")
    score = normalized_score(rows)
    print(f"checkpoint {path} (step {state['step']}): normalized score {score:.1f} over {len(rows)} tasks")
    print(f"normalized_score={score:.3f}")
    return 0


# ------------------------------------------------------------------------------------------ mbdpo-dataset
def dataset(cfg: DatasetConfig) -> int:
    """``mbdpo-dataset check data_dir=<dir>`` / ``generate out=<dir> tasks=[...]`` / ``export out=<dir> checkpoints=[...]``."""
    from ..data.tdmpc2_dataset import validate_dataset

    if cfg.action == "check":
        info = validate_dataset(cfg.data_dir, cfg.task_set, progress=True)
        verb = "holds"
    elif cfg.action == "generate":
        from .generate_data import generate_dataset

        info = generate_dataset(cfg.out, list(cfg.tasks), cfg.episodes_per_task, task_set=cfg.task_set or "mt30", seed=cfg.seed)
        verb = f"written to {cfg.out}:"
    else:
        from .generate_data import export_replay

        info = export_replay(list(cfg.checkpoints), cfg.out, task_set=cfg.task_set or "mt30", seed=cfg.seed)
        verb = f"written to {cfg.out}:"
    total = sum(info.episodes.values())
    print(
        f"OK: {info.task_set} layout, {len(info.chunks)} chunk file(s) {verb} {total} episodes of {info.rows_per_episode} rows, "
        f"{len(info.episodes)} task(s):"
    )
    for task, n in info.episodes.items():
        i = info.tasks.index(task)
        print(
            f"  {i:3d} {task:28s} {n:7d} episodes  obs {info.obs_dims[i]:3d}  action {info.action_dims[i]}  "
            f"episode length {info.episode_lengths[i]}"
        )
    return 0


# ------------------------------------------------------------------------------------------ mbdpo-import / mbdpo-export
def import_checkpoint(cfg: ImportConfig) -> int:
    """``mbdpo-import checkpoint=<official .pt> out=<our checkpoint>``."""
    from .interop import import_checkpoint as run_import

    out = Path(cfg.out or f"runs/imported/{Path(cfg.checkpoint).stem}/checkpoints/latest.pt")
    state = run_import(
        cfg.checkpoint,
        out,
        task=cfg.task,
        tasks=list(cfg.tasks) if cfg.tasks else None,
        exclude_tasks=list(cfg.exclude_tasks),
        algo=cfg.algo,
        overwrite=cfg.overwrite,
    )
    info, wm = state["imported"], state["world_model_config"]
    tasks = f"{wm['num_tasks']} tasks (task_dim {wm['task_dim']})" if wm["task_dim"] else f"task {state['task']['name']}"
    print(
        f"imported {info['format']} checkpoint {cfg.checkpoint} ({info['q_layout']} Q layout): {wm['obs_type']} obs {wm['obs_dim']}, "
        f"action {wm['action_dim']}, latent {wm['latent_dim']}, mlp {wm['mlp_dim']}, enc {wm['enc_dim']} x {wm['num_enc_layers']}, "
        f"{wm['num_q']} Q heads, {tasks}, algo={state['config']['algo']}"
    )
    for note in info["notes"]:
        print(f"  note: {note}")
    print(f"written to {out}; evaluate: mbdpo-eval checkpoint={out}")
    return 0


def export_checkpoint(cfg: ExportConfig) -> int:
    """``mbdpo-export checkpoint=<our checkpoint> out=<official .pt> [format=mbdpo|tdmpc2]``."""
    from .interop import export_checkpoint as run_export

    path = Path(cfg.checkpoint) if cfg.checkpoint else find_latest_checkpoint()
    out = run_export(path, cfg.out, fmt=cfg.format, overwrite=cfg.overwrite)
    print(
        f"exported {path} to {out} ({cfg.format} layout, {{'model': state_dict}} as the official agent.save); "
        "load it there with agent.load (energy normalisation statistics are not part of that layout)"
    )
    return 0
