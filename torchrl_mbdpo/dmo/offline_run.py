"""What the offline trainings of the DMO pipeline share (the diffusion world model, the reward): a play dataset
split into training and held-out episodes, AdamW updates with linear warm-up and gradient clipping, a
``loss.csv`` / ``loss.png`` written every ``eval_freq`` updates, checkpoints, resume, signals.

- ``<work_dir>/checkpoints/latest.pt``: the library's checksummed, atomic checkpoint files (model, optimiser,
  the sampling generator, update count, config, data description), every ``checkpoint_freq`` updates and at
  the end;
- ``resume=true`` continues a run from its checkpoint (architecture and data checked, ``loss.csv`` cut back to
  it) and ends bitwise equal to an uninterrupted run on CPU; ``updates`` may be raised to train on; a new run
  never overwrites an existing one;
- SIGTERM/SIGINT finish the current update, write the checkpoint and stop (the run's
  :class:`~torchrl_mbdpo.trainers.run_control.RunControl`: ``stop_message``, exit code 128 + signal).

Every random draw of training (batches, noise) comes from one ``torch.Generator`` saved in the checkpoint; the
held-out evaluation uses fixed batches and its own fixed generator.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .play_data import load_play_dataset

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
        from ..trainers.evaluation import CsvLog
        from ..trainers.run_control import RunControl, decide_resume

        self.cfg = cfg
        cfg.validate()
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        self.dataset = load_play_dataset(cfg.data, image_size=cfg.image_size)
        suffix = "-state" if getattr(cfg, "obs", "pixels") == "state" else ""
        self.work_dir = Path(cfg.work_dir or Path("runs") / f"dmo_{self.command}" / (Path(cfg.data).name + suffix))
        found = decide_resume(self.work_dir, cfg.resume, what=f"{self.name} run")
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
        self.seconds = 0.0  # training time of the sessions before this one (resume)
        self._clock = None
        self.control = RunControl(self.work_dir, cfg.checkpoint_freq, self.state_dict, unit="updates", threads=cfg.threads)
        if found is not None:
            self._restore(*found)
        else:
            self.log.truncate(-1)  # rows of a run killed before its first checkpoint

    @property
    def stop_message(self) -> str | None:
        return self.control.stop_message or None

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

    # ------------------------------------------------------------------ the run
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
        from ..trainers.run_control import warn_if_other_threads

        warn_if_other_threads(state, path, self.cfg.threads)

    def state_dict(self, seconds: float | None = None) -> dict:
        """The checkpoint's content; ``seconds``: training time so far (default: the run's clock)."""
        if seconds is None:
            seconds = self._clock() if self._clock is not None else self.seconds
        return {
            "kind": self.kind,
            "step": self.update,
            "model_config": self.model_cfg.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "update": self.update,
            "config": asdict(self.cfg),
            "seconds": seconds,
            "data": {
                "path": str(self.dataset.path),
                "episodes": self.dataset.info.episodes,
                "held_out": self.cfg.held_out,
                "image_size": self.dataset.image_size,
            },
        }

    def save(self) -> Path | None:
        return self.control.save()

    def _evaluate(self) -> dict:
        self.model.eval()
        with torch.no_grad():
            out = self.evaluate()
        self.model.train()
        return out

    def train(self) -> dict:
        """Train up to ``cfg.updates``; returns the last ``loss.csv`` row (a dict of strings). A signal stops it
        after the current update with a checkpoint (``control.exit_code``: 128 + signal)."""
        cfg, control = self.cfg, self.control
        start, losses, last = time.perf_counter(), [], {}
        self._clock = lambda: self.seconds + time.perf_counter() - start  # noqa: E731
        with control.handle_signals():
            if self.update == 0 and not self.log.rows():
                with control.in_phase("eval"):
                    self.log.append({"update": 0, **self._evaluate(), "seconds": "0.0"})
            control.enter("train")
            with tqdm(total=cfg.updates, initial=min(self.update, cfg.updates), desc=self.name, disable=not cfg.progress) as bar:
                while self.update < cfg.updates and not control.stop_requested:
                    control.pin_threads()
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
                        with control.in_phase("eval"):
                            last = self._log_row(losses)
                        bar.set_postfix(loss=f"{losses[-1]:.4f}", held_out=last["held_out_loss"])
                        losses = []
                    if self.update % cfg.checkpoint_freq == 0 and self.update < cfg.updates:
                        self.save()
            if losses:
                last = self._log_row(losses)
            control.finish(self.update, complete=self.update >= cfg.updates, final_eval=self.finish)
        if control.stop_message:
            print(control.stop_message, flush=True)
        return last

    def _log_row(self, losses: list[float]) -> dict:
        row = {
            "update": self.update,
            "train_loss": f"{sum(losses) / len(losses):.6f}" if losses else "",
            **self._evaluate(),
            "seconds": f"{self._clock():.1f}",
        }
        self.log.append(row)
        plot_losses(self.log.rows(), self.work_dir / "loss.png", self.name, self.y_label, self.log_scale)
        return row
