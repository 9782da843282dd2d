"""The settings of the ``mbdpo-dmo`` commands, one dataclass schema each (registered in Hydra's ConfigStore by
:func:`register_dmo_configs`), each with its ``validate()``: every field and cross-field rule, checked before
anything is written (the mechanism: :mod:`torchrl_mbdpo.config`).

- :class:`DMOTrainConfig`: ``mbdpo-dmo train`` (DMO-SAPO on a task, the simulator or a learned MLP as the global model);
- :class:`PlayDataConfig`: ``mbdpo-dmo dataset`` (a play dataset of the real Push-T env);
- :class:`WorldModelTrainConfig`: ``mbdpo-dmo world_model`` (the global diffusion world model);
- :class:`RewardTrainConfig`: ``mbdpo-dmo reward`` (its learned reward);
- :class:`PixelDMOConfig`: ``mbdpo-dmo policy`` (DMO-SAPO inside the world model; ``forward=local``: No Diffusion);
- :class:`PPOConfig`: ``mbdpo-dmo ppo`` (the PPO baseline in the same world model);
- :class:`PixelCompareConfig`: ``mbdpo-dmo compare`` (all three over seeds).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from ..config import UserError, at_least, device_available, existing_path, one_of, require, work_dir_usable
from ..trainers.config import ModelOverrides

__all__ = [
    "FORWARD_MODELS",
    "DMOTrainConfig",
    "FORWARDS",
    "REWARD_KINDS",
    "COMPARED",
    "OBSERVATIONS",
    "PlayDataConfig",
    "WorldModelTrainConfig",
    "RewardTrainConfig",
    "PixelDMOConfig",
    "PPOConfig",
    "PixelCompareConfig",
    "register_dmo_configs",
]

FORWARD_MODELS = ("sim", "learned")  # mbdpo-dmo train forward_model=: the simulator | a learned observation-space MLP
FORWARDS = ("diffusion", "local")  # mbdpo-dmo policy forward=: DMO | the "No Diffusion" ablation
# mbdpo-dmo reward kind=: Bradley-Terry energy on frames | the real reward (ablation) | a dense shaped progress reward
REWARD_KINDS = ("energy", "env", "dense")
OBSERVATIONS = ("pixels", "state")  # obs=: the world model's observations: frames (the GPU-scale path) | Push-T states
COMPARED = ("dmo", "no_diffusion", "ppo")  # mbdpo-dmo compare algos=


def _common_rules(cfg) -> None:
    device_available(cfg.device)
    work_dir_usable(cfg.work_dir)
    at_least(cfg, 1, "threads")


def _data_error(message: str):
    from .play_data import PlayDatasetError

    return PlayDatasetError(message)


def _offline_training_rules(cfg, command: str) -> None:
    """The rules the two offline trainings (world model, reward) share."""
    if not cfg.data:
        raise _data_error(f"mbdpo-dmo {command} needs data=<play dataset folder>; write one with mbdpo-dmo dataset out=<dir> episodes=200.")
    if not Path(cfg.data).is_dir():
        raise _data_error(f"No play dataset at {cfg.data}: write one with mbdpo-dmo dataset out={cfg.data} episodes=200.")
    _common_rules(cfg)
    at_least(cfg, 1, "updates", "batch_size", "eval_freq", "checkpoint_freq", "held_out")
    at_least(cfg, 0, "warmup", "weight_decay", "grad_clip")
    at_least(cfg, 16, "image_size")
    require(cfg.lr > 0, f"lr must be > 0, got {cfg.lr}.")


def _obs_rules(cfg) -> None:
    one_of(cfg, "obs", OBSERVATIONS)
    require(
        cfg.obs == "pixels" or cfg.image_size is None,
        f"image_size sizes frames: with obs=state there are none (drop image_size={cfg.image_size}).",
    )


def _policy_training_rules(cfg, command: str) -> None:
    """The rules the two policy trainings in the world model (DMO, PPO) share."""
    hint = "the world model checkpoint (mbdpo-dmo world_model), the reward checkpoint (mbdpo-dmo reward) and the play dataset"
    missing = [name for name in ("world_model", "reward", "data") if not getattr(cfg, name)]
    if missing:
        raise _data_error(f"mbdpo-dmo {command} needs {', '.join(f'{m}=<...>' for m in missing)}: {hint}.")
    existing_path(
        cfg.world_model, "world_model", "a world model checkpoint (mbdpo-dmo world_model writes <work_dir>/checkpoints/latest.pt)"
    )
    existing_path(cfg.reward, "reward", "a reward checkpoint (mbdpo-dmo reward writes <work_dir>/checkpoints/latest.pt)")
    existing_path(cfg.data, "data", "the play dataset folder", folder=True)
    _common_rules(cfg)
    at_least(cfg, 1, "iterations", "num_envs", "episode_steps", "eval_freq", "eval_episodes", "eval_steps", "checkpoint_freq")


@dataclass
class DMOTrainConfig:
    """``mbdpo-dmo train``: DMO-SAPO on a task, first-order policy optimisation through coupled global and local
    world models (:class:`~torchrl_mbdpo.dmo.loss.DMOLoss`, :mod:`torchrl_mbdpo.dmo.trainer`). ``steps`` counts
    agent steps of the real env; ``batch_size`` is the replay batch of the local- and learned-model updates."""

    task: str = "cartpole-swingup"  # a task with state observations (DMControl, gym:<id>, ...)
    steps: int = 100_000  # agent steps of the real env (the last iteration may overshoot by < horizon x num_envs)
    seed: int = 1  # seeds every random stream of the run (torch, envs, evaluations)
    forward_model: str = "sim"  # sim: the real (batched) simulator is the global model | learned: a learned observation-space model
    decoupled: bool = True  # false: the "no decoupling" ablation (the local latent model also makes the forward pass)
    horizon: int = 16  # H: steps of each first-order rollout (SAPO/SHAC-like short horizon)
    # parallel rollouts (the batched env; also the learned global model's batch): one actor step per num_envs x horizon real
    # steps. 4 (64 real steps per actor step) solved cartpole-swingup by 300k agent steps, 16 by 800k (docs/results.md)
    num_envs: int = 4
    discount: Optional[float] = None  # default: the task's (TD-MPC2 heuristic from the episode length)
    lmbda: float = 0.95  # lambda of the critic's soft TD(lambda) targets
    alpha_init: float = 0.1  # initial entropy temperature
    target_entropy: Optional[float] = None  # default: -action_dim
    log_std_min: float = -5.0  # bounds of the actor's log-std (the initial policy's std is about exp(-1.5))
    log_std_max: float = 2.0  # upper bound of the actor's log-std
    actor_lr: float = 2e-3  # Adam learning rate of the actor
    critic_lr: float = 5e-4  # Adam learning rate of the critic
    alpha_lr: float = 5e-3  # Adam learning rate of the entropy temperature
    local_model_lr: float = 3e-4  # Adam learning rate of the local latent model
    tau: float = 0.2  # Polyak rate of the target critic, once per iteration
    grad_clip_norm: float = 1.0  # actor and critic gradients (SHAC/SAPO's 1.0)
    model_grad_clip_norm: float = 20.0  # local- and learned-model gradients
    critic_updates: int = 8  # critic steps per iteration (full rollout batch)
    local_model_updates: int = 8  # local-model steps per iteration on replay batches (fine-tuning near the current policy)
    consistency_coef: float = 20.0  # local model: latent consistency term
    reward_coef: float = 0.1  # local model: reward cross-entropy term
    seed_steps: int = 4096  # random-action env steps at the start (data to pre-train the local model)
    pretrain_updates: int = 1000  # local-model (and learned-model) steps after the seed phase
    batch_size: int = 256  # replay batch of the local- and learned-model updates
    buffer_size: int = 1_000_000  # replay capacity (single transitions, at most steps)
    learned_hidden: int = 256  # forward_model=learned: width of the MLP (obs, action) -> (delta obs, reward)
    learned_updates: int = 16  # forward_model=learned: model steps per iteration
    collect_steps: Optional[int] = None  # forward_model=learned: real steps per env and iteration (default: horizon)
    learned_lr: float = 1e-3  # forward_model=learned: Adam learning rate of the learned global model
    # forward_model=learned: episodes start from any replay observation (replay) | from real initial observations (start)
    learned_reset: str = "replay"
    model_size: Any = 5  # size of the local latent model: 1, 5, 19, 48, 317 (the world model table's)
    model: ModelOverrides = field(default_factory=ModelOverrides)  # architecture overrides of the local model
    episodic: Optional[bool] = None  # default: from the task
    device: str = "cpu"  # cpu | cuda | cuda:<i>: where the networks run (envs stay on the CPU)
    threads: Optional[int] = None  # torch CPU threads; default: torch's
    eval_freq: int = 10_000  # agent steps between evaluations (an evaluation also runs at step 0)
    eval_episodes: int = 10  # episodes per evaluation (the deterministic policy)
    checkpoint_freq: int = 10_000  # agent steps between checkpoints (and one at the end)
    resume: bool = False  # continue the run in work_dir from its last checkpoint
    max_nonfinite: int = 10  # stop (with a checkpoint) after this many non-finite actor updates in a row
    work_dir: Optional[str] = None  # default: runs/dmo/<task>/seed<seed>
    logger: str = "csv"  # csv | tensorboard | wandb (all scalars; eval.csv is always written)
    progress: bool = True  # progress bar (tqdm)

    def validate(self) -> None:
        from ..envs.factory import task_spec
        from ..modules.world_model import resolve_model_size

        one_of(self, "forward_model", FORWARD_MODELS)
        one_of(self, "learned_reset", ("replay", "start"))
        one_of(self, "logger", ("csv", "tensorboard", "wandb"))
        at_least(self, 1, "steps", "horizon", "num_envs", "learned_hidden", "buffer_size", "collect_steps", "batch_size")
        at_least(self, 1, "eval_freq", "eval_episodes", "checkpoint_freq", "max_nonfinite", "threads")
        at_least(self, 0, "critic_updates", "local_model_updates", "seed_steps", "pretrain_updates", "learned_updates")
        at_least(self, 0, "consistency_coef", "reward_coef")
        names = ("actor_lr", "critic_lr", "alpha_lr", "local_model_lr", "learned_lr", "grad_clip_norm", "model_grad_clip_norm")
        for name in names:
            require(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}.")
        require(0 <= self.tau <= 1, f"tau must lie in [0, 1], got {self.tau}.")
        require(0 <= self.lmbda <= 1, f"lmbda must lie in [0, 1], got {self.lmbda}.")
        require(self.discount is None or 0 < self.discount <= 1, f"discount must lie in (0, 1], got {self.discount}.")
        require(self.log_std_min < self.log_std_max, f"log_std_min must be < log_std_max, got {self.log_std_min}, {self.log_std_max}.")
        if self.collect_steps is not None and self.forward_model != "learned":
            raise UserError(
                "collect_steps applies to forward_model=learned: with the simulator as the global model, "
                "every rollout step is a real env step (set horizon instead)."
            )
        resolve_model_size(self.model_size)
        _common_rules(self)
        task_spec(self.task)


@dataclass
class PlayDataConfig:
    """``mbdpo-dmo dataset``: the arguments of :func:`write_play_dataset`."""

    out: str = "data/pusht-play"  # a new (or empty) folder
    episodes: int = 200  # episodes to write
    image_size: int = 64  # square frames of this many pixels
    episode_length: int = 100  # steps per episode (those that succeed end earlier)
    scripted_fraction: float = 0.5  # share of noisy scripted-pushing episodes (the rest: random walks)
    noise: float = 20.0  # std of the scripted pusher's noise (pixels)
    seed: int = 0  # seeds the behaviours and the env
    pixels: bool = True  # false: states only, no frame rendered (the state pipeline's data; about 10x faster)
    progress: bool = True  # progress bar

    def validate(self) -> None:
        at_least(self, 1, "episodes", "episode_length")
        at_least(self, 16, "image_size")
        require(0.0 <= self.scripted_fraction <= 1.0, f"scripted_fraction must lie in [0, 1], got {self.scripted_fraction}.")
        at_least(self, 0, "noise")
        work_dir_usable(self.out, "out")
        out = Path(self.out)
        require(
            not (out.is_dir() and any(out.iterdir())),
            f"{out} is not empty; choose a new folder for the play dataset (nothing was overwritten).",
        )


@dataclass
class WorldModelTrainConfig:
    """``mbdpo-dmo world_model`` (defaults sized for a CPU: 64x64 frames, a 0.6M-parameter U-Net; ``obs=state``: an MLP
    denoiser over Push-T states, :mod:`~torchrl_mbdpo.dmo.state_model`)."""

    data: Optional[str] = None  # the play dataset folder (mbdpo-dmo dataset out=...)
    work_dir: Optional[str] = None  # default: runs/dmo_world_model/<dataset folder name> (obs=state: <name>-state)
    obs: str = "pixels"  # pixels: next-frame U-Net | state: next-state MLP (the dataset's states; a states-only dataset needs it)
    image_size: Optional[int] = None  # default: the dataset's; another size than the dataset's is an error
    context: int = 4  # k: frames (states) and actions the next one is conditioned on
    channels: List[int] = field(default_factory=lambda: [16, 32, 64])  # U-Net channels per resolution level (each halves the resolution)
    layers_per_block: int = 1  # residual blocks per level
    attention: bool = False  # a self-attention layer in the middle block
    norm_groups: int = 8  # GroupNorm groups (divide every channel count)
    hidden: int = 256  # obs=state: width of the denoiser MLP
    layers: int = 3  # obs=state: hidden layers of the denoiser MLP
    num_steps: int = 3  # denoising steps when sampling (DMO and DIAMOND: 3)
    updates: int = 2000  # AdamW updates in all (resume=true with more to train on)
    batch_size: Optional[int] = None  # training windows per update; default: 16 (pixels) | 256 (state)
    lr: float = 3e-4  # AdamW learning rate
    weight_decay: float = 1e-2  # AdamW weight decay
    warmup: int = 100  # updates of linear learning-rate warm-up
    grad_clip: float = 1.0  # gradient norm clip (0: none)
    held_out: int = 10  # episodes held out of training (the last ones)
    held_out_windows: int = 64  # fixed held-out windows of the held-out loss
    eval_freq: int = 100  # updates between loss.csv rows (held-out loss)
    checkpoint_freq: int = 500  # updates between checkpoints (and one at the end)
    frames_every: int = 5  # frames.png: a frame every this many steps
    frames_steps: int = 50  # frames.png: open-loop steps shown
    seed: int = 0  # seeds the model, the batches and the noise
    device: str = "cpu"  # cpu | cuda
    threads: Optional[int] = None  # torch CPU threads (default: torch's)
    resume: bool = False  # continue the run in work_dir
    progress: bool = True  # progress bar

    def __post_init__(self):
        if self.batch_size is None:
            self.batch_size = 256 if self.obs == "state" else 16

    def diffusion_config(self, image_size: int, action_dim: int = 2):
        """The :class:`~torchrl_mbdpo.dmo.diffusion.DiffusionConfig` (``obs=state``:
        :class:`~torchrl_mbdpo.dmo.state_model.StateDiffusionConfig`) these settings ask for."""
        from .diffusion import DiffusionConfig

        if self.obs == "state":
            from .state_model import StateDiffusionConfig

            return StateDiffusionConfig(
                context=self.context, action_dim=action_dim, hidden=self.hidden, layers=self.layers, num_steps=self.num_steps
            )
        return DiffusionConfig(
            image_size=image_size,
            context=self.context,
            action_dim=action_dim,
            channels=tuple(self.channels),
            layers_per_block=self.layers_per_block,
            attention=self.attention,
            norm_groups=self.norm_groups,
            num_steps=self.num_steps,
        )

    def validate(self) -> None:
        _offline_training_rules(self, "world_model")
        _obs_rules(self)
        at_least(self, 1, "context", "layers_per_block", "norm_groups", "num_steps", "held_out_windows", "frames_every", "hidden", "layers")
        at_least(self, 0, "frames_steps")
        require(len(self.channels) > 0 and min(self.channels) >= 1, f"channels must be positive, got {list(self.channels)}.")


@dataclass
class RewardTrainConfig:
    """``mbdpo-dmo reward`` (CPU-sized defaults)."""

    data: Optional[str] = None  # the play dataset folder (mbdpo-dmo dataset out=...)
    work_dir: Optional[str] = None  # default: runs/dmo_reward/<dataset folder name> (obs=state: <name>-state)
    # energy (Bradley-Terry on frames or states) | env (regress the real env's reward: the ablation) | dense (regress
    # envs.pusht.pusht_dense_reward of the recorded states: the block's distance to the goal, the agent's to the block)
    kind: str = "energy"
    obs: str = "pixels"  # pixels: a CNN on frames | state: an MLP on Push-T states (the world model's obs)
    image_size: Optional[int] = None  # default: the dataset's
    channels: List[int] = field(default_factory=lambda: [16, 32, 64])  # CNN channels per level (obs=state: one MLP layer each)
    hidden: int = 128  # width of the MLP head
    updates: int = 1000  # AdamW updates in all
    batch_size: int = 32  # frame pairs (energy) or frames (env) per update
    lr: float = 3e-4  # AdamW learning rate
    weight_decay: float = 1e-2  # AdamW weight decay
    warmup: int = 50  # updates of linear learning-rate warm-up
    grad_clip: float = 1.0  # gradient norm clip (0: none)
    held_out: int = 10  # episodes held out of training (the last ones)
    held_out_pairs: int = 256  # fixed held-out pairs of the pair accuracy
    eval_freq: int = 100  # updates between loss.csv rows
    checkpoint_freq: int = 500  # updates between checkpoints (and one at the end)
    seed: int = 0  # seeds the model and the batches
    device: str = "cpu"  # cpu | cuda
    threads: Optional[int] = None  # torch CPU threads (default: torch's)
    resume: bool = False  # continue the run in work_dir
    progress: bool = True  # progress bar

    def validate(self) -> None:
        _offline_training_rules(self, "reward")
        _obs_rules(self)
        one_of(self, "kind", REWARD_KINDS)
        at_least(self, 2, "held_out_pairs")
        at_least(self, 1, "hidden")
        require(len(self.channels) > 0 and min(self.channels) >= 1, f"channels must be positive, got {list(self.channels)}.")


@dataclass
class PixelDMOConfig:
    """``mbdpo-dmo policy`` (CPU-sized defaults)."""

    world_model: Optional[str] = None  # the diffusion world model checkpoint (mbdpo-dmo world_model)
    reward: Optional[str] = None  # the reward checkpoint (mbdpo-dmo reward kind=energy|env): the reward switch
    data: Optional[str] = None  # the play dataset (start contexts, local-model pre-training)
    work_dir: Optional[str] = None  # default: runs/dmo_pixel/<forward>/seed<seed>
    forward: str = "diffusion"  # diffusion: DMO | local: the "No Diffusion" ablation
    iterations: int = 200  # DMO iterations (rollout, actor and critic steps, local-model steps)
    num_envs: int = 16  # imagined episodes rolled out at once
    horizon: int = 16  # H: steps of each first-order rollout
    episode_steps: int = 32  # imagined episode length before a restart from play data
    latent_dim: int = 64  # latent size of the local pixel model
    mlp_dim: int = 128  # hidden width of its heads
    enc_dim: int = 128  # hidden width of its encoder
    discount: float = 0.98  # discount of the SAPO objective and the critic
    lmbda: float = 0.95  # lambda of the critic's soft TD(lambda) targets
    alpha_init: float = 0.1  # initial entropy temperature
    actor_lr: float = 2e-3  # Adam learning rate of the actor
    critic_lr: float = 5e-4  # Adam learning rate of the critic
    alpha_lr: float = 5e-3  # Adam learning rate of the temperature
    local_model_lr: float = 3e-4  # Adam learning rate of the local model
    tau: float = 0.2  # Polyak rate of the target critic, per iteration
    grad_clip_norm: float = 1.0  # gradient norm clip of the actor and critic
    critic_updates: int = 8  # critic steps per iteration
    local_model_updates: int = 2  # play-data batches per iteration (besides the rollout's transitions)
    pretrain_updates: int = 500  # local-model updates on play data before the first iteration
    batch_size: int = 64  # play-data transitions per local-model batch
    eval_freq: int = 25  # iterations
    eval_episodes: int = 10  # real Push-T episodes per evaluation
    eval_steps: int = 300  # real env steps per evaluation episode (Push-T's 300)
    checkpoint_freq: int = 25  # iterations between checkpoints (and one at the end)
    reward_normalization: bool = True  # standardise the learned reward with its mean/std on play-data transitions
    seed: int = 0  # seeds the networks, the rollouts and the evaluations
    device: str = "cpu"  # cpu | cuda
    threads: Optional[int] = None  # torch CPU threads (default: torch's)
    resume: bool = False  # continue the run in work_dir
    progress: bool = True  # progress bar

    def validate(self) -> None:
        _policy_training_rules(self, "policy")
        require(
            self.forward in FORWARDS,
            f"forward must be one of {', '.join(FORWARDS)} (local: the 'No Diffusion' ablation), got {self.forward!r}.",
        )
        at_least(self, 1, "horizon", "latent_dim", "mlp_dim", "enc_dim", "batch_size")
        at_least(self, 0, "critic_updates", "local_model_updates", "pretrain_updates")
        for name in ("actor_lr", "critic_lr", "alpha_lr", "local_model_lr", "grad_clip_norm"):
            require(getattr(self, name) > 0, f"{name} must be > 0, got {getattr(self, name)}.")
        require(
            0 < self.discount <= 1 and 0 <= self.lmbda <= 1,
            f"need 0 < discount <= 1 and 0 <= lmbda <= 1, got {self.discount}, {self.lmbda}.",
        )


@dataclass
class PPOConfig:
    """``mbdpo-dmo ppo`` (CPU-sized defaults)."""

    world_model: Optional[str] = None  # the diffusion world model checkpoint (mbdpo-dmo world_model)
    reward: Optional[str] = None  # the reward checkpoint (mbdpo-dmo reward)
    data: Optional[str] = None  # the play dataset (start contexts of the imagined episodes)
    work_dir: Optional[str] = None  # default: runs/dmo_pixel/ppo/seed<seed>
    iterations: int = 100  # PPO iterations (a collector batch each)
    num_envs: int = 16  # imagined episodes collected at once
    rollout_steps: int = 16  # per env and iteration: frames_per_batch = num_envs * rollout_steps
    episode_steps: int = 32  # imagined episode length before a restart from play data
    hidden: int = 256  # width of the conv trunk's MLP
    lr: float = 3e-4  # Adam learning rate
    gamma: float = 0.98  # discount
    lmbda: float = 0.95  # GAE lambda
    clip_epsilon: float = 0.2  # PPO's ratio clip
    entropy_coef: float = 1e-3  # entropy bonus
    critic_coef: float = 0.5  # value loss weight
    ppo_epochs: int = 4  # passes over each batch
    minibatch_size: int = 64  # transitions per PPO minibatch
    grad_clip_norm: float = 0.5  # gradient norm clip
    reward_normalization: bool = True  # standardise the learned reward with its mean/std on play-data transitions
    eval_freq: int = 25  # iterations between real-env evaluations
    eval_episodes: int = 10  # real Push-T episodes per evaluation
    eval_steps: int = 300  # real env steps per evaluation episode (Push-T's 300)
    checkpoint_freq: int = 25  # iterations between checkpoints (and one at the end)
    seed: int = 0  # seeds the networks, the collection and the evaluations
    device: str = "cpu"  # cpu | cuda
    threads: Optional[int] = None  # torch CPU threads (default: torch's)
    resume: bool = False  # continue the run in work_dir
    progress: bool = True  # progress bar

    def validate(self) -> None:
        _policy_training_rules(self, "ppo")
        at_least(self, 1, "rollout_steps", "hidden", "ppo_epochs", "minibatch_size")
        require(self.lr > 0 and self.grad_clip_norm > 0, f"lr and grad_clip_norm must be > 0, got {self.lr}, {self.grad_clip_norm}.")
        require(0 < self.clip_epsilon < 1, f"clip_epsilon must lie in (0, 1), got {self.clip_epsilon}.")
        require(0 < self.gamma <= 1 and 0 <= self.lmbda <= 1, f"need 0 < gamma <= 1 and 0 <= lmbda <= 1, got {self.gamma}, {self.lmbda}.")


@dataclass
class PixelCompareConfig:
    world_model: Optional[str] = None  # the diffusion world model checkpoint every run trains in
    reward: Optional[str] = None  # the reward checkpoint
    data: Optional[str] = None  # the play dataset
    algos: List[str] = field(default_factory=lambda: list(COMPARED))  # dmo | no_diffusion | ppo
    seeds: List[int] = field(default_factory=lambda: [0, 1])  # seeds of every algo
    root: str = "runs/dmo_pixel_compare"  # runs live in <root>/<algo>/seed<seed>
    out_dir: Optional[str] = None  # comparison.csv, summary.csv, comparison.png (default: root)
    run: bool = True  # false: only read the runs that exist
    dmo: PixelDMOConfig = field(default_factory=PixelDMOConfig)  # settings of the DMO and No Diffusion runs: dmo.iterations=50 ...
    ppo: PPOConfig = field(default_factory=PPOConfig)  # settings of the PPO runs: ppo.iterations=50 ...
    threads: Optional[int] = None  # torch CPU threads of every run
    progress: bool = True  # progress bars

    def __post_init__(self):  # settings given as plain dicts (Python callers): the typed schemas
        if isinstance(self.dmo, dict):
            self.dmo = PixelDMOConfig(**self.dmo)
        if isinstance(self.ppo, dict):
            self.ppo = PPOConfig(**self.ppo)

    def validate(self) -> None:
        unknown = sorted(set(self.algos) - set(COMPARED))
        require(not unknown, f"Unknown algos {unknown}; choose from {', '.join(COMPARED)}.")
        require(len(self.seeds) > 0 and len(self.algos) > 0, "algos and seeds must each name at least one.")
        work_dir_usable(self.root, "root")
        work_dir_usable(self.out_dir, "out_dir")
        if self.run:
            for algo in self.algos:
                self.run_config(algo, self.seeds[0], Path(self.root) / algo).validate()

    def run_config(self, algo: str, seed: int, work_dir):
        """The settings of one run: ``dmo.*`` (DMO and No Diffusion) or ``ppo.*``, with this comparison's inputs."""
        common = dict(
            world_model=self.world_model,
            reward=self.reward,
            data=self.data,
            seed=seed,
            work_dir=str(work_dir),
            threads=self.threads,
            progress=self.progress,
        )
        if algo == "ppo":
            return dataclasses.replace(self.ppo, **common)
        return dataclasses.replace(self.dmo, **common, forward="diffusion" if algo == "dmo" else "local")


def register_dmo_configs() -> None:
    """Register the ``mbdpo-dmo`` schemas with Hydra's ConfigStore (``mbdpo_dmo_<command>_schema``)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, node in (
        ("train", DMOTrainConfig),
        ("dataset", PlayDataConfig),
        ("world_model", WorldModelTrainConfig),
        ("reward", RewardTrainConfig),
        ("policy", PixelDMOConfig),
        ("ppo", PPOConfig),
        ("compare", PixelCompareConfig),
    ):
        store.store(name=f"mbdpo_dmo_{name}_schema", node=node)
