"""What the offline trainings of the DMO pipeline share (the diffusion world model, the reward): a play dataset
split into training and held-out episodes, AdamW updates with linear warm-up and gradient clipping, a
``loss.csv`` / ``loss.png`` written every ``eval_freq`` updates, checkpoints, resume, signals.

- ``<work_dir>/checkpoints/latest.pt``: the library's checksummed, atomic checkpoint files (model, optimiser,
  the sampling generator, update count, config, data description), every ``checkpoint_freq`` updates and at
  the end;
- ``resume=true`` continues a run from its checkpoint (architecture and data checked, ``loss.csv`` cut back to
  it) and ends bitwise equal to an uninterrupted run on CPU; ``updates`` may be raised to train on; a new run
  never overwrites an existing one;
- SIGTERM/SIGINT finish the current update, write the checkpoint and stop (``stop_message``; the command line
  exits with 128 + signal).

Every random draw of training (batches, noise) comes from one ``torch.Generator`` saved in the checkpoint; the
held-out evaluation uses fixed batches and its own fixed generator.
"""

from __future__ import annotations

import signal
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .play_data import PlayDatasetError, load_play_dataset

__all__ = ["OfflineRun", "plot_losses"]


def _lr_factor(update: int, warmup: int) -> float:
    return min(1.0, (update + 1) / warmup) if warmup > 0 else 1.0


def plot_losses(rows: list[dict], path: Path, title: str, ylabel: str, log_scale: bool = True) -> None:
    """``loss.png``: the training loss (mean since the previous row) and the held-out loss against the update."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    for key, label in (("train_loss", "train (mean since last point)"), ("held_out_loss", "held-out episodes")):
        pts = [(int(r["update"]), float(r[key])) for r in rows if r.get(key) not in (None, "")]
        if pts:
            ax.plot(*zip(*pts), marker=".", label=label)
    ax.set_xlabel("update")
    ax.set_ylabel(ylabel)
    if log_scale:
        ax.set_yscale("log")
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


class OfflineRun:
    """Subclasses set ``kind``, ``name`` (for messages and the progress bar), ``fields`` (``loss.csv``'s columns:
    ``update``, ``train_loss``, ``held_out_loss``, ..., ``seconds``) and implement :meth:`build` (returns
    ``(model, model_config)``; the config has ``to_dict``), :meth:`check_architecture`, :meth:`training_loss`
    (one batch's mean loss, drawing from ``self.generator``) and :meth:`evaluate` (the held-out columns);
    :meth:`finish` runs after the final checkpoint. ``cfg`` needs ``data``, ``work_dir``, ``image_size``, ``updates``,
    ``batch_size``, ``lr``, ``weight_decay``, ``warmup``, ``grad_clip``, ``held_out``, ``eval_freq``,
    ``checkpoint_freq``, ``seed``, ``device``, ``threads``, ``resume``, ``progress``."""

    kind = ""
    name = ""
    command = ""
    fields = ["update", "train_loss", "held_out_loss", "seconds"]
    y_label, log_scale = "loss", True

    def __init__(self, cfg):
        from ..trainers.checkpoint import CheckpointError, load_latest
        from ..trainers.evaluation import CsvLog

        self.cfg = cfg
        self._check(cfg)
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.dataset = load_play_dataset(cfg.data, image_size=cfg.image_size)
        self.work_dir = Path(cfg.work_dir or Path("runs") / f"dmo_{self.command}" / Path(cfg.data).name)
        self.checkpoint_path = self.work_dir / "checkpoints" / "latest.pt"
        self.train_episodes, self.held_out_episodes = self.dataset.split(cfg.held_out)
        self.eval_episodes = self.held_out_episodes if len(self.held_out_episodes) else self.train_episodes
        torch.manual_seed(cfg.seed)
        self.model, self.model_cfg = self.build()
        self.model.to(cfg.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.update = 0
        self.log = CsvLog(self.work_dir / "loss.csv", self.fields)
        self._signal = None
        self.stop_message = None
        self.seconds = 0.0  # training time of the sessions before this one (resume)
        if self.checkpoint_path.exists() or (self.work_dir / "checkpoints" / "previous.pt").exists():
            if not cfg.resume:
                raise CheckpointError(
                    f"{self.work_dir} already holds a {self.name} run: pass resume=true to continue it, or another work_dir."
                )
            state, path = load_latest(self.checkpoint_path.parent)
            self._restore(state, path)
        elif cfg.resume:
            raise CheckpointError(f"resume=true, but there is no checkpoint at {self.checkpoint_path} to continue.")

    # ------------------------------------------------------------------ subclass hooks
    def build(self):
        raise NotImplementedError

    def check_architecture(self, saved_config: dict, path) -> None:
        raise NotImplementedError

    def training_loss(self) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self) -> dict:
        raise NotImplementedError

    def finish(self) -> None:
        pass

    def extra_checks(self, cfg) -> None:
        pass

    # ------------------------------------------------------------------ the run
    def _check(self, cfg) -> None:
        if not cfg.data:
            raise PlayDatasetError(
                f"mbdpo-dmo {self.command} needs data=<play dataset folder>; write one with mbdpo-dmo dataset out=<dir> episodes=200"
            )
        for name in ("updates", "batch_size", "eval_freq", "checkpoint_freq"):
            if getattr(cfg, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(cfg, name)}.")
        if cfg.lr <= 0:
            raise ValueError(f"lr must be > 0, got {cfg.lr}.")
        self.extra_checks(cfg)

    def _restore(self, state: dict, path) -> None:
        from ..trainers.checkpoint import CheckpointError

        if state.get("kind") != self.kind:
            raise CheckpointError(f"{path} is not a {self.name} checkpoint (kind={state.get('kind')!r}).")
        self.check_architecture(state["model_config"], path)
        data = state.get("data", {})
        if data.get("held_out") != self.cfg.held_out or data.get("episodes") != self.dataset.info.episodes:
            raise CheckpointError(
                f"{path} was trained on a dataset of {data.get('episodes')} episodes with "
                f"held_out={data.get('held_out')}; "
                f"this run has {self.dataset.info.episodes} and held_out={self.cfg.held_out}: resume with the same data."
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.update = int(state["update"])
        self.seconds = float(state.get("seconds", 0.0))
        self.log.truncate(self.update)

    def state_dict(self, seconds: float | None = None) -> dict:
        """The checkpoint's content; ``seconds``: training time so far (default: that of the sessions before this one)."""
        return {
            "kind": self.kind,
            "model_config": self.model_cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "update": self.update,
            "config": asdict(self.cfg),
            "seconds": self.seconds if seconds is None else seconds,
            "data": {
                "path": str(self.dataset.path),
                "episodes": self.dataset.info.episodes,
                "held_out": self.cfg.held_out,
                "image_size": self.dataset.image_size,
            },
        }

    def save(self, seconds: float | None = None) -> Path:
        from ..trainers.checkpoint import save_checkpoint

        return save_checkpoint(self.state_dict(seconds), self.checkpoint_path)

    def _evaluate(self) -> dict:
        self.model.eval()
        with torch.no_grad():
            out = self.evaluate()
        self.model.train()
        return out

    def _handle(self, signum, frame):
        self._signal = signum

    def train(self) -> dict:
        """Train up to ``cfg.updates``; returns the last ``loss.csv`` row (a dict of strings)."""
        cfg = self.cfg
        handlers = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        start, losses, last = time.perf_counter(), [], {}
        if self.update == 0:
            self.log.append({"update": 0, **self._evaluate(), "seconds": "0.0"})
        try:
            with tqdm(total=cfg.updates, initial=min(self.update, cfg.updates), desc=self.name, disable=not cfg.progress) as bar:
                while self.update < cfg.updates:
                    if self._signal is not None:
                        self.stop_message = f"stopped by signal {self._signal} at update {self.update}; resume with resume=true"
                        break
                    for group in self.optimizer.param_groups:
                        group["lr"] = cfg.lr * _lr_factor(self.update, cfg.warmup)
                    loss = self.training_loss()
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
                        bar.set_postfix(loss=f"{losses[-1]:.4f}", held_out=last["held_out_loss"])
                        losses = []
                    if self.update % cfg.checkpoint_freq == 0 and self.update < cfg.updates:
                        self.save(self.seconds + time.perf_counter() - start)
        finally:
            for s, h in handlers.items():
                signal.signal(s, h)
        if losses:
            last = self._log_row(losses, start)
        self.save(self.seconds + time.perf_counter() - start)
        self.finish()
        return last

    def _log_row(self, losses: list[float], start: float) -> dict:
        row = {
            "update": self.update,
            "train_loss": f"{sum(losses) / len(losses):.6f}" if losses else "",
            **self._evaluate(),
            "seconds": f"{self.seconds + time.perf_counter() - start:.1f}",
        }
        self.log.append(row)
        plot_losses(self.log.rows(), self.work_dir / "loss.png", self.name, self.y_label, self.log_scale)
        return row
