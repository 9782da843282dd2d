"""The settings of the MBDPO / TD-MPC2 commands, one dataclass schema each (registered in Hydra's ConfigStore
by :func:`register_configs`): :class:`TrainConfig` (``mbdpo-train``), :class:`CompareConfig`
(``mbdpo-compare``), :class:`EvalConfig` (``mbdpo-eval``), :class:`DatasetConfig` (``mbdpo-dataset``),
:class:`ImportConfig` and :class:`ExportConfig`; ``mbdpo-finetune``'s extends ``TrainConfig``
(:class:`~torchrl_mbdpo.trainers.finetune.FinetuneConfig`). Every field has a working default (official values
for the algorithm, spec §6.1) and a comment; the command line overrides them Hydra-style
(``planner.num_samples=64``). Each schema's ``validate()`` checks every field and cross-field rule before
anything is written (the mechanism: :mod:`torchrl_mbdpo.config`)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from ..config import UserError, at_least, config_warning, device_available, existing_path, one_of, require, work_dir_usable
from ..modules.compile import CompileOptions
from ..modules.mppi import MPPIConfig
from ..modules.planning import PlannerConfig

ALGOS = ("mbdpo", "tdmpc2")  # what mbdpo-train trains
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass
class ModelOverrides:
    """Optional architecture overrides on top of the ``model_size`` table (``None`` = table value)."""

    latent_dim: Optional[int] = None  # latent size (default: the model_size table's)
    mlp_dim: Optional[int] = None  # hidden width of the heads and dynamics
    enc_dim: Optional[int] = None  # hidden width of the state encoder
    num_enc_layers: Optional[int] = None  # layers of the state encoder
    num_q: Optional[int] = None  # Q heads of the ensemble
    dropout: Optional[float] = None  # dropout in the Q heads (target heads run without)
    simnorm_dim: Optional[int] = None  # group size of SimNorm on the latent
    q_init: Optional[str] = None  # "official" (default init kept, as MBDPO) or "trunc_normal" (TD-MPC2 fix)
    task_dim: Optional[int] = None  # multi-task embedding size; default 96 (the paper's; the official code uses 64 for mt30)

    def as_kwargs(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class LossConfig:
    """Coefficients and options of :class:`~torchrl_mbdpo.MBDPOLoss` (official defaults)."""

    rho: float = 0.5  # temporal weight of the horizon's terms: rho^t
    consistency_coef: float = 20.0  # latent consistency (dynamics) term
    reward_coef: float = 0.1  # reward cross-entropy term
    value_coef: float = 0.1  # Q cross-entropy term
    termination_coef: float = 1.0  # termination term (episodic tasks)
    energy_coef: float = 1.0  # contrastive energy term of F (0: no energy network trained)
    score_coef: float = 1.0  # score-matching term (with use_score_network)
    entropy_coef: float = 1e-4  # entropy bonus of the policy prior
    contrastive_pairing: str = "official"  # "official" reproduces the (t,b)/(b,t) mismatch; "aligned" fixes it
    contrastive_neg_noise: float = 0.5  # std of the noisy policy negative of the energy loss
    use_score_network: bool = False  # train the amortised score network (plan with it: planner.score_source=network)
    target_q_pair: str = "official"  # "official": heads 0 and 1; "random": a random pair (TD-MPC2)

    def validate(self) -> None:
        one_of(self, "contrastive_pairing", ("official", "aligned"), prefix="loss.")
        one_of(self, "target_q_pair", ("official", "random"), prefix="loss.")
        require(0 < self.rho <= 1, f"loss.rho must lie in (0, 1], got {self.rho}.")
        for name in ("consistency_coef", "reward_coef", "value_coef", "termination_coef", "energy_coef", "score_coef", "entropy_coef"):
            at_least(self, 0, name, prefix="loss.")


@dataclass
class TrainConfig:
    # A task name. mode=offline: mt30 | mt80 (every task of that set) or a list of tasks of the dataset.
    task: Any = "cartpole-swingup"
    mode: str = "online"  # online (collect and learn) | offline (learn from data_dir's TD-MPC2 chunk files)
    data_dir: Optional[str] = None  # mode=offline: a folder of chunk_<i>.pt files (mbdpo-dataset check/generate)
    cache_dir: Optional[str] = None  # mode=offline: memory-mapped copy of the data; default <data_dir>/memmap
    exclude_tasks: List[str] = field(default_factory=list)  # mode=offline: tasks left out of pretraining (held out for fine-tuning)
    obs: str = "state"  # state | rgb (DMControl: the last 3 64x64 RGB frames, conv encoder with shift augmentation)
    steps: int = 100_000  # agent steps (policy actions), as in the published curves; offline: updates
    seed: int = 1  # seeds every random stream of the run (torch, numpy, Python, envs, evaluations)
    model_size: Any = 5  # 1, 5, 19, 48, 317 (or the paper's 1.7, 6, 21, 54, 340)
    device: str = "cpu"  # cpu | cuda | cuda:<i>: where the networks run (envs stay on the CPU)
    num_envs: int = 1  # environments stepped as one batch (SerialEnv), planned in one call
    eval_freq: int = 10_000  # agent steps (offline: updates) between evaluations (an evaluation also runs at step 0)
    eval_episodes: int = 10  # episodes per evaluation (mode=offline: per task; 0 skips the evaluations)
    checkpoint_freq: int = 10_000  # agent steps; taken at the next step where every env ends an episode
    resume: bool = False  # continue the run in work_dir from its last checkpoint
    max_nonfinite: int = 10  # stop (with a checkpoint) after this many non-finite updates in a row
    work_dir: Optional[str] = None  # default: runs/<algo>/<task>/seed<seed>
    algo: str = "mbdpo"  # mbdpo (DiffusionActor + MBDPOLoss) | tdmpc2 (MPPIActor + TDMPC2Loss), same world model
    batch_size: Optional[int] = None  # slices per update; default 256 online, 1024 offline (the paper's)
    buffer_size: int = 1_000_000  # replay capacity in transitions (at most steps)
    seed_steps: Optional[int] = None  # default: max(1000, 5 * episode_length), random actions
    pretrain_updates: Optional[int] = None  # updates at the end of the seed phase; default: seed_steps
    utd: float = 1.0  # updates per agent step after the seed phase
    lr: float = 3e-4  # Adam learning rate (the encoder's times enc_lr_scale)
    enc_lr_scale: float = 0.3  # learning-rate factor of the encoder
    grad_clip_norm: float = 20.0  # gradient norm clip of both optimisers
    tau: float = 0.01  # Polyak rate of the target Q heads
    episodic: Optional[bool] = None  # default: from the task
    threads: Optional[int] = None  # torch CPU threads; default: torch's
    precision: str = "fp32"  # fp32 | bf16 (torch.autocast for planning and updates; weights stay float32)
    # torch.compile the planner (actor.compile_planner) and the update (objectives.CompiledUpdate): same numbers
    # as eager for the same draws; compile time is reported once. On CPU it compiles for minutes and gains little.
    compile: bool = False
    compile_mode: Optional[str] = (
        None  # torch.compile mode: None (default) | reduce-overhead | max-autotune-no-cudagraphs (official code's)
    )
    cudagraphs: bool = False  # CUDA only: capture the compiled update and planner in CUDA graphs (tensordict's CudaGraphModule)
    logger: str = "csv"  # csv | tensorboard | wandb (all scalars; eval.csv is always written)
    progress: bool = True  # progress bar (tqdm)
    # MP4 of evaluation episodes in <work_dir>/videos (TorchRL's VideoRecorder; pixels from the env's renderer).
    # None: on where a CUDA GPU renders, off on CPU (software rendering costs ~50 ms a frame). See video_enabled().
    save_video: Optional[bool] = None
    model: ModelOverrides = field(default_factory=ModelOverrides)
    loss: LossConfig = field(default_factory=LossConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)  # algo=mbdpo
    mppi: MPPIConfig = field(default_factory=MPPIConfig)  # algo=tdmpc2

    def validate(self) -> None:
        """Every rule of a run's settings (raises :class:`~torchrl_mbdpo.config.UserError`); settings that are
        legal but almost surely a mistake are said up front (:func:`~torchrl_mbdpo.config.config_warning`)."""
        from ..envs.dmcontrol import dmc_task_name
        from ..envs.factory import OBS_TYPES, task_spec
        from ..modules.world_model import resolve_model_size

        one_of(self, "mode", ("online", "offline"))
        one_of(self, "algo", ALGOS)
        one_of(self, "obs", OBS_TYPES)
        one_of(self, "precision", ("fp32", "bf16"))
        one_of(self, "logger", ("csv", "tensorboard", "wandb"))
        one_of(self, "compile_mode", COMPILE_MODES)
        at_least(self, 1, "steps", "num_envs", "eval_freq", "checkpoint_freq", "buffer_size", "max_nonfinite")
        at_least(self, 0 if self.mode == "offline" else 1, "eval_episodes")  # offline: 0 skips the evaluations
        at_least(self, 1, "batch_size", "threads")
        at_least(self, 0, "seed_steps", "pretrain_updates", "utd", "enc_lr_scale")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}.")
        require(0 <= self.tau <= 1, f"tau must lie in [0, 1], got {self.tau}.")
        require(self.grad_clip_norm > 0, f"grad_clip_norm must be > 0, got {self.grad_clip_norm}.")
        resolve_model_size(self.model_size)
        device_available(self.device)
        require(not self.cudagraphs or self.device.startswith("cuda"), "cudagraphs=true needs a CUDA device (device=cuda).")
        work_dir_usable(self.work_dir)
        self.loss.validate()
        self.active_planner().validate()
        if self.algo == "mbdpo" and self.planner.score_source == "network" and not self.loss.use_score_network:
            raise UserError(
                "planner.score_source=network plans with the amortised score network, which loss.use_score_network=false "
                "never trains: pass loss.use_score_network=true too (the official use_score_network=true)."
            )
        if self.mode == "offline":
            existing_path(
                self.data_dir, "data_dir", "a folder of TD-MPC2 chunk_<i>.pt files (mbdpo-dataset generate out=<dir>)", folder=True
            )
            return
        if os.environ.get("WORLD_SIZE", "1") != "1":
            raise UserError(
                "torchrun data-parallel training is for mode=offline; an online run is one process (num_envs=N batches its envs)."
            )
        if not isinstance(self.task, str):
            raise UserError(
                f"mode=online trains one task; got task={list(self.task)}. Several tasks train offline: mode=offline data_dir=<dir>."
            )
        spec = task_spec(self.task)
        if self.obs == "rgb":
            require(
                dmc_task_name(self.task) is not None, f"obs=rgb is available for DMControl tasks (e.g. cheetah-run), not for {self.task}."
            )
        if self.save_video:
            from ..envs.suite import suite_of

            suite = suite_of(self.task)
            require(
                suite is None,
                f"save_video=true: {suite.name if suite else ''} tasks have no renderer here (DMControl and gym: tasks do); "
                "run with save_video=false.",
            )
        self._warn_if_no_update(spec)

    def _warn_if_no_update(self, spec) -> None:
        random_frames, _ = seed_phase(self, spec, max(1, self.num_envs))
        first_data = spec.episode_length * max(1, self.num_envs)  # the first episodes enter the buffer at a resumable point
        if self.steps < first_data:
            config_warning(
                f"steps={self.steps} ends before the first episodes end ({spec.episode_length} agent steps each on {self.task}, "
                f"x {max(1, self.num_envs)} env(s)): nothing enters the replay buffer, so no update will happen"
                f"{' unless an episode terminates early' if spec.episodic else ''}. Raise steps to >= {first_data}."
            )
        elif self.steps < random_frames:
            config_warning(
                f"steps={self.steps} ends inside the seed phase ({random_frames} random-action steps, seed_steps): no update will "
                f"happen. Lower seed_steps, or raise steps above {random_frames}."
            )

    def resolved(self) -> "TrainConfig":
        """This config with its mode-dependent defaults filled in (what a checkpoint records)."""
        batch_size = self.batch_size or (1024 if self.mode == "offline" else 256)
        return dataclasses.replace(self, batch_size=batch_size)

    def active_planner(self) -> PlannerConfig | MPPIConfig:
        """The planner settings of ``algo`` (their ``horizon`` is the world model's and the slices')."""
        return self.mppi if self.algo == "tdmpc2" else self.planner

    def compile_options(self) -> CompileOptions | None:
        """How the planner and the update are compiled (``compile=true``), or ``None`` for eager."""
        return CompileOptions(mode=self.compile_mode, cudagraphs=self.cudagraphs) if self.compile else None


@dataclass
class CompareConfig:
    """``mbdpo-compare``: every (task, algo, seed) run for ``steps`` agent steps with the ``train`` settings."""

    tasks: List[str] = field(default_factory=lambda: ["cartpole-swingup"])  # tasks to compare
    algos: List[str] = field(default_factory=lambda: ["mbdpo", "tdmpc2"])  # mbdpo | tdmpc2 (run=false: any folder name under root)
    seeds: List[int] = field(default_factory=lambda: [1, 2, 3])  # seeds of every (task, algo)
    steps: int = 100_000  # agent steps of every run (overrides train.steps)
    root: str = "runs"  # runs live in <root>/<algo>/<task>/seed<seed>
    out_dir: str = "runs/compare"  # where <task>.png, summary.csv and final.csv go
    run: bool = True  # false: only collect the runs that exist
    train: TrainConfig = field(default_factory=TrainConfig)  # settings of every run: train.model_size=1 ...

    def validate(self) -> None:
        require(len(self.tasks) > 0 and len(self.algos) > 0 and len(self.seeds) > 0, "tasks, algos and seeds must each name at least one.")
        at_least(self, 1, "steps")
        work_dir_usable(self.root, "root")
        work_dir_usable(self.out_dir, "out_dir")
        if not self.run:  # run=false collects any <root>/<name>/<task>/seed<seed>/eval.csv (e.g. the SAC script's)
            return
        unknown = sorted(set(self.algos) - set(ALGOS))
        require(
            not unknown,
            f"algos: {unknown} cannot be trained here; choose from {', '.join(ALGOS)}, or pass run=false to only collect "
            f"existing runs under {self.root}/<algo>/<task>/seed<seed>.",
        )
        for task in self.tasks:
            for algo in self.algos:
                dataclasses.replace(self.train, task=task, algo=algo, steps=self.steps, work_dir=None, resume=False).validate()


def overrides_of(schema: type, name: str) -> type:
    """A schema of overrides: every field of ``schema``, optional, default None (None: keep the value a checkpoint
    was trained with)."""
    import typing

    hints = typing.get_type_hints(schema)
    fields = [(f.name, Optional[hints[f.name]], dataclasses.field(default=None)) for f in dataclasses.fields(schema)]
    namespace = {"__doc__": f"Overrides of a checkpoint's {schema.__name__} (None: keep it).", "__overrides_of__": schema}
    return dataclasses.make_dataclass(name, fields, namespace=namespace)


PlannerOverrides = overrides_of(PlannerConfig, "PlannerOverrides")
MPPIOverrides = overrides_of(MPPIConfig, "MPPIOverrides")


@dataclass
class EvalConfig:
    """``mbdpo-eval``: a checkpoint's planner (or policy) on its task, or on every task of a multi-task one."""

    checkpoint: Optional[str] = None  # default: the newest runs/**/checkpoints/latest.pt
    eval_episodes: int = 10  # episodes per task
    seed: int = 0  # seeds the evaluation episodes and the planner's draws
    device: str = "cpu"  # cpu | cuda: where the planner runs
    task: Optional[str] = None  # default: the checkpoint's task (multi-task checkpoints: every trained task)
    planner: PlannerOverrides = field(default_factory=PlannerOverrides)  # MBDPO checkpoints: planner.num_samples=32 ...
    mppi: MPPIOverrides = field(default_factory=MPPIOverrides)  # TD-MPC2 checkpoints: mppi.iterations=4 ...
    save_video: Optional[bool] = None  # MP4 of the evaluation episodes; default: on where a CUDA GPU renders, off on CPU
    video_dir: Optional[str] = None  # default: <run dir>/videos (the folder above checkpoints/)
    video_size: int = 256  # frame height and width in pixels

    def validate(self) -> None:
        at_least(self, 1, "eval_episodes")
        at_least(self, 16, "video_size")
        device_available(self.device)
        work_dir_usable(self.video_dir, "video_dir")
        if self.task is not None:
            from ..envs import task_spec

            task_spec(self.task)

    def overrides(self, group: str) -> dict:
        """The ``planner.*`` or ``mppi.*`` settings given (to change in the checkpoint's planner)."""
        return {k: v for k, v in asdict(getattr(self, group)).items() if v is not None}

    def check_checkpoint(self, state: dict, path) -> None:
        """The rules that depend on the checkpoint: overrides of its own planner, and a score network it trained."""
        config = state.get("config", {})
        algo = state.get("algo") or config.get("algo", "mbdpo")
        planner, mppi = self.overrides("planner"), self.overrides("mppi")
        if state.get("policy_loader"):  # a policy without a planner (written by another package's trainer)
            require(
                not (planner or mppi),
                f"{path} (algo={algo}) holds a policy that acts without a planner, so planner.* / mppi.* overrides do not apply.",
            )
            return
        own, other = ("mppi", "planner") if algo == "tdmpc2" else ("planner", "mppi")
        require(
            not self.overrides(other),
            f"{path} is an {algo} checkpoint: its planner's settings are {own}.*, not {other}.* ({own}.num_samples=...).",
        )
        if algo == "mbdpo":
            score_source = planner.get("score_source", config.get("planner", {}).get("score_source", "mc"))
            trained = config.get("loss", {}).get("use_score_network", False)
            require(
                score_source != "network" or trained,
                f"planner.score_source=network plans with the score network, which {path} never trained (loss.use_score_network=false): "
                "plan with planner.score_source=mc, or train with loss.use_score_network=true.",
            )


@dataclass
class DatasetConfig:
    """``mbdpo-dataset check|generate|export``: TD-MPC2's chunk-file datasets."""

    action: str = "check"  # check: validate data_dir | generate: random-action rollouts to out | export: online runs' replay to out
    data_dir: Optional[str] = None  # check: the folder of chunk_<i>.pt files
    task_set: Optional[str] = None  # check: also require mt30 or mt80; generate: the layout (default mt30)
    out: str = "data/dmc-small"  # generate, export: a new folder
    tasks: List[str] = field(
        default_factory=lambda: ["cartpole-balance", "cartpole-swingup", "pendulum-swingup", "reacher-easy"]
    )  # generate: the tasks to roll out (of task_set)
    episodes_per_task: int = 20  # generate: random-action episodes of each task
    checkpoints: List[str] = field(default_factory=list)  # export: online runs' <work_dir>/checkpoints/latest.pt
    seed: int = 0  # generate: seeds the rollouts; export: the chunks' shuffle

    def validate(self) -> None:
        one_of(self, "action", ("check", "generate", "export"))
        one_of(self, "task_set", (None, "mt30", "mt80"))
        if self.action == "check":
            existing_path(
                self.data_dir, "data_dir", "the folder of chunk_<i>.pt files to check (mbdpo-dataset check data_dir=<dir>)", folder=True
            )
            return
        work_dir_usable(self.out, "out")
        if self.action == "generate":
            from ..envs import task_spec

            require(len(self.tasks) > 0, "tasks must name at least one task, e.g. tasks=[cartpole-swingup,reacher-easy].")
            for task in self.tasks:
                task_spec(task)
            at_least(self, 1, "episodes_per_task")
        else:
            require(
                len(self.checkpoints) > 0, "mbdpo-dataset export needs checkpoints=[<work_dir>/checkpoints/latest.pt,...] of online runs."
            )
            for path in self.checkpoints:
                existing_path(path, "checkpoints", "checkpoints of online runs (<work_dir>/checkpoints/latest.pt)")


@dataclass
class ImportConfig:
    """``mbdpo-import``: an official MBDPO or TD-MPC2 checkpoint as a checkpoint of this library."""

    checkpoint: Optional[str] = None  # an official MBDPO or TD-MPC2 .pt file (agent.save)
    out: Optional[str] = None  # default: runs/imported/<file name>/checkpoints/latest.pt
    task: Optional[str] = None  # single-task: the task it was trained on (default: the only one of its sizes, or named in the file name)
    tasks: Optional[List[str]] = None  # multi-task: the task names in embedding order (default: mt30 / mt80 by their number)
    exclude_tasks: List[str] = field(default_factory=list)  # multi-task: tasks of the set it was not trained on
    algo: Optional[str] = None  # mbdpo | tdmpc2 (default: the file's)
    overwrite: bool = False  # replace an existing out file

    def validate(self) -> None:
        require(bool(self.checkpoint), "mbdpo-import needs checkpoint=<an official MBDPO or TD-MPC2 .pt file>.")
        one_of(self, "algo", (None, "mbdpo", "tdmpc2"))
        if self.out is not None:
            work_dir_usable(str(Path(self.out).parent), "out's folder")


@dataclass
class ExportConfig:
    """``mbdpo-export``: a checkpoint of this library in the official layout (``{"model": state_dict}``)."""

    checkpoint: Optional[str] = None  # a checkpoint of this library (default: the newest runs/**/checkpoints/latest.pt)
    out: Optional[str] = None  # the official-layout file to write ({"model": state_dict}, as agent.save)
    format: str = "mbdpo"  # mbdpo | tdmpc2 (without the energy and score networks)
    overwrite: bool = False  # replace an existing out file

    def validate(self) -> None:
        require(bool(self.out), "mbdpo-export needs out=<file to write>, e.g. out=models/final.pt.")
        one_of(self, "format", ("mbdpo", "tdmpc2"))
        work_dir_usable(str(Path(self.out).parent), "out's folder")


def seed_phase(cfg: TrainConfig, spec, frames_per_batch: int) -> tuple[int, int]:
    """``(random frames, updates at their end)``. As the official code: ``seed_steps + 1`` random steps (its
    steps 0..seed_steps), then ``seed_steps`` updates (``pretrain_updates`` overrides); ``seed_steps``
    defaults to ``max(1000, 5 * episode_length)``. Random frames are rounded up to whole batches."""
    seed_steps = cfg.seed_steps if cfg.seed_steps is not None else max(1000, 5 * spec.episode_length)
    random_frames = -(-(seed_steps + 1) // frames_per_batch) * frames_per_batch if seed_steps else 0
    return random_frames, cfg.pretrain_updates if cfg.pretrain_updates is not None else seed_steps


def file_name_of(task) -> str:
    """The task name with the ``:`` and ``/`` of gym ids made file-name safe (a task list: its length)."""
    if not isinstance(task, str):
        return f"{len(task)}tasks"
    return task.replace(":", "_").replace("/", "_")


def default_work_dir(algo: str, task: str, seed: int, root: str = "runs") -> str:
    return f"{root}/{algo}/{file_name_of(task)}/seed{seed}"


SWEEP_IDENTITY_KEYS = ("task", "seed", "algo")  # already in the default work dir
SWEPT_KEYS_ENV = "MBDPO_SWEPT_KEYS"  # set by mbdpo-train -m in every job (hydra.job.env_set): the other swept keys


def _override_key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def sweep_work_dir(cfg: "TrainConfig", job_overrides, swept_keys, root: str = "runs") -> str | None:
    """The work dir of one job of a Hydra multirun (``mbdpo-train -m seed=1,2,3 task=a,b``), or None where the
    trainer's default (``runs/<algo>/<task>/seed<seed>``, offline ``runs/offline/...``) already tells the
    jobs apart. Jobs that differ in other swept keys (``model_size=1,5``) go under
    ``<root>/<key=value,...>/``: ``runs/model_size=1/mbdpo/cheetah-run/seed1``, collected by
    ``mbdpo-compare run=false root=runs/model_size=1``."""
    swept = {k for k in swept_keys if k not in SWEEP_IDENTITY_KEYS}
    extras = sorted(o.lstrip("+~") for o in job_overrides if _override_key(o) in swept)
    if not extras:
        return None
    variant = ",".join(extras).replace("/", "_").replace(":", "_").replace(" ", "")
    if cfg.mode == "offline":
        return f"{root}/{variant}/offline/{cfg.algo}/{file_name_of(cfg.task)}/size{cfg.model_size}/seed{cfg.seed}"
    return default_work_dir(cfg.algo, cfg.task, cfg.seed, f"{root}/{variant}")


# Fields a resumed run may change; every other field must equal the checkpoint's.
RESUMABLE_FIELDS = (
    "steps",
    "data_dir",
    "cache_dir",
    "resume",
    "progress",
    "work_dir",
    "device",
    "threads",
    "logger",
    "eval_freq",
    "eval_episodes",
    "checkpoint_freq",
    "max_nonfinite",
    "save_video",
    "compile",
    "compile_mode",
    "cudagraphs",
)


def register_configs() -> None:
    """Register the commands' schemas with Hydra's ConfigStore (``mbdpo_<command>_schema``, named by the YAML
    files of :mod:`torchrl_mbdpo.config`)."""
    from hydra.core.config_store import ConfigStore

    from .finetune import FinetuneConfig

    store = ConfigStore.instance()
    for name, node in (
        ("train", TrainConfig),
        ("eval", EvalConfig),
        ("compare", CompareConfig),
        ("finetune", FinetuneConfig),
        ("dataset", DatasetConfig),
        ("import", ImportConfig),
        ("export", ExportConfig),
    ):
        store.store(name=f"mbdpo_{name}_schema", node=node)


def to_container(cfg) -> dict:
    """Plain-dict view of a config dataclass or OmegaConf node (for checkpoints and logs)."""
    from omegaconf import OmegaConf

    if dataclasses.is_dataclass(cfg):
        cfg = OmegaConf.structured(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def from_container(d: dict, schema: type = None):
    """Rebuild a typed config (``schema``, default :class:`TrainConfig`) from a plain dict (unknown keys raise a clear error)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema or TrainConfig), d))
