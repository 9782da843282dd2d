"""The PPO baseline of DMO's pixel experiments (``mbdpo-dmo ppo``): TorchRL's ``ClipPPOLoss`` with ``GAE`` on image
observations, trained inside the same learned world model as DMO (no simulator in the loop).

A TorchRL ``Collector`` rolls the stochastic policy out in :class:`~torchrl_mbdpo.dmo.diffusion_env.DiffusionWorldModelEnv`
(``num_envs`` imagined episodes of ``episode_steps`` steps from play-data contexts; the learned reward, standardised
on play data as for DMO): ``rollout_steps`` steps per env and iteration. GAE advantages, then ``ppo_epochs`` passes of
minibatch updates over the batch. Actor: a ``ProbabilisticActor`` with a ``TanhNormal`` on a conv net over the last
3 frames (``"observation"``, uint8 ``(9, H, W)``, the frames DMO's local model reads); critic: a ``ValueOperator``
on its own conv net. Evaluation on the real Push-T env with the deterministic policy, as DMO
(:func:`~torchrl_mbdpo.dmo.policy_training.evaluate_on_pusht`, same seeds); ``eval.csv`` has DMO's columns, so the
comparison reads both alike. Checkpoints and ``resume=true`` as DMO's (the imagined episodes restart).
"""

from __future__ import annotations

import signal
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import torch
from tensordict import TensorDict
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn
from tqdm.auto import tqdm

from .play_data import load_play_dataset
from .policy_training import EVAL_FIELDS, OBSERVATION_FRAMES, evaluate_on_pusht

__all__ = ["PPOConfig", "PPOTrainer", "train_ppo", "play_reward_stats"]

CHECKPOINT_KIND = "dmo_pixel_ppo"


@dataclass
class PPOConfig:
    """``mbdpo-dmo ppo`` (CPU-sized defaults)."""

    world_model: Optional[str] = None
    reward: Optional[str] = None
    data: Optional[str] = None
    work_dir: Optional[str] = None  # default: runs/dmo_pixel/ppo/seed<seed>
    iterations: int = 100
    num_envs: int = 16
    rollout_steps: int = 16  # per env and iteration: frames_per_batch = num_envs * rollout_steps
    episode_steps: int = 32
    hidden: int = 256
    lr: float = 3e-4
    gamma: float = 0.98
    lmbda: float = 0.95
    clip_epsilon: float = 0.2
    entropy_coef: float = 1e-3
    critic_coef: float = 0.5
    ppo_epochs: int = 4
    minibatch_size: int = 64
    grad_clip_norm: float = 0.5
    reward_normalization: bool = True
    eval_freq: int = 25
    eval_episodes: int = 10
    eval_steps: int = 300
    checkpoint_freq: int = 25
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = None
    resume: bool = False
    progress: bool = True


class _ConvTrunk(nn.Module):
    """Nature-DQN convs on uint8 frames ``(*B, C, H, W)`` (``/255 - 0.5``), then a ``hidden`` ReLU layer."""

    def __init__(self, in_channels: int, image_size: int, hidden: int):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            width = self.convs(torch.zeros(1, in_channels, image_size, image_size)).shape[-1]
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-3]
        y = self.head(self.convs(x.reshape(-1, *x.shape[-3:]).float() / 255.0 - 0.5))
        return y.reshape(*lead, -1)


def _conv_trunk(in_channels: int, image_size: int, hidden: int) -> nn.Module:
    return _ConvTrunk(in_channels, image_size, hidden)


def play_reward_stats(reward_fn, dataset, n: int, generator: torch.Generator) -> tuple[float, float]:
    """Mean and std of ``reward_fn`` over ``n`` play-data transitions (start frame: the episode's first)."""
    rows = dataset.transition_rows()
    rows = rows[torch.randint(len(rows), (n,), generator=generator)]
    start = dataset.rows["pixels"][dataset.episode_start[dataset.rows["episode"][rows]]]
    with torch.no_grad():
        r = reward_fn(TensorDict({"pixels": dataset.rows["pixels"][rows + 1], "start_pixels": start}, batch_size=[n]))
    return float(r.mean()), float(r.std().clamp_min(1e-6))


class PPOTrainer:
    """Runs the protocol of the module docstring; :meth:`train` returns the last ``eval.csv`` row."""

    def __init__(self, cfg: PPOConfig):
        from torchrl.collectors import Collector
        from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
        from torchrl.objectives import ClipPPOLoss
        from torchrl.objectives.value import GAE

        from ..trainers.checkpoint import CheckpointError, load_latest
        from ..trainers.evaluation import CsvLog
        from .diffusion_env import DiffusionWorldModelEnv, play_data_start_sampler
        from .reward import load_frame_reward
        from .world_model_training import load_world_model

        self.cfg = cfg
        self._check(cfg)
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        torch.manual_seed(cfg.seed)
        self.world_model, _ = load_world_model(cfg.world_model)
        size, k = self.world_model.cfg.image_size, self.world_model.cfg.context
        if k < OBSERVATION_FRAMES:
            raise ValueError(
                f"PPO reads the last {OBSERVATION_FRAMES} frames: the world model's context must be >= {OBSERVATION_FRAMES}, "
                f"{cfg.world_model} has {k}."
            )
        self.dataset = load_play_dataset(cfg.data, image_size=size)
        self.reward_fn, reward_state = load_frame_reward(cfg.reward, image_size=size)
        self.reward_kind = reward_state["model_config"]["kind"]
        if cfg.reward_normalization:
            self.reward_fn.shift, self.reward_fn.scale = play_reward_stats(
                self.reward_fn, self.dataset, 1024, torch.Generator().manual_seed(cfg.seed + 1)
            )
        self.sampler = play_data_start_sampler(self.dataset, k, generator=torch.Generator().manual_seed(cfg.seed + 3))
        self.env = DiffusionWorldModelEnv(
            self.world_model,
            self.sampler,
            batch_size=cfg.num_envs,
            max_episode_steps=cfg.episode_steps,
            reward_fn=self.reward_fn,
            observation_frames=OBSERVATION_FRAMES,
            device=cfg.device,
        )
        A = self.world_model.cfg.action_dim
        trunk = _conv_trunk(3 * OBSERVATION_FRAMES, size, cfg.hidden)
        actor_net = nn.Sequential(trunk, nn.Linear(cfg.hidden, 2 * A), NormalParamExtractor())
        self.actor = ProbabilisticActor(
            TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"],
            spec=self.env.action_spec,
            distribution_class=TanhNormal,
            distribution_kwargs={"low": -1.0, "high": 1.0},
            return_log_prob=True,
        ).to(cfg.device)
        critic_net = nn.Sequential(_conv_trunk(3 * OBSERVATION_FRAMES, size, cfg.hidden), nn.Linear(cfg.hidden, 1))
        self.critic = ValueOperator(critic_net, in_keys=["observation"]).to(cfg.device)
        self.advantage = GAE(gamma=cfg.gamma, lmbda=cfg.lmbda, value_network=self.critic, average_gae=True)
        self.loss = ClipPPOLoss(
            self.actor,
            self.critic,
            clip_epsilon=cfg.clip_epsilon,
            entropy_coeff=cfg.entropy_coef,
            critic_coeff=cfg.critic_coef,
            normalize_advantage=True,
        )
        self.optimizer = torch.optim.Adam(self.loss.parameters(), lr=cfg.lr)
        self.frames_per_batch = cfg.num_envs * cfg.rollout_steps
        self.collector = Collector(
            self.env,
            self.actor,
            frames_per_batch=self.frames_per_batch,
            total_frames=-1,
            device=cfg.device,
            auto_register_policy_transforms=False,
        )
        self._batches = iter(self.collector)
        self.generator = torch.Generator().manual_seed(cfg.seed + 2)
        self.work_dir = Path(cfg.work_dir or Path("runs") / "dmo_pixel" / "ppo" / f"seed{cfg.seed}")
        self.checkpoint_path = self.work_dir / "checkpoints" / "latest.pt"
        self.iteration = self.world_model_samples = 0
        self.seconds = 0.0
        self.log = CsvLog(self.work_dir / "eval.csv", EVAL_FIELDS)
        self.last_eval, self.last_metrics = {}, {}
        self.stop_message, self._signal = None, None
        if self.checkpoint_path.exists():
            if not cfg.resume:
                raise CheckpointError(f"{self.work_dir} already holds a PPO run: pass resume=true to continue it, or another work_dir.")
            state, path = load_latest(self.checkpoint_path.parent)
            self._restore(state, path)
        elif cfg.resume:
            raise CheckpointError(f"resume=true, but there is no checkpoint at {self.checkpoint_path} to continue.")

    @staticmethod
    def _check(cfg: PPOConfig) -> None:
        from .play_data import PlayDatasetError

        missing = [name for name in ("world_model", "reward", "data") if not getattr(cfg, name)]
        if missing:
            raise PlayDatasetError(
                f"mbdpo-dmo ppo needs {', '.join(f'{m}=<...>' for m in missing)}: the world model checkpoint "
                "(mbdpo-dmo world_model), the reward checkpoint (mbdpo-dmo reward) and the play dataset."
            )
        for name in (
            "iterations",
            "num_envs",
            "rollout_steps",
            "episode_steps",
            "ppo_epochs",
            "minibatch_size",
            "eval_freq",
            "eval_episodes",
            "eval_steps",
            "checkpoint_freq",
        ):
            if getattr(cfg, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}.")

    def train_iteration(self) -> dict:
        cfg = self.cfg
        batch = next(self._batches)  # [num_envs, rollout_steps]
        self.world_model_samples += batch.numel()
        with torch.no_grad():
            self.advantage(batch)
        flat = batch.reshape(-1)
        n = flat.shape[0]
        losses = []
        for _ in range(cfg.ppo_epochs):
            order = torch.randperm(n, generator=self.generator)
            for start in range(0, n, cfg.minibatch_size):
                out = self.loss(flat[order[start : start + cfg.minibatch_size]])
                loss = out["loss_objective"] + out["loss_critic"] + out["loss_entropy"]
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.loss.parameters(), cfg.grad_clip_norm)
                self.optimizer.step()
                losses.append(loss.item())
        self.iteration += 1
        return {"loss": sum(losses) / len(losses), "rollout_reward": batch["next", "reward"].mean().item()}

    def _eval_row(self, seconds: float) -> dict:
        result = evaluate_on_pusht(
            self.actor,
            image_size=self.world_model.cfg.image_size,
            seed=self.cfg.seed,
            step=self.iteration,
            episodes=self.cfg.eval_episodes,
            steps=self.cfg.eval_steps,
            device=self.cfg.device,
        )
        row = {
            "iteration": self.iteration,
            "world_model_samples": self.world_model_samples,
            "model_steps": self.world_model_samples,
            "seconds": f"{seconds:.1f}",
            "success_rate": f"{result['success_rate']:.3f}",
            "mean_return": f"{result['mean_return']:.3f}",
            "rollout_reward": f"{self.last_metrics.get('rollout_reward', float('nan')):.4f}",
        }
        self.log.append(row)
        self.last_eval = row
        return row

    def state_dict(self, seconds: float) -> dict:
        return {
            "kind": CHECKPOINT_KIND,
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "iteration": self.iteration,
            "world_model_samples": self.world_model_samples,
            "seconds": seconds,
            "generator": self.generator.get_state(),
            "config": asdict(self.cfg),
        }

    def save(self, seconds: float) -> Path:
        from ..trainers.checkpoint import save_checkpoint

        return save_checkpoint(self.state_dict(seconds), self.checkpoint_path)

    def _restore(self, state: dict, path) -> None:
        from ..trainers.checkpoint import CheckpointError, check_compatible

        if state.get("kind") != CHECKPOINT_KIND:
            raise CheckpointError(f"{path} is not a PPO checkpoint of the pixel world model (kind={state.get('kind')!r}).")
        saved = {k: state["config"][k] for k in ("hidden", "num_envs", "rollout_steps")}
        check_compatible(saved, {k: getattr(self.cfg, k) for k in saved}, "PPO setting", path)
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.iteration, self.world_model_samples = state["iteration"], state["world_model_samples"]
        self.seconds = float(state["seconds"])
        self.generator.set_state(state["generator"])
        self.log.truncate(self.iteration)
        rows = self.log.rows()
        self.last_eval = rows[-1] if rows else {}

    def _handle(self, signum, frame):
        self._signal = signum

    def train(self) -> dict:
        cfg = self.cfg
        handlers = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        start = time.perf_counter()
        clock = lambda: self.seconds + time.perf_counter() - start  # noqa: E731
        try:
            if self.iteration == 0 and not self.log.rows():
                self._eval_row(clock())
            with tqdm(total=cfg.iterations, initial=min(self.iteration, cfg.iterations), desc="ppo", disable=not cfg.progress) as bar:
                while self.iteration < cfg.iterations:
                    if self._signal is not None:
                        self.stop_message = f"stopped by signal {self._signal} at iteration {self.iteration}; resume with resume=true"
                        break
                    self.last_metrics = self.train_iteration()
                    bar.update()
                    bar.set_postfix(loss=f"{self.last_metrics['loss']:.3g}", success=self.last_eval.get("success_rate", ""))
                    if self.iteration % cfg.eval_freq == 0 or self.iteration == cfg.iterations:
                        self._eval_row(clock())
                    if self.iteration % cfg.checkpoint_freq == 0 and self.iteration < cfg.iterations:
                        self.save(clock())
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        self.save(clock())
        self.collector.shutdown()
        return self.last_eval


def train_ppo(cfg: PPOConfig) -> PPOTrainer:
    trainer = PPOTrainer(cfg)
    trainer.train()
    return trainer
