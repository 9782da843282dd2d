"""Console scripts ``mbdpo-train``, ``mbdpo-eval``, ``mbdpo-compare``, ``mbdpo-finetune``,
``mbdpo-dataset``, ``mbdpo-import``, ``mbdpo-export`` and ``mbdpo-dmo`` (Hydra overrides: ``key=value``, ``planner.steps=5``)."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

if not sys.stderr.isatty():  # progress bars in log files: one line every few seconds, not ten per second
    os.environ.setdefault("TQDM_MININTERVAL", "5")

import hydra  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402


@dataclass
class EvalConfig:
    checkpoint: Optional[str] = None  # default: the newest runs/**/checkpoints/latest.pt
    eval_episodes: int = 10
    seed: int = 0
    device: str = "cpu"
    task: Optional[str] = None  # default: the checkpoint's task (multi-task checkpoints: every trained task)
    planner: Dict[str, Any] = field(default_factory=dict)  # overrides of the run's planner, e.g. +planner.steps=5
    save_video: Optional[bool] = None  # MP4 of the evaluation episodes; default: on where a CUDA GPU renders, off on CPU
    video_dir: Optional[str] = None  # default: <run dir>/videos (the folder above checkpoints/)
    video_size: int = 256  # frame height and width in pixels


@dataclass
class DatasetConfig:
    action: str = "check"  # check: validate data_dir | generate: random-action rollouts to out | export: online runs' replay to out
    data_dir: Optional[str] = None  # check: the folder of chunk_<i>.pt files
    task_set: Optional[str] = None  # check: also require mt30 or mt80; generate: the layout (default mt30)
    out: str = "data/dmc-small"  # generate: a new folder
    tasks: List[str] = field(default_factory=lambda: ["cartpole-balance", "cartpole-swingup", "pendulum-swingup", "reacher-easy"])
    episodes_per_task: int = 20
    checkpoints: List[str] = field(default_factory=list)  # export: online runs' <work_dir>/checkpoints/latest.pt
    seed: int = 0


@dataclass
class ImportConfig:
    checkpoint: Optional[str] = None  # an official MBDPO or TD-MPC2 .pt file (agent.save)
    out: Optional[str] = None  # default: runs/imported/<file name>/checkpoints/latest.pt
    task: Optional[str] = None  # single-task: the task it was trained on (default: the only one of its sizes, or named in the file name)
    tasks: Optional[List[str]] = None  # multi-task: the task names in embedding order (default: mt30 / mt80 by their number)
    exclude_tasks: List[str] = field(default_factory=list)  # multi-task: tasks of the set it was not trained on
    algo: Optional[str] = None  # mbdpo | tdmpc2 (default: the file's)
    overwrite: bool = False


@dataclass
class ExportConfig:
    checkpoint: Optional[str] = None  # a checkpoint of this library (default: the newest runs/**/checkpoints/latest.pt)
    out: Optional[str] = None  # the official-layout file to write ({"model": state_dict}, as agent.save)
    format: str = "mbdpo"  # mbdpo | tdmpc2 (without the energy and score networks)
    overwrite: bool = False


def _register():
    from .trainers.config import CompareConfig, register_configs
    from .trainers.finetune import FinetuneConfig

    register_configs()
    ConfigStore.instance().store(name="mbdpo_eval_schema", node=EvalConfig)
    ConfigStore.instance().store(name="mbdpo_compare_schema", node=CompareConfig)
    ConfigStore.instance().store(name="mbdpo_finetune_schema", node=FinetuneConfig)
    ConfigStore.instance().store(name="mbdpo_dataset_schema", node=DatasetConfig)
    ConfigStore.instance().store(name="mbdpo_import_schema", node=ImportConfig)
    ConfigStore.instance().store(name="mbdpo_export_schema", node=ExportConfig)


def _register_dmo():
    from .dmo.compare import PixelCompareConfig
    from .dmo.play_data import PlayDataConfig
    from .dmo.policy_training import PixelDMOConfig
    from .dmo.ppo import PPOConfig
    from .dmo.reward import RewardTrainConfig
    from .dmo.world_model_training import WorldModelTrainConfig

    ConfigStore.instance().store(name="mbdpo_dmo_dataset_schema", node=PlayDataConfig)
    ConfigStore.instance().store(name="mbdpo_dmo_world_model_schema", node=WorldModelTrainConfig)
    ConfigStore.instance().store(name="mbdpo_dmo_reward_schema", node=RewardTrainConfig)
    ConfigStore.instance().store(name="mbdpo_dmo_policy_schema", node=PixelDMOConfig)
    ConfigStore.instance().store(name="mbdpo_dmo_ppo_schema", node=PPOConfig)
    ConfigStore.instance().store(name="mbdpo_dmo_compare_schema", node=PixelCompareConfig)


def _fail(err: Exception):
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def _train(cfg: DictConfig) -> None:
    from .data.tdmpc2_dataset import DatasetError
    from .trainers.checkpoint import CheckpointError
    from .trainers.config import TrainConfig
    from .trainers.offline import make_offline_trainer
    from .trainers.trainer import make_trainer

    try:
        train_cfg: TrainConfig = OmegaConf.to_object(cfg)
        _multirun_job_settings(train_cfg)
        if train_cfg.mode not in ("online", "offline"):
            raise ValueError(f"mode must be online or offline, got {train_cfg.mode!r}")
        if train_cfg.mode == "offline":
            return _run_offline(make_offline_trainer(train_cfg))
        if os.environ.get("WORLD_SIZE", "1") != "1":
            raise ValueError(
                "torchrun data-parallel training is for mode=offline; an online run is one process (num_envs=N batches its envs)."
            )
        if train_cfg.algo == "dmo":
            from .trainers.dmo import make_dmo_trainer

            trainer = make_dmo_trainer(train_cfg)
        else:
            trainer = make_trainer(train_cfg)
    except (ValueError, CheckpointError, DatasetError) as err:
        _fail(err)
    if train_cfg.algo != "dmo":
        return _run_online(trainer)
    d = trainer.cfg.dmo
    print(
        f"dmo ({d.forward_model} global model{'' if d.decoupled else ', no decoupling'}) on {trainer.cfg.task}: "
        f"{trainer.cfg.steps} env steps, model_size={trainer.cfg.model_size}, {d.num_envs} env(s), horizon {d.horizon}, "
        f"work_dir={trainer.work_dir}",
        flush=True,
    )
    trainer.train()
    if trainer.stop_message:
        sys.exit(128 + trainer._signal if trainer._signal else 1)
    last = trainer.last_eval
    print(f"final eval at step {last.get('step')}: return {last.get('episode_reward'):.1f}; curve: {trainer.eval_log.png_path}", flush=True)


def _multirun_job_settings(train_cfg) -> None:
    """In a job of ``mbdpo-train -m ...``: its own work dir (see ``sweep_work_dir``) and, under the joblib
    launcher, a share of the CPU threads (``threads=`` overrides it)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from .trainers.config import SWEPT_KEYS_ENV, sweep_work_dir

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    hydra_cfg = HydraConfig.get()
    if train_cfg.work_dir is None:
        swept = [k for k in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if k]
        train_cfg.work_dir = sweep_work_dir(train_cfg, list(hydra_cfg.overrides.task), swept)
    n_jobs = OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=None)
    if train_cfg.threads is None and n_jobs is not None:  # joblib: the runs in parallel share the cores
        cpus = os.cpu_count() or 1
        parallel = cpus if n_jobs < 1 else n_jobs
        total = int(os.environ.get(SWEPT_KEYS_ENV + "_JOBS", "0") or 0)
        train_cfg.threads = max(1, cpus // max(1, min(parallel, total or parallel, cpus)))


def _swept_keys(argv: list[str]) -> tuple[list[str], int]:
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


def _run_online(trainer) -> None:
    run = trainer.run
    cfg = run.cfg
    print(
        f"{cfg.algo} on {cfg.task}: {cfg.steps} agent steps, model_size={cfg.model_size}, {cfg.num_envs} env(s), work_dir={run.work_dir}",
        flush=True,
    )
    trainer.train()
    if trainer.stop_message:
        sys.exit(128 + run.control.signal if run.control.signal else 1)
    last = run.last_eval
    print(
        f"final eval at step {last.get('step')}: return {last.get('episode_reward'):.1f} "
        f"(policy prior {last.get('prior_episode_reward'):.1f}); curve: {run.eval_log.png_path}",
        flush=True,
    )


def _run_offline(trainer) -> None:
    trainer.train()
    if trainer.stop_message:
        sys.exit(128 + trainer._signal if trainer._signal else 1)
    if trainer.dist.is_main and trainer.last_eval:
        first = trainer.eval_log.rows()[0]
        print(
            f"normalized score: {float(first['normalized_score']):.1f} at update {first['step']} -> "
            f"{trainer.last_eval['normalized_score']:.1f} at update {trainer.last_eval['step']}; "
            f"per task: {trainer.eval_log.tasks_path}, {trainer.eval_log.png_path}",
            flush=True,
        )


def _finetune(cfg: DictConfig) -> None:
    from .trainers.checkpoint import CheckpointError
    from .trainers.finetune import make_finetune_trainer

    try:
        trainer = make_finetune_trainer(OmegaConf.to_object(cfg))
    except (ValueError, CheckpointError) as err:
        _fail(err)
    _run_online(trainer)


def _dataset(cfg: DictConfig) -> None:
    from .data.tdmpc2_dataset import DatasetError, validate_dataset

    try:
        if cfg.action == "check":
            if not cfg.data_dir:
                raise ValueError("mbdpo-dataset check needs data_dir=<folder of chunk_<i>.pt files>")
            info = validate_dataset(cfg.data_dir, cfg.task_set, progress=True)
            verb = "holds"
        elif cfg.action == "generate":
            from .trainers.generate_data import generate_dataset

            info = generate_dataset(cfg.out, list(cfg.tasks), cfg.episodes_per_task, task_set=cfg.task_set or "mt30", seed=cfg.seed)
            verb = f"written to {cfg.out}:"
        elif cfg.action == "export":
            from .trainers.generate_data import export_replay

            if not cfg.checkpoints:
                raise ValueError("mbdpo-dataset export needs checkpoints=[<work_dir>/checkpoints/latest.pt,...] of online runs")
            info = export_replay(list(cfg.checkpoints), cfg.out, task_set=cfg.task_set or "mt30", seed=cfg.seed)
            verb = f"written to {cfg.out}:"
        else:
            raise ValueError(f"action must be check, generate or export, got {cfg.action!r}")
    except (ValueError, DatasetError) as err:
        _fail(err)
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


def _find_latest_checkpoint() -> Path:
    found = sorted(Path("runs").glob("**/checkpoints/latest.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ValueError("No checkpoint given and none found under runs/. Pass checkpoint=<work_dir>/checkpoints/latest.pt")
    return found[-1]


def _video_path(cfg, checkpoint: Path, task: str, state: dict) -> Path:
    """``<video_dir>/eval_<task>_step<step>.mp4``; the default folder is ``videos/`` beside the run's ``eval.csv``."""
    from .trainers.config import file_name_of

    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    return Path(cfg.video_dir or run_dir / "videos") / f"eval_{file_name_of(task)}_step{state['step']}.mp4"


def _eval(cfg: DictConfig) -> None:
    import contextlib
    from functools import partial

    import torch

    from .envs import observation_size
    from .trainers.agent import checkpoint_env, load_agent
    from .trainers.checkpoint import CheckpointError, load_checkpoint
    from .trainers.dmo import load_dmo_policy
    from .trainers.evaluation import evaluate, record_video, video_enabled, video_recording
    from .trainers.offline import evaluate_tasks, normalized_score

    try:
        path = Path(cfg.checkpoint) if cfg.checkpoint else _find_latest_checkpoint()
        state = load_checkpoint(path)
        if state.get("algo") == "dmo":  # a DMO-SAPO run: its deterministic actor, no planner
            if cfg.planner:
                raise ValueError(f"{path} is a DMO checkpoint (algo=dmo): it acts without a planner, so planner.* overrides do not apply.")
            _, train_cfg, loss, actor = load_dmo_policy(path, state=state)
            world_model = loss.world_model
        else:
            _, train_cfg, world_model, actor = load_agent(path, state=state)
            actor.planner = type(actor.planner)(**{**vars(actor.planner), **cfg.planner})
        if state.get("trained_tasks") and cfg.task is None:  # an offline multi-task checkpoint: all its tasks
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
                print(
                    f"  {row['task']:28s} return {row['episode_reward']:8.1f}  success {row['episode_success']:.2f}  "
                    f"score {row['score']:6.1f}"
                )
            if video_enabled(cfg.save_video):  # one episode per task
                for task in tasks:
                    video = record_video(
                        partial(checkpoint_env, state, task, seed=cfg.seed),
                        actor,
                        _video_path(cfg, path, task, state),
                        size=cfg.video_size,
                        seed=cfg.seed,
                    )
                    print(f"  video: {video}")
            print(f"checkpoint {path} (step {state['step']}): normalized score {normalized_score(rows):.1f} over {len(rows)} tasks")
            print(f"normalized_score={normalized_score(rows):.3f}")
            return
        task = cfg.task or train_cfg.task
        env = checkpoint_env(state, task, seed=cfg.seed, obs=train_cfg.obs)
        if env.action_spec.shape[-1] != world_model.cfg.action_dim or observation_size(env) != world_model.cfg.obs_dim:
            raise CheckpointError(f"{path} was trained on {train_cfg.task}; task={task} has other observation/action sizes.")
    except (ValueError, CheckpointError) as err:
        _fail(err)
    if hasattr(actor, "make_tensordict_primer"):  # the planners keep their warm start in the TensorDict
        env.append_transform(actor.make_tensordict_primer())
    torch.manual_seed(cfg.seed)
    actor.to(cfg.device)
    video = _video_path(cfg, path, task, state) if video_enabled(cfg.save_video) else None
    with video_recording(env, video, size=cfg.video_size) if video else contextlib.nullcontext(env) as played:
        returns = evaluate(played, actor, cfg.eval_episodes, env.task_spec.episode_length)
    mean = sum(returns) / len(returns)
    print(f"checkpoint {path} (step {state['step']}), task {task}: mean return {mean:.1f} over {len(returns)} episodes")
    if video:
        print(f"video of the {len(returns)} episodes: {video}")
    print(f"mean_return={mean:.3f}")


def _compare(cfg: DictConfig) -> None:
    import copy

    from .trainers.agent import ALGOS
    from .trainers.compare import compare, markdown_table

    base = OmegaConf.to_object(cfg.train)
    trainable = (*ALGOS, "dmo")
    unknown = sorted(set(cfg.algos) - set(trainable))
    if unknown and cfg.run:  # run=false collects any <root>/<name>/<task>/seed<seed>/eval.csv (e.g. the SAC script's)
        _fail(
            ValueError(
                f"algos: {unknown} cannot be trained here; choose from {list(trainable)}, "
                f"or pass run=false to only collect existing runs under {cfg.root}/<algo>/<task>/seed<seed>"
            )
        )

    def make_config(task, algo, seed):
        run_cfg = copy.deepcopy(base)
        run_cfg.task, run_cfg.algo, run_cfg.seed = task, algo, seed
        return run_cfg

    try:
        final = compare(
            list(cfg.tasks), list(cfg.algos), list(cfg.seeds), cfg.steps, cfg.root, cfg.out_dir, make_config if cfg.run else None
        )
    except (ValueError, RuntimeError) as err:
        _fail(err)
    print(markdown_table(final))
    print(f"plots and tables: {cfg.out_dir}/<task>.png, {cfg.out_dir}/summary.csv, {cfg.out_dir}/final.csv")


def _import(cfg: DictConfig) -> None:
    from .trainers.checkpoint import CheckpointError
    from .trainers.interop import import_checkpoint

    try:
        if not cfg.checkpoint:
            raise ValueError("mbdpo-import needs checkpoint=<an official MBDPO or TD-MPC2 .pt file>")
        out = Path(cfg.out or f"runs/imported/{Path(cfg.checkpoint).stem}/checkpoints/latest.pt")
        state = import_checkpoint(
            cfg.checkpoint,
            out,
            task=cfg.task,
            tasks=list(cfg.tasks) if cfg.tasks else None,
            exclude_tasks=list(cfg.exclude_tasks),
            algo=cfg.algo,
            overwrite=cfg.overwrite,
        )
    except (ValueError, CheckpointError) as err:
        _fail(err)
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


def _export(cfg: DictConfig) -> None:
    from .trainers.checkpoint import CheckpointError
    from .trainers.interop import export_checkpoint

    try:
        if not cfg.out:
            raise ValueError("mbdpo-export needs out=<file to write>, e.g. out=models/final.pt")
        path = Path(cfg.checkpoint) if cfg.checkpoint else _find_latest_checkpoint()
        out = export_checkpoint(path, cfg.out, fmt=cfg.format, overwrite=cfg.overwrite)
    except (ValueError, CheckpointError) as err:
        _fail(err)
    print(
        f"exported {path} to {out} ({cfg.format} layout, {{'model': state_dict}} as the official agent.save); "
        "load it there with agent.load (energy normalisation statistics are not part of that layout)"
    )


def import_main():
    """``mbdpo-import checkpoint=<official .pt> out=<our checkpoint>``."""
    _register()
    hydra.main(config_path="config", config_name="import", version_base="1.3")(_import)()


def export_main():
    """``mbdpo-export checkpoint=<our checkpoint> out=<official .pt> [format=mbdpo|tdmpc2]``."""
    _register()
    hydra.main(config_path="config", config_name="export", version_base="1.3")(_export)()


def train_main():
    """``mbdpo-train key=value ...``; ``mbdpo-train -m seed=1,2,3 task=a,b`` sweeps them (Hydra multirun, joblib
    launcher: in parallel here; ``hydra/launcher=submitit_slurm`` on a Slurm cluster), each run in its own work dir."""
    from .trainers.config import SWEPT_KEYS_ENV

    swept, jobs = _swept_keys(sys.argv[1:])
    if swept:  # tells every job which keys vary and how many runs there are, whatever launcher runs it
        at = next(i for i, a in enumerate(sys.argv) if i and "=" in a and not a.startswith("-"))  # beside the other overrides
        sys.argv[at:at] = [f"+hydra.job.env_set.{SWEPT_KEYS_ENV}='{','.join(swept)}'", f"+hydra.job.env_set.{SWEPT_KEYS_ENV}_JOBS='{jobs}'"]
    _register()
    hydra.main(config_path="config", config_name="train", version_base="1.3")(_train)()


def eval_main():
    _register()
    hydra.main(config_path="config", config_name="eval", version_base="1.3")(_eval)()


def compare_main():
    _register()
    hydra.main(config_path="config", config_name="compare", version_base="1.3")(_compare)()


def finetune_main():
    _register()
    hydra.main(config_path="config", config_name="finetune", version_base="1.3")(_finetune)()


def dataset_main():
    """``mbdpo-dataset check data_dir=<dir>`` / ``generate out=<dir> tasks=[...]`` / ``export out=<dir> checkpoints=[...]``."""
    if len(sys.argv) > 1 and sys.argv[1] in ("check", "generate", "export"):
        sys.argv[1] = f"action={sys.argv[1]}"
    _register()
    hydra.main(config_path="config", config_name="dataset", version_base="1.3")(_dataset)()


# ------------------------------------------------------------------------------------------ mbdpo-dmo
DMO_COMMANDS = ("dataset", "world_model", "reward", "policy", "ppo", "compare")


def _dmo_dataset(cfg: DictConfig) -> None:
    from .dmo.play_data import PlayDatasetError, write_play_dataset

    try:
        info = write_play_dataset(
            cfg.out,
            cfg.episodes,
            image_size=cfg.image_size,
            episode_length=cfg.episode_length,
            scripted_fraction=cfg.scripted_fraction,
            noise=cfg.noise,
            seed=cfg.seed,
            progress=cfg.progress,
        )
    except (ValueError, PlayDatasetError) as err:
        _fail(err)
    behaviours = ", ".join(f"{n} {name}" for name, n in info.behaviours.items())
    print(
        f"play dataset written to {cfg.out}: {info.episodes} episodes ({behaviours}), {info.transitions} transitions, "
        f"{info.image_size}x{info.image_size} frames, {info.seconds:.1f} s"
    )


def _dmo_world_model(cfg: DictConfig) -> None:
    from .dmo.diffusion import ArchitectureError
    from .dmo.play_data import PlayDatasetError
    from .dmo.world_model_training import WorldModelTrainer
    from .trainers.checkpoint import CheckpointError

    try:
        trainer = WorldModelTrainer(OmegaConf.to_object(cfg))
    except (ValueError, PlayDatasetError, CheckpointError, ArchitectureError, ImportError) as err:
        _fail(err)
    n = sum(p.numel() for p in trainer.model.parameters())
    m = trainer.model_cfg
    print(
        f"world model ({n / 1e6:.2f}M parameters, {m.image_size}x{m.image_size}, k={m.context}, {m.num_steps} denoising steps) "
        f"on {trainer.dataset.path}: {len(trainer.train_episodes)} train / {len(trainer.held_out_episodes)} held-out episodes, "
        f"updates {trainer.update} -> {trainer.cfg.updates}, work_dir={trainer.work_dir}",
        flush=True,
    )
    last = trainer.train()
    if trainer.stop_message:
        print(trainer.stop_message, file=sys.stderr)
        sys.exit(128 + trainer._signal)
    print(
        f"update {last.get('update')}: held-out loss {last.get('held_out_loss')}; checkpoint {trainer.checkpoint_path}; "
        f"loss curve {trainer.work_dir / 'loss.png'}; frames {trainer.checkpoint_path.parent / 'frames.png'}",
        flush=True,
    )


def _dmo_reward(cfg: DictConfig) -> None:
    from .dmo.diffusion import ArchitectureError
    from .dmo.play_data import PlayDatasetError
    from .dmo.reward import RewardTrainer
    from .trainers.checkpoint import CheckpointError

    try:
        trainer = RewardTrainer(OmegaConf.to_object(cfg))
    except (ValueError, PlayDatasetError, CheckpointError, ArchitectureError, ImportError) as err:
        _fail(err)
    print(
        f"reward ({trainer.cfg.kind}) on {trainer.dataset.path}: updates {trainer.update} -> {trainer.cfg.updates}, "
        f"work_dir={trainer.work_dir}",
        flush=True,
    )
    last = trainer.train()
    if trainer.stop_message:
        print(trainer.stop_message, file=sys.stderr)
        sys.exit(128 + trainer._signal)
    print(
        f"update {last.get('update')}: held-out loss {last.get('held_out_loss')}, pair accuracy {last.get('held_out_accuracy') or '-'}, "
        f"correlation with the env's reward {last.get('env_reward_corr')}; checkpoint {trainer.checkpoint_path}",
        flush=True,
    )


def _dmo_policy(cfg: DictConfig, ppo: bool = False) -> None:
    from .dmo.diffusion import ArchitectureError
    from .dmo.play_data import PlayDatasetError
    from .dmo.policy_training import PixelDMOTrainer
    from .dmo.ppo import PPOTrainer
    from .trainers.checkpoint import CheckpointError

    try:
        trainer = (PPOTrainer if ppo else PixelDMOTrainer)(OmegaConf.to_object(cfg))
    except (ValueError, PlayDatasetError, CheckpointError, ArchitectureError, ImportError) as err:
        _fail(err)
    c = trainer.cfg
    what = (
        f"ppo ({trainer.reward_kind} reward), {c.num_envs} envs x {c.rollout_steps} steps"
        if ppo
        else f"dmo policy ({c.forward} forward, {trainer.reward_kind} reward), {c.num_envs} envs x H={c.horizon}"
    )
    print(
        f"{what}, in the world model {c.world_model}: iterations {trainer.iteration} -> {c.iterations}, work_dir={trainer.work_dir}",
        flush=True,
    )
    last = trainer.train()
    if trainer.stop_message:
        print(trainer.stop_message, file=sys.stderr)
        sys.exit(128 + trainer._signal)
    print(
        f"iteration {last.get('iteration')}: real Push-T success {last.get('success_rate')}, return {last.get('mean_return')} after "
        f"{last.get('world_model_samples')} world-model samples; {trainer.work_dir / 'eval.csv'}",
        flush=True,
    )


def _dmo_ppo(cfg: DictConfig) -> None:
    _dmo_policy(cfg, ppo=True)


def _dmo_compare(cfg: DictConfig) -> None:
    from .dmo.compare import compare_pixel_algos
    from .dmo.diffusion import ArchitectureError
    from .dmo.play_data import PlayDatasetError
    from .trainers.checkpoint import CheckpointError

    try:
        summary = compare_pixel_algos(OmegaConf.to_object(cfg))
    except (ValueError, RuntimeError, PlayDatasetError, CheckpointError, ArchitectureError, ImportError) as err:
        _fail(err)
    print("| algo | seeds | real success (final) | return (final) | imagined transitions | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in summary:
        print(
            f"| {r['algo']} | {r['seeds']} | {r['final_success_rate']} ± {r['success_std']} | {r['final_return']} ± {r['return_std']} "
            f"| {r['samples']} | {r['seconds']} |"
        )
    out = cfg.out_dir or cfg.root
    print(f"{out}/comparison.csv, {out}/summary.csv, {out}/comparison.png")


def dmo_main():
    """``mbdpo-dmo dataset out=<dir> episodes=N`` (Push-T play data) / ``mbdpo-dmo world_model data=<dir> [work_dir=...]``
    (the diffusion world model) / ``mbdpo-dmo reward data=<dir> kind=energy|env`` (its reward) / ``mbdpo-dmo policy
    world_model=<ckpt> reward=<ckpt> data=<dir> [forward=diffusion|local]`` (DMO-SAPO inside the world model) /
    ``mbdpo-dmo ppo world_model=<ckpt> reward=<ckpt> data=<dir>`` (the PPO baseline, in the same world model) /
    ``mbdpo-dmo compare world_model=<ckpt> reward=<ckpt> data=<dir> seeds=[0,1]`` (DMO, No Diffusion and PPO: CSV and plot)."""
    command = sys.argv[1] if len(sys.argv) > 1 else None
    if command not in DMO_COMMANDS:
        print(f"usage: mbdpo-dmo {{{'|'.join(DMO_COMMANDS)}}} key=value ...  (got {command!r})", file=sys.stderr)
        sys.exit(2)
    del sys.argv[1]
    _register_dmo()
    task = {
        "dataset": _dmo_dataset,
        "world_model": _dmo_world_model,
        "reward": _dmo_reward,
        "policy": _dmo_policy,
        "ppo": _dmo_ppo,
        "compare": _dmo_compare,
    }[command]
    hydra.main(config_path="config", config_name=f"dmo_{command}", version_base="1.3")(task)()
