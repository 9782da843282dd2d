"""Offline training of the global diffusion world model on a play dataset (``mbdpo-dmo world_model``).

``updates`` AdamW steps (linear warm-up, gradient clipping) of :meth:`DiffusionWorldModel.loss` on batches of
``batch_size`` windows drawn from the training episodes; the last ``held_out`` episodes are never trained on.
Every ``eval_freq`` updates (and at the end) the loss on ``held_out_windows`` fixed held-out windows, with fixed
noise, is written to ``<work_dir>/loss.csv`` beside the mean training loss since the previous row, and plotted in
``loss.png``. ``<work_dir>/checkpoints/latest.pt`` (the library's checksummed, atomic checkpoint files: model,
optimiser, sampling generator, update count, config) is written every ``checkpoint_freq`` updates and at the
end, and beside it ``frames.png`` (and its per-step pixel MSE, ``frames.json``): the first held-out episode,
real (top) and predicted open-loop from its first frame and its actions (bottom), at steps 0, ``frames_every``,
``2 frames_every``, ... up to ``frames_steps``; and ``open_loop.json``: the held-out open-loop errors at 10 and 20
steps against copying the first frame (:mod:`~torchrl_mbdpo.dmo.open_loop`).

Resume: ``resume=true`` continues a run from its checkpoint (architecture and data checked; ``loss.csv`` cut
back to it) and ends bitwise equal to an uninterrupted run on CPU; ``updates`` may be raised to train on.
SIGTERM/SIGINT finish the current update, write the checkpoint and exit with 128 + signal.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import WorldModelTrainConfig
from .diffusion import ArchitectureError, DiffusionConfig, DiffusionWorldModel, NextObservationDiffusion, check_architecture
from .offline_run import OfflineRun
from .open_loop import open_loop_metrics
from .state_model import StateDiffusionConfig, StateDiffusionWorldModel

__all__ = [
    "WorldModelTrainConfig",
    "WorldModelTrainer",
    "train_world_model",
    "load_world_model",
    "write_frames_picture",
    "write_trajectory_picture",
]

CHECKPOINT_KIND = "dmo_diffusion_world_model"
STATE_CHECKPOINT_KIND = "dmo_state_world_model"
LOSS_FIELDS = ["update", "train_loss", "held_out_loss", "seconds"]


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


def write_trajectory_picture(model, episode, path, *, every: int = 5, steps: int = 50, seed: int = 0) -> dict:
    """The state model's counterpart of :func:`write_frames_picture`: the agent's and the block's paths in the workspace,
    real (solid) vs imagined open loop from the first state with the episode's actions (dashed), over ``steps`` steps;
    markers every ``every`` steps. Returns ``{"steps": [...], "agent_error": [...], "block_error": [...]}`` (workspace
    units, at the marked steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, A = model.cfg.context, model.cfg.action_dim
    real = episode["state"][:].float()
    T = min(int(steps), len(real) - 1)
    frames = real[:1, None].expand(1, k, real.shape[-1]).clone()
    with torch.random.fork_rng(devices=[]):
        actions = episode["action"][:T][None].float()
        predicted = model.imagine(frames, torch.zeros(1, k, A), actions, generator=torch.Generator().manual_seed(seed))[0]
    predicted = torch.cat([real[:1], predicted])
    real = real[: T + 1]
    shown = list(range(0, T + 1, max(1, int(every))))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for cols, name, color in (((0, 1), "agent", "C0"), ((2, 3), "block", "C7")):
        for traj, style, label in ((real, "-", "real"), (predicted, "--", "world model")):
            ax.plot(traj[:, cols[0]], traj[:, cols[1]], style, color=color, label=f"{name}, {label}")
            ax.plot(traj[shown, cols[0]], traj[shown, cols[1]], ".", color=color)
    ax.set_xlim(0, 512)
    ax.set_ylim(512, 0)  # the renderer's y axis points down
    ax.set_aspect("equal")
    ax.legend(fontsize=7)
    ax.set_title(f"held-out episode, open loop over {T} steps", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    err = lambda c: [float((predicted[t, c] - real[t, c]).norm()) for t in shown]  # noqa: E731
    return {"steps": shown, "agent_error": err(slice(0, 2)), "block_error": err(slice(2, 4))}


class WorldModelTrainer(OfflineRun):
    """Runs the training of the module docstring (:class:`~torchrl_mbdpo.dmo.offline_run.OfflineRun`);
    :meth:`train` returns the last ``loss.csv`` row."""

    kind, name, command = CHECKPOINT_KIND, "world model", "world_model"
    fields = LOSS_FIELDS
    y_label = "EDM loss"

    def build(self):
        cfg = self.cfg
        self.dataset.check_key(cfg.obs)
        model_cfg = cfg.diffusion_config(self.dataset.image_size)
        fixed = torch.Generator().manual_seed(cfg.seed + 1)
        self.held_out_batch = self.dataset.sample(cfg.held_out_windows, cfg.context, fixed, self.eval_episodes, key=cfg.obs)
        if cfg.obs == "pixels":
            return DiffusionWorldModel(model_cfg), model_cfg
        self.kind = STATE_CHECKPOINT_KIND
        model = StateDiffusionWorldModel(model_cfg)
        rows = self.dataset.transition_rows(self.train_episodes)
        model.set_delta_std(self.dataset.rows["state"][rows], self.dataset.rows["state"][rows + 1])
        return model, model_cfg

    def check_architecture(self, saved_config: dict, path) -> None:
        check_architecture(type(self.model_cfg).from_dict(saved_config), self.model_cfg, path)

    def training_loss(self) -> torch.Tensor:
        cfg = self.cfg
        batch = self.dataset.sample(cfg.batch_size, cfg.context, self.generator, self.train_episodes, key=cfg.obs).to(cfg.device)
        return self.model.loss(batch["frames"], batch["actions"], batch["target"], generator=self.generator).mean()

    def held_out_loss(self) -> float:
        b = self.held_out_batch.to(self.cfg.device)
        with torch.no_grad():
            loss = self.model.loss(b["frames"], b["actions"], b["target"], generator=torch.Generator().manual_seed(self.cfg.seed + 2))
        return float(loss.mean())

    def evaluate(self) -> dict:
        return {"held_out_loss": f"{self.held_out_loss():.6f}"}

    def finish(self) -> None:
        """``frames.png`` and ``frames.json`` (``obs=state``: the trajectories, ``trajectories.png``) and
        ``open_loop.json`` beside the checkpoint."""
        episode = int(self.eval_episodes[0])
        self.checkpoint_path.parent.mkdir(parents=True, exist_ok=True)
        write = write_frames_picture if self.cfg.obs == "pixels" else write_trajectory_picture
        name = "frames" if self.cfg.obs == "pixels" else "trajectories"
        self.frames = write(
            self.model,
            self.dataset.episode(episode),
            self.checkpoint_path.parent / f"{name}.png",
            every=self.cfg.frames_every,
            steps=self.cfg.frames_steps,
            seed=self.cfg.seed,
        )
        (self.checkpoint_path.parent / f"{name}.json").write_text(json.dumps({"episode": episode, "update": self.update, **self.frames}))
        self.open_loop = open_loop_metrics(self.model, self.dataset, self.eval_episodes, seed=self.cfg.seed)
        (self.checkpoint_path.parent / "open_loop.json").write_text(json.dumps({"update": self.update, **self.open_loop}))


def train_world_model(cfg: WorldModelTrainConfig) -> WorldModelTrainer:
    """Build and run a :class:`WorldModelTrainer`; returns it (``.log``, ``.checkpoint_path``, ``.frames``)."""
    trainer = WorldModelTrainer(cfg)
    trainer.train()
    return trainer


def load_world_model(path, *, expect=None, map_location="cpu") -> tuple[NextObservationDiffusion, dict]:
    """The world model of a checkpoint (``<work_dir>/checkpoints/latest.pt``; a pixel :class:`DiffusionWorldModel` or a
    :class:`~torchrl_mbdpo.dmo.state_model.StateDiffusionWorldModel`) in eval mode, and the checkpoint's state.
    ``expect`` (a config): raise :class:`ArchitectureError` unless the checkpoint has its architecture."""
    from ..trainers.checkpoint import CheckpointError, load_checkpoint

    state = load_checkpoint(path, map_location=map_location)
    classes = {
        CHECKPOINT_KIND: (DiffusionConfig, DiffusionWorldModel),
        STATE_CHECKPOINT_KIND: (StateDiffusionConfig, StateDiffusionWorldModel),
    }
    if state.get("kind") not in classes:
        raise CheckpointError(
            f"{path} is not a diffusion world model checkpoint (kind={state.get('kind')!r}); "
            "train one with mbdpo-dmo world_model data=<play dataset>."
        )
    config_class, model_class = classes[state["kind"]]
    saved = config_class.from_dict(state["model_config"])
    if expect is not None:
        check_architecture(saved, expect, path)
    model = model_class(saved)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        raise ArchitectureError(f"{path}: the weights do not fit its own architecture ({err}).") from err
    return model.eval(), state
