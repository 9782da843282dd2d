"""The reward of DMO's world-model env, learned from the play dataset (``mbdpo-dmo reward``).

- ``kind=energy`` (the paper's): a contrastive energy ``f(o_t | o_start, o_goal)``, a small CNN on the three
  frames stacked on the channel axis, trained from the frames alone (passive video: no action, no reward is
  read) with the Bradley-Terry loss (:func:`~torchrl_mbdpo.dmo.functional.bradley_terry_loss`) on
  :meth:`PlayDataset.progress_pairs`: within a stretch of an episode from ``o_start`` to ``o_goal``, the later of
  two frames scores higher. At policy time ``o_start`` is the model-env episode's first frame
  (``"start_pixels"``) and ``o_goal`` the frame of the solved task (:func:`~torchrl_mbdpo.envs.pusht.pusht_goal_frame`).
- ``kind=env`` (the ablation): the real env's reward, which a world-model env cannot compute (it has no
  simulator state), regressed from the frame ``o_{t+1}`` on the dataset's recorded Push-T rewards (MSE).
- ``kind=dense`` (shaping): the same regression on a dense progress target computed from the dataset's recorded
  states, :func:`~torchrl_mbdpo.envs.pusht.pusht_dense_reward` (the block's distance to its goal pose and the
  agent's to the block): Push-T's coverage is zero until the block overlaps the goal, and the energy learns the
  order of play episodes rather than progress to the goal.

Both are :class:`FrameScorer` networks (``obs=state``: :class:`~torchrl_mbdpo.dmo.state_model.StateScorer`, the same
over Push-T states, with the goal state :func:`~torchrl_mbdpo.dmo.state_model.pusht_goal_state`);
:class:`FrameReward` turns a trained one into the ``reward_fn`` of
:class:`~torchrl_mbdpo.dmo.diffusion_env.DiffusionWorldModelEnv` (``load_frame_reward(checkpoint)``: the switch
between them is which checkpoint is loaded). Held-out columns of ``loss.csv``: the loss, the pair-order accuracy
(energy) and the correlation of the score with the real env's reward on held-out frames (both kinds; the
energy with the Push-T goal frame), which says how well each one ranks real progress.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from ..envs.pusht import pusht_dense_reward
from .config import REWARD_KINDS, RewardTrainConfig
from .functional import bradley_terry_loss, frames_to_unit
from .offline_run import OfflineRun

__all__ = [
    "REWARD_KINDS",
    "RewardConfig",
    "FrameScorer",
    "make_scorer",
    "goal_observation",
    "FrameReward",
    "RewardTrainConfig",
    "RewardTrainer",
    "train_reward",
    "load_frame_reward",
]

CHECKPOINT_KIND = "dmo_reward"
ARCHITECTURE_FIELDS = ("obs", "image_size", "kind", "channels", "hidden")


@dataclass
class RewardConfig:
    """A :class:`FrameScorer`: ``kind`` (``energy``: ``f(o | o_start, o_goal)``; ``env``, ``dense``: ``r(o)``), square
    ``image_size`` frames, a stride-2 conv per entry of ``channels``, then an MLP of width ``hidden``."""

    image_size: int = 64
    kind: str = "energy"
    channels: tuple[int, ...] = (16, 32, 64)
    hidden: int = 128
    obs: str = "pixels"  # state: a StateScorer (an MLP of len(channels) layers of width hidden) on Push-T states

    def __post_init__(self):
        self.channels = tuple(int(c) for c in self.channels)
        if self.kind not in REWARD_KINDS:
            raise ValueError(f"kind must be one of {REWARD_KINDS}, got {self.kind!r}.")
        if not self.channels or min(self.channels) < 1 or self.hidden < 1:
            raise ValueError(f"channels and hidden must be positive, got {list(self.channels)} and {self.hidden}.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RewardConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


def _check_architecture(saved: RewardConfig, requested: RewardConfig, where) -> None:
    from .diffusion import ArchitectureError

    a, b = saved.to_dict(), requested.to_dict()
    diffs = [f"{k}: checkpoint has {a.get(k)!r}, requested {b.get(k)!r}" for k in ARCHITECTURE_FIELDS if a.get(k) != b.get(k)]
    if diffs:
        raise ArchitectureError(
            f"The reward checkpoint {where} has another architecture:\n  "
            + "\n  ".join(diffs)
            + "\nDrop the conflicting overrides, or train a new reward in another work_dir."
        )


class FrameScorer(nn.Module):
    """``(o, o_start, o_goal) -> (B, 1)`` (``kind=energy``) or ``o -> (B, 1)`` (``env``, ``dense``); frames uint8
    ``(B, 3, H, W)``."""

    def __init__(self, cfg: RewardConfig):
        super().__init__()
        self.cfg = cfg
        layers, width = [], 9 if cfg.kind == "energy" else 3
        for c in cfg.channels:
            layers += [nn.Conv2d(width, c, 3, stride=2, padding=1), nn.GroupNorm(min(8, c), c), nn.SiLU()]
            width = c
        self.conv = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(16 * width, cfg.hidden), nn.SiLU(), nn.Linear(cfg.hidden, 1))

    def forward(self, pixels: torch.Tensor, start: torch.Tensor | None = None, goal: torch.Tensor | None = None) -> torch.Tensor:
        want = (3, self.cfg.image_size, self.cfg.image_size)
        if tuple(pixels.shape[1:]) != want:
            raise ValueError(f"The reward network takes frames (B, {', '.join(map(str, want))}), got {tuple(pixels.shape)}.")
        x = [pixels]
        if self.cfg.kind == "energy":
            if start is None or goal is None:
                raise ValueError("An energy reward f(o | o_start, o_goal) needs the start and goal frames.")
            x += [start, goal]
        return self.head(self.conv(frames_to_unit(torch.cat(x, dim=1))))


def make_scorer(cfg: RewardConfig) -> nn.Module:
    """The reward network of ``cfg``: a :class:`FrameScorer` (``obs=pixels``) or a
    :class:`~torchrl_mbdpo.dmo.state_model.StateScorer` (``obs=state``)."""
    if cfg.obs == "state":
        from .state_model import StateScorer

        return StateScorer(cfg)
    return FrameScorer(cfg)


def goal_observation(cfg: RewardConfig) -> torch.Tensor:
    """The solved task as the scorer observes it: the goal frame (``obs=pixels``) or the goal state (``obs=state``)."""
    if cfg.obs == "state":
        from .state_model import pusht_goal_state

        return pusht_goal_state()
    from ..envs.pusht import pusht_goal_frame

    return pusht_goal_frame(cfg.image_size)


class FrameReward(nn.Module):
    """A trained scorer (:func:`make_scorer`) as the ``reward_fn`` of a model env: reads the observation (``"pixels"`` or
    ``"state"``, the scorer's ``obs``) and, for an energy, ``"start_<obs>"`` and the fixed ``goal``; no gradient. The
    reward is ``(score - shift) / scale`` (default: the score itself)."""

    def __init__(self, scorer: nn.Module, goal: torch.Tensor | None = None, shift: float = 0.0, scale: float = 1.0):
        super().__init__()
        self.scorer = scorer.eval()
        self.key = scorer.cfg.obs
        self.shift, self.scale = float(shift), float(scale)
        if scorer.cfg.kind == "energy":
            if goal is None:
                raise ValueError("An energy reward needs the goal frame (state): reward.goal_observation(cfg).")
            self.register_buffer("goal", torch.as_tensor(goal, dtype=torch.uint8 if self.key == "pixels" else torch.float32))
        else:
            self.goal = None

    @torch.no_grad()
    def forward(self, td) -> torch.Tensor:
        obs = td[self.key]
        if self.goal is None:
            score = self.scorer(obs)
        else:
            score = self.scorer(obs, td[f"start_{self.key}"], self.goal.expand(obs.shape[0], *self.goal.shape))
        return (score - self.shift) / self.scale


class RewardTrainer(OfflineRun):
    """Trains a :class:`FrameScorer` of ``cfg.kind`` (module docstring)."""

    kind, name, command = CHECKPOINT_KIND, "reward", "reward"
    fields = ["update", "train_loss", "held_out_loss", "held_out_accuracy", "env_reward_corr", "seconds"]

    def build(self):
        cfg = self.cfg
        self.dataset.check_key(cfg.obs)
        self.log_scale = cfg.kind != "energy"  # a regression's MSE falls by decades (dense: 3.4 -> 0.0009)
        self.y_label = "Bradley-Terry loss" if cfg.kind == "energy" else "MSE"
        model_cfg = RewardConfig(
            image_size=self.dataset.image_size, kind=cfg.kind, channels=tuple(cfg.channels), hidden=cfg.hidden, obs=cfg.obs
        )
        self.goal = goal_observation(model_cfg)
        fixed = torch.Generator().manual_seed(cfg.seed + 1)
        self.held_out_pairs = self.dataset.progress_pairs(cfg.held_out_pairs, fixed, self.eval_episodes, key=cfg.obs)
        rows = self.dataset.transition_rows(self.eval_episodes)
        rows = rows[torch.randperm(len(rows), generator=fixed)[: cfg.held_out_pairs]]
        self.held_out_frames = self._frames_and_rewards(rows)
        return make_scorer(model_cfg), model_cfg

    def _frames_and_rewards(self, rows: torch.Tensor) -> dict:
        """``o_{t+1}``, its episode's first observation, the real env's reward of the transition at rows ``t`` and the
        regression's ``target`` (that reward, or ``kind=dense``: the dense reward of ``s_{t+1}``)."""
        data, key = self.dataset.rows, self.cfg.obs
        start = self.dataset.episode_start[data["episode"][rows]]
        reward = data["next", "reward"][rows].float()
        target = pusht_dense_reward(data["state"][rows + 1]) if self.cfg.kind == "dense" else reward
        return {"pixels": data[key][rows + 1], "start": data[key][start], "reward": reward, "target": target}

    def check_architecture(self, saved_config: dict, path) -> None:
        _check_architecture(RewardConfig.from_dict(saved_config), self.model_cfg, path)

    def _energy_loss(self, pairs) -> tuple[torch.Tensor, torch.Tensor]:
        later = self.model(pairs["later"], pairs["start"], pairs["goal"])
        earlier = self.model(pairs["earlier"], pairs["start"], pairs["goal"])
        return bradley_terry_loss(later, earlier), (later > earlier).float().mean()

    def _score(self, frames: dict) -> torch.Tensor:
        if self.cfg.kind != "energy":
            return self.model(frames["pixels"])
        goal = self.goal.expand(len(frames["pixels"]), *self.goal.shape)
        return self.model(frames["pixels"], frames["start"], goal)

    def training_loss(self) -> torch.Tensor:
        cfg = self.cfg
        if cfg.kind == "energy":
            pairs = self.dataset.progress_pairs(cfg.batch_size, self.generator, self.train_episodes, key=cfg.obs)
            return self._energy_loss(pairs.to(cfg.device))[0]
        rows = self.dataset.transition_rows(self.train_episodes)
        frames = self._frames_and_rewards(rows[torch.randint(len(rows), (cfg.batch_size,), generator=self.generator)])
        return (self.model(frames["pixels"].to(cfg.device)) - frames["target"].to(cfg.device)).pow(2).mean()

    def evaluate(self) -> dict:
        score = self._score(self.held_out_frames).squeeze(-1)
        reward = self.held_out_frames["reward"].squeeze(-1)
        corr = torch.corrcoef(torch.stack([score, reward]))[0, 1] if reward.std() > 0 and score.std() > 0 else torch.tensor(float("nan"))
        if self.cfg.kind == "energy":
            loss, accuracy = self._energy_loss(self.held_out_pairs)
            return {
                "held_out_loss": f"{float(loss):.6f}",
                "held_out_accuracy": f"{float(accuracy):.4f}",
                "env_reward_corr": f"{float(corr):.4f}",
            }
        loss = (score - self.held_out_frames["target"].squeeze(-1)).pow(2).mean()
        return {"held_out_loss": f"{float(loss):.6f}", "env_reward_corr": f"{float(corr):.4f}"}


def train_reward(cfg: RewardTrainConfig) -> RewardTrainer:
    trainer = RewardTrainer(cfg)
    trainer.train()
    return trainer


def load_frame_reward(
    path, *, image_size: int | None = None, goal: torch.Tensor | None = None, obs: str | None = None
) -> tuple[FrameReward, dict]:
    """The model-env ``reward_fn`` of a reward checkpoint, and the checkpoint's state. ``obs`` and ``image_size`` (e.g.
    the world model's) must be the reward's; an energy's ``goal`` defaults to the Push-T goal frame (state)."""
    from ..trainers.checkpoint import CheckpointError, load_checkpoint
    from .diffusion import ArchitectureError

    state = load_checkpoint(path)
    if state.get("kind") != CHECKPOINT_KIND:
        raise CheckpointError(
            f"{path} is not a reward checkpoint (kind={state.get('kind')!r}); train one with mbdpo-dmo reward data=<dir>."
        )
    cfg = RewardConfig.from_dict(state["model_config"])
    if obs is not None and cfg.obs != obs:
        raise ArchitectureError(
            f"The reward checkpoint {path} scores {cfg.obs}, the world model makes {obs}: train the reward with obs={obs}."
        )
    if obs != "state" and image_size is not None and cfg.image_size != int(image_size):
        raise ArchitectureError(
            f"The reward checkpoint {path} scores {cfg.image_size}x{cfg.image_size} frames, the world model makes "
            f"{image_size}x{image_size}: train the reward on a dataset of the world model's image size."
        )
    scorer = make_scorer(cfg)
    scorer.load_state_dict(state["model"])
    if cfg.kind == "energy" and goal is None:
        goal = goal_observation(cfg)
    return FrameReward(scorer, goal), state
