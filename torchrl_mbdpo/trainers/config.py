"""Structured configuration of an online run. Every field has a working default (official values for
the algorithm, spec §6.1); the command line overrides them Hydra-style: ``planner.num_samples=64``."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field
from typing import Any, List, Optional

from ..modules.compile import CompileOptions
from ..modules.mppi import MPPIConfig
from ..modules.planning import PlannerConfig


@dataclass
class ModelOverrides:
    """Optional architecture overrides on top of the ``model_size`` table (``None`` = table value)."""

    latent_dim: Optional[int] = None
    mlp_dim: Optional[int] = None
    enc_dim: Optional[int] = None
    num_enc_layers: Optional[int] = None
    num_q: Optional[int] = None
    dropout: Optional[float] = None
    simnorm_dim: Optional[int] = None
    q_init: Optional[str] = None  # "official" (default init kept, as MBDPO) or "trunc_normal" (TD-MPC2 fix)
    task_dim: Optional[int] = None  # multi-task embedding size; default 96 (the paper's; the official code uses 64 for mt30)

    def as_kwargs(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class LossConfig:
    """Coefficients and options of :class:`~torchrl_mbdpo.MBDPOLoss` (official defaults)."""

    rho: float = 0.5
    consistency_coef: float = 20.0
    reward_coef: float = 0.1
    value_coef: float = 0.1
    termination_coef: float = 1.0
    energy_coef: float = 1.0
    score_coef: float = 1.0
    entropy_coef: float = 1e-4
    contrastive_pairing: str = "official"  # "official" reproduces the (t,b)/(b,t) mismatch; "aligned" fixes it
    contrastive_neg_noise: float = 0.5
    use_score_network: bool = False
    target_q_pair: str = "official"  # "official": heads 0 and 1; "random": a random pair (TD-MPC2)


@dataclass
class DMOConfig:
    """``algo=dmo``: DMO-SAPO, first-order policy optimisation through coupled global and local world models
    (:class:`~torchrl_mbdpo.objectives.dmo.DMOLoss`, :mod:`torchrl_mbdpo.trainers.dmo`).

    The top-level ``num_envs``, ``seed_steps``, ``pretrain_updates``, ``utd``, ``lr`` and ``tau`` of the
    planner-based algorithms are not used by ``algo=dmo``: these fields are. ``batch_size`` (default 256) is
    the replay batch of the local- and learned-model updates, ``grad_clip_norm`` clips their gradients."""

    forward_model: str = "sim"  # sim: the real (batched) simulator is the global model | learned: a learned observation-space model
    decoupled: bool = True  # false: the "no decoupling" ablation (the local latent model also makes the forward pass)
    horizon: int = 16  # H: steps of each first-order rollout (SAPO/SHAC-like short horizon)
    num_envs: int = 16  # parallel rollouts (the batched training env; also the learned global model's batch)
    discount: Optional[float] = None  # default: the task's (TD-MPC2 heuristic from the episode length)
    lmbda: float = 0.95  # lambda of the critic's soft TD(lambda) targets
    alpha_init: float = 0.1  # initial entropy temperature
    target_entropy: Optional[float] = None  # default: -action_dim
    log_std_min: float = -5.0  # bounds of the actor's log-std (the initial policy's std is about exp(-1.5))
    log_std_max: float = 2.0
    actor_lr: float = 2e-3
    critic_lr: float = 5e-4
    alpha_lr: float = 5e-3
    local_model_lr: float = 3e-4
    tau: float = 0.2  # Polyak rate of the target critic, once per iteration
    grad_clip_norm: float = 1.0  # actor and critic gradients (SHAC/SAPO's 1.0)
    critic_updates: int = 8  # critic steps per iteration (full rollout batch)
    local_model_updates: int = 8  # local-model steps per iteration on replay batches (fine-tuning near the current policy)
    seed_steps: int = 4096  # random-action env steps at the start (data to pre-train the local model)
    pretrain_updates: int = 1000  # local-model (and learned-model) steps after the seed phase
    buffer_size: int = 1_000_000  # replay capacity (single transitions)
    learned_hidden: int = 256  # forward_model=learned: width of the MLP (obs, action) -> (delta obs, reward)
    learned_updates: int = 16  # forward_model=learned: model steps per iteration
    collect_steps: Optional[int] = None  # forward_model=learned: real steps per env and iteration (default: horizon)
    learned_lr: float = 1e-3
    learned_reset: str = (
        "replay"  # forward_model=learned: episodes start from any replay observation | start: from real initial observations
    )


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
    seed: int = 1
    model_size: Any = 5  # 1, 5, 19, 48, 317 (or the paper's 1.7, 6, 21, 54, 340)
    device: str = "cpu"
    num_envs: int = 1
    eval_freq: int = 10_000  # agent steps (offline: updates) between evaluations (an evaluation also runs at step 0)
    eval_episodes: int = 10
    checkpoint_freq: int = 10_000  # agent steps; taken at the next step where every env ends an episode
    resume: bool = False  # continue the run in work_dir from its last checkpoint
    max_nonfinite: int = 10  # stop (with a checkpoint) after this many non-finite updates in a row
    work_dir: Optional[str] = None  # default: runs/<algo>/<task>/seed<seed>
    algo: str = "mbdpo"  # mbdpo (DiffusionActor + MBDPOLoss) | tdmpc2 (MPPIActor + TDMPC2Loss), same world model | dmo (DMO-SAPO, dmo.*)
    batch_size: Optional[int] = None  # slices per update; default 256 online, 1024 offline (the paper's)
    buffer_size: int = 1_000_000
    seed_steps: Optional[int] = None  # default: max(1000, 5 * episode_length), random actions
    pretrain_updates: Optional[int] = None  # updates at the end of the seed phase; default: seed_steps
    utd: float = 1.0  # updates per agent step after the seed phase
    lr: float = 3e-4
    enc_lr_scale: float = 0.3
    grad_clip_norm: float = 20.0
    tau: float = 0.01
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
    progress: bool = True
    # MP4 of evaluation episodes in <work_dir>/videos (TorchRL's VideoRecorder; pixels from the env's renderer).
    # None: on where a CUDA GPU renders, off on CPU (software rendering costs ~50 ms a frame). See video_enabled().
    save_video: Optional[bool] = None
    model: ModelOverrides = field(default_factory=ModelOverrides)
    loss: LossConfig = field(default_factory=LossConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)  # algo=mbdpo
    mppi: MPPIConfig = field(default_factory=MPPIConfig)  # algo=tdmpc2
    dmo: DMOConfig = field(default_factory=DMOConfig)  # algo=dmo

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

    tasks: List[str] = field(default_factory=lambda: ["cartpole-swingup"])
    algos: List[str] = field(default_factory=lambda: ["mbdpo", "tdmpc2"])
    seeds: List[int] = field(default_factory=lambda: [1, 2, 3])
    steps: int = 100_000
    root: str = "runs"  # runs live in <root>/<algo>/<task>/seed<seed>
    out_dir: str = "runs/compare"
    run: bool = True  # false: only collect the runs that exist
    train: TrainConfig = field(default_factory=TrainConfig)  # settings of every run: train.model_size=1 ...


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
    """Register ``TrainConfig`` with Hydra's ConfigStore (as ``mbdpo_train_schema``)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="mbdpo_train_schema", node=TrainConfig)


def to_container(cfg) -> dict:
    """Plain-dict view of a ``TrainConfig`` or OmegaConf node (for checkpoints and logs)."""
    from omegaconf import OmegaConf

    if isinstance(cfg, TrainConfig):
        cfg = OmegaConf.structured(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def from_container(d: dict) -> TrainConfig:
    """Rebuild a typed ``TrainConfig`` from a plain dict (unknown keys raise a clear error)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), d))
