"""Offline training of the global diffusion world model on a play dataset (``mbdpo-dmo world_model``).

``updates`` AdamW steps (linear warm-up, gradient clipping) of :meth:`DiffusionWorldModel.loss` on batches of
``batch_size`` windows drawn from the training episodes; the last ``held_out`` episodes are never trained on.
Every ``eval_freq`` updates (and at the end) the loss on ``held_out_windows`` fixed held-out windows, with fixed
noise, is written to ``<work_dir>/loss.csv`` beside the mean training loss since the previous row, and plotted in
``loss.png``. ``<work_dir>/checkpoints/latest.pt`` (the library's checksummed, atomic checkpoint files: model,
optimiser, sampling generator, update count, config) is written every ``checkpoint_freq`` updates and at the
end, and beside it ``frames.png`` (and its per-step pixel MSE, ``frames.json``): the first held-out episode,
real (top) and predicted open-loop from its first frame and its actions (bottom), at steps 0, ``frames_every``,
``2 frames_every``, ... up to ``frames_steps``.

Resume: ``resume=true`` continues a run from its checkpoint (architecture and data checked; ``loss.csv`` cut
back to it) and ends bitwise equal to an uninterrupted run on CPU; ``updates`` may be raised to train on.
SIGTERM/SIGINT finish the current update, write the checkpoint and exit with 128 + signal.
"""
from __future__ import annotations

import json
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import torch
from tqdm.auto import tqdm

from .diffusion import ArchitectureError, DiffusionConfig, DiffusionWorldModel, check_architecture
from .play_data import PlayDatasetError, load_play_dataset

__all__ = ["WorldModelTrainConfig", "WorldModelTrainer", "train_world_model", "load_world_model", "write_frames_picture"]

CHECKPOINT_KIND = "dmo_diffusion_world_model"
LOSS_FIELDS = ["update", "train_loss", "held_out_loss", "seconds"]


@dataclass
class WorldModelTrainConfig:
    """``mbdpo-dmo world_model`` (defaults sized for a CPU: 64x64 frames, a 0.6M-parameter U-Net)."""

    data: Optional[str] = None  # the play dataset folder (mbdpo-dmo dataset out=...)
    work_dir: Optional[str] = None  # default: runs/dmo_world_model/<dataset folder name>
    image_size: Optional[int] = None  # default: the dataset's; another size than the dataset's is an error
    context: int = 4  # k: frames and actions the next frame is conditioned on
    channels: List[int] = field(default_factory=lambda: [16, 32, 64])
    layers_per_block: int = 1
    attention: bool = False
    norm_groups: int = 8
    num_steps: int = 3  # denoising steps when sampling (DMO and DIAMOND: 3)
    updates: int = 2000
    batch_size: int = 16
    lr: float = 3e-4
    weight_decay: float = 1e-2
    warmup: int = 100  # updates of linear learning-rate warm-up
    grad_clip: float = 1.0
    held_out: int = 10  # episodes held out of training (the last ones)
    held_out_windows: int = 64
    eval_freq: int = 100
    checkpoint_freq: int = 500
    frames_every: int = 5
    frames_steps: int = 50
    seed: int = 0
    device: str = "cpu"
    threads: Optional[int] = None  # torch CPU threads (default: torch's)
    resume: bool = False
    progress: bool = True

    def diffusion_config(self, image_size: int, action_dim: int = 2) -> DiffusionConfig:
        return DiffusionConfig(image_size=image_size, context=self.context, action_dim=action_dim, channels=tuple(self.channels),
                               layers_per_block=self.layers_per_block, attention=self.attention, norm_groups=self.norm_groups,
                               num_steps=self.num_steps)


def _lr_factor(update: int, warmup: int) -> float:
    return min(1.0, (update + 1) / warmup) if warmup > 0 else 1.0


def write_frames_picture(model: DiffusionWorldModel, episode, path, *, every: int = 5, steps: int = 50, seed: int = 0) -> dict:
    """Real (top row) vs predicted (bottom row) frames of ``episode`` (its rows, :meth:`PlayDataset.episode`) at
    steps ``0, every, 2 every, ...`` up to ``steps`` (or the episode's end): the model imagines open-loop from
    the first frame with the episode's actions. Returns ``{"steps": [...], "mse": [...]}`` (per shown step, pixels
    in [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, A = model.cfg.context, model.cfg.action_dim
    real = episode["pixels"][:]
    T = min(int(steps), len(real) - 1)
    actions = episode["action"][:T][None].float()
    first = real[:1]
    frames = first[:, None].expand(1, k, *first.shape[1:]).clone()
    with torch.random.fork_rng(devices=[]):
        predicted = model.imagine(frames, torch.zeros(1, k, A), actions, generator=torch.Generator().manual_seed(seed))[0]
    predicted = torch.cat([first, predicted])
    shown = list(range(0, T + 1, max(1, int(every))))
    mse = [float(((real[t].float() - predicted[t].float()) / 255).pow(2).mean()) for t in shown]
    fig, axes = plt.subplots(2, len(shown), figsize=(1.3 * len(shown), 3.0), squeeze=False)
    for j, t in enumerate(shown):
        for i, (row, name) in enumerate(((real, "real"), (predicted, "predicted"))):
            ax = axes[i, j]
            ax.imshow(row[t].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(f"t={t}", fontsize=8)
            if j == 0:
                ax.set_ylabel(name, fontsize=8)
    fig.suptitle("held-out episode: real vs world model (open loop from the first frame)", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return {"steps": shown, "mse": mse}


def _plot_losses(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key, label in (("train_loss", "train (mean since last point)"), ("held_out_loss", "held-out episodes")):
        pts = [(int(r["update"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=label)
    ax.set_xlabel("update")
    ax.set_ylabel("EDM loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("diffusion world model")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class WorldModelTrainer:
    """Runs the training of the module docstring; :meth:`train` returns the last ``loss.csv`` row."""

    def __init__(self, cfg: WorldModelTrainConfig):
        from ..trainers.checkpoint import CheckpointError, load_latest
        from ..trainers.evaluation import CsvLog

        self.cfg = cfg
        self._check(cfg)
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.dataset = load_play_dataset(cfg.data, image_size=cfg.image_size)
        self.work_dir = Path(cfg.work_dir or Path("runs") / "dmo_world_model" / Path(cfg.data).name)
        self.checkpoint_path = self.work_dir / "checkpoints" / "latest.pt"
        self.model_cfg = cfg.diffusion_config(self.dataset.image_size)
        self.train_episodes, self.held_out_episodes = self.dataset.split(cfg.held_out)
        torch.manual_seed(cfg.seed)
        self.model = DiffusionWorldModel(self.model_cfg).to(cfg.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.update = 0
        self.log = CsvLog(self.work_dir / "loss.csv", LOSS_FIELDS)
        self._signal = None
        self.stop_message = None
        self.seconds = 0.0  # training time of earlier sessions (resume)
        held = self.held_out_episodes if len(self.held_out_episodes) else self.train_episodes
        self.held_out_batch = self.dataset.sample(cfg.held_out_windows, cfg.context, torch.Generator().manual_seed(cfg.seed + 1), held)
        if self.checkpoint_path.exists() or (self.work_dir / "checkpoints" / "previous.pt").exists():
            if not cfg.resume:
                raise CheckpointError(f"{self.work_dir} already holds a world model run: pass resume=true to continue it, "
                                      "or another work_dir.")
            state, path = load_latest(self.checkpoint_path.parent)
            self._restore(state, path)
        elif cfg.resume:
            raise CheckpointError(f"resume=true, but there is no checkpoint at {self.checkpoint_path} to continue.")

    @staticmethod
    def _check(cfg: WorldModelTrainConfig) -> None:
        if not cfg.data:
            raise PlayDatasetError("mbdpo-dmo world_model needs data=<play dataset folder>; write one with "
                                   "mbdpo-dmo dataset out=<dir> episodes=200")
        for name in ("updates", "batch_size", "held_out_windows", "eval_freq", "checkpoint_freq", "frames_every"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}.")
        if cfg.lr <= 0:
            raise ValueError(f"lr must be > 0, got {cfg.lr}.")

    def _restore(self, state: dict, path) -> None:
        from ..trainers.checkpoint import CheckpointError

        if state.get("kind") != CHECKPOINT_KIND:
            raise CheckpointError(f"{path} is not a diffusion world model checkpoint (kind={state.get('kind')!r}).")
        check_architecture(DiffusionConfig.from_dict(state["model_config"]), self.model_cfg, path)
        data = state.get("data", {})
        if data.get("held_out") != self.cfg.held_out or data.get("episodes") != self.dataset.info.episodes:
            raise CheckpointError(f"{path} was trained on a dataset of {data.get('episodes')} episodes with "
                                  f"held_out={data.get('held_out')}; "
                                  f"this run has {self.dataset.info.episodes} and held_out={self.cfg.held_out}: resume with the same data.")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.update = int(state["update"])
        self.seconds = float(state.get("seconds", 0.0))
        self.log.truncate(self.update)

    def state_dict(self, seconds: float | None = None) -> dict:
        """The checkpoint's content; ``seconds``: training time so far (default: that of the sessions before this one)."""
        return {"kind": CHECKPOINT_KIND, "model_config": self.model_cfg.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(), "update": self.update,
                "config": asdict(self.cfg), "seconds": self.seconds if seconds is None else seconds,
                "data": {"path": str(self.dataset.path), "episodes": self.dataset.info.episodes, "held_out": self.cfg.held_out,
                         "image_size": self.dataset.image_size}}

    def save(self, seconds: float | None = None) -> Path:
        from ..trainers.checkpoint import save_checkpoint

        return save_checkpoint(self.state_dict(seconds), self.checkpoint_path)

    @torch.no_grad()
    def held_out_loss(self) -> float:
        b = self.held_out_batch
        self.model.eval()
        loss = self.model.loss(b["frames"].to(self.cfg.device), b["actions"].to(self.cfg.device), b["target"].to(self.cfg.device),
                               generator=torch.Generator().manual_seed(self.cfg.seed + 2)).mean()
        self.model.train()
        return float(loss)

    def _handle(self, signum, frame):
        self._signal = signum

    def train(self) -> dict:
        cfg = self.cfg
        handlers = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        start, losses, last = time.perf_counter(), [], {}
        if self.update == 0:
            self.log.append({"update": 0, "held_out_loss": f"{self.held_out_loss():.6f}", "seconds": "0.0"})
        try:
            with tqdm(total=cfg.updates, initial=min(self.update, cfg.updates), desc="world model", disable=not cfg.progress) as bar:
                while self.update < cfg.updates:
                    if self._signal is not None:
                        self.stop_message = f"stopped by signal {self._signal} at update {self.update}; resume with resume=true"
                        break
                    batch = self.dataset.sample(cfg.batch_size, cfg.context, self.generator, self.train_episodes).to(cfg.device)
                    for group in self.optimizer.param_groups:
                        group["lr"] = cfg.lr * _lr_factor(self.update, cfg.warmup)
                    loss = self.model.loss(batch["frames"], batch["actions"], batch["target"], generator=self.generator).mean()
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
                    self.optimizer.step()
                    self.update += 1
                    losses.append(loss.item())
                    bar.update()
                    bar.set_postfix(loss=f"{losses[-1]:.4f}")
                    if self.update % cfg.eval_freq == 0 or self.update == cfg.updates:
                        last = self._log_row(losses, start)
                        bar.set_postfix(loss=f"{losses[-1]:.4f}" if losses else "", held_out=last["held_out_loss"])
                        losses = []
                    if self.update % cfg.checkpoint_freq == 0 and self.update < cfg.updates:
                        self._checkpoint(start)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        if losses:
            last = self._log_row(losses, start)
        self._checkpoint(start, picture=True)
        return last

    def _log_row(self, losses: list[float], start: float) -> dict:
        row = {"update": self.update, "train_loss": f"{sum(losses) / len(losses):.6f}" if losses else "",
               "held_out_loss": f"{self.held_out_loss():.6f}", "seconds": f"{self.seconds + time.perf_counter() - start:.1f}"}
        self.log.append(row)
        _plot_losses(self.log.rows(), self.work_dir / "loss.png")
        return row

    def _checkpoint(self, start: float, picture: bool = False) -> None:
        self.save(self.seconds + time.perf_counter() - start)
        if picture:
            episode = int(self.held_out_episodes[0]) if len(self.held_out_episodes) else 0
            self.frames = write_frames_picture(self.model, self.dataset.episode(episode), self.checkpoint_path.parent / "frames.png",
                                               every=self.cfg.frames_every, steps=self.cfg.frames_steps, seed=self.cfg.seed)
            (self.checkpoint_path.parent / "frames.json").write_text(json.dumps({"episode": episode, "update": self.update, **self.frames}))


def train_world_model(cfg: WorldModelTrainConfig) -> WorldModelTrainer:
    """Build and run a :class:`WorldModelTrainer`; returns it (``.log``, ``.checkpoint_path``, ``.frames``)."""
    trainer = WorldModelTrainer(cfg)
    trainer.train()
    return trainer


def load_world_model(path, *, expect: DiffusionConfig | None = None, map_location="cpu") -> tuple[DiffusionWorldModel, dict]:
    """The world model of a checkpoint (``<work_dir>/checkpoints/latest.pt``) in eval mode, and the checkpoint's
    state. ``expect``: raise :class:`ArchitectureError` unless the checkpoint has its architecture."""
    from ..trainers.checkpoint import CheckpointError, load_checkpoint

    state = load_checkpoint(path, map_location=map_location)
    if state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(f"{path} is not a diffusion world model checkpoint (kind={state.get('kind')!r}); "
                              "train one with mbdpo-dmo world_model data=<play dataset>.")
    saved = DiffusionConfig.from_dict(state["model_config"])
    if expect is not None:
        check_architecture(saved, expect, path)
    model = DiffusionWorldModel(saved)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ArchitectureError(f"{path}: the weights do not fit its own architecture ({err}).") from err
    return model.eval(), state

