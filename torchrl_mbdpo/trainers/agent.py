"""The agent of a run config: world model, loss and planner (``algo=mbdpo|tdmpc2``), and the same
rebuilt from a checkpoint. Used by every trainer and by ``mbdpo-eval``."""

from __future__ import annotations

import torch

from ..config import UserError
from ..envs import make_env, make_multitask_env
from ..modules import DiffusionActor, MBDPOWorldModel, MPPIActor, WorldModelConfig
from ..objectives import MBDPOLoss, TDMPC2Loss
from .checkpoint import check_compatible, load_checkpoint
from .config import TrainConfig, from_container

__all__ = ["ALGOS", "make_actor", "world_model_config", "build_agent", "build_loss_and_actor", "load_agent", "checkpoint_env"]


ALGOS = ("mbdpo", "tdmpc2")


def make_actor(cfg: TrainConfig, world_model, discount):
    """The planner of ``cfg.algo``: ``DiffusionActor`` (mbdpo) or ``MPPIActor`` (tdmpc2)."""
    actor_cls = MPPIActor if cfg.algo == "tdmpc2" else DiffusionActor
    return actor_cls(world_model, cfg.active_planner(), discount=discount, precision=cfg.precision)


def world_model_config(cfg: TrainConfig, obs_dim: int, action_dim: int, episodic: bool, **multitask) -> WorldModelConfig:
    """The architecture a run config asks for (``multitask``: ``num_tasks``, ``action_dims``; the task
    embedding then defaults to the paper's 96 dims)."""
    overrides = cfg.model.as_kwargs()
    if cfg.algo == "tdmpc2":
        overrides.setdefault("q_init", "trunc_normal")  # TD-MPC2 since e9f5932 initialises its Q heads (spec §1.1)
    if multitask:
        overrides.setdefault("task_dim", 96)
    return WorldModelConfig.from_size(
        cfg.model_size,
        obs_dim,
        action_dim,
        horizon=cfg.active_planner().horizon,
        episodic=episodic,
        obs_type=cfg.obs,
        **overrides,
        **multitask,
    )


def build_agent(cfg: TrainConfig, obs_dim: int, action_dim: int, task_spec):
    """World model, loss and actor for a config and an environment's dimensions."""
    episodic = task_spec.episodic if cfg.episodic is None else cfg.episodic
    world_model = MBDPOWorldModel(world_model_config(cfg, obs_dim, action_dim, episodic))
    return (world_model, *build_loss_and_actor(cfg, world_model, task_spec.discount))


def build_loss_and_actor(cfg: TrainConfig, world_model: MBDPOWorldModel, discount):
    """The loss and planner of ``cfg.algo`` around a world model (moved to ``cfg.device``). ``discount``: a
    float, or one per task index (multi-task; batches may also carry their own ``discount``)."""
    if cfg.algo not in ALGOS:
        raise ValueError(f"algo must be one of {ALGOS}, got {cfg.algo!r}")
    world_model.to(cfg.device)
    if cfg.algo == "tdmpc2":
        shared = {k: v for k, v in vars(cfg.loss).items() if k not in TDMPC2Loss._MBDPO_ONLY and k != "target_q_pair"}
        loss = TDMPC2Loss(world_model, discount=discount, **shared).to(cfg.device)
    else:
        # The score-matching target re-uses the planner's schedule, temperature and energy weight (as the official
        # code, which reads them from one config): one setting each.
        planner = cfg.planner
        loss = MBDPOLoss(
            world_model,
            discount=discount,
            contrastive_eta=planner.energy_eta,
            diffusion_steps=planner.steps,
            beta0=planner.beta0,
            betaT=planner.betaT,
            score_temperature=planner.temperature,
            **vars(cfg.loss),
        ).to(cfg.device)
    actor = make_actor(cfg, world_model, discount).to(cfg.device)
    return loss, actor


def load_agent(checkpoint_path, cfg: TrainConfig | None = None, *, state: dict | None = None):
    """World model + actor from a checkpoint (``state``: its content, if already loaded); with ``cfg``,
    refuse a checkpoint of another architecture."""
    state = load_checkpoint(checkpoint_path) if state is None else state
    saved_cfg = from_container(state["config"])
    cfg = cfg or saved_cfg
    wm_cfg = WorldModelConfig.from_dict(state["world_model_config"])
    if cfg is not saved_cfg:
        requested = world_model_config(cfg, wm_cfg.obs_dim, wm_cfg.action_dim, wm_cfg.episodic)
        check_compatible(wm_cfg.to_dict(), requested.to_dict(), "world-model architecture", checkpoint_path)
    world_model = MBDPOWorldModel(wm_cfg)
    world_model.load_state_dict(state["world_model"])
    discount = torch.tensor(state["discounts"]) if state.get("discounts") else state["task"]["discount"]
    actor = make_actor(cfg, world_model, discount)
    return state, cfg, world_model, actor


def checkpoint_env(state: dict, task: str, *, seed: int, obs: str = "state"):
    """An env of ``task`` shaped for a checkpoint's world model: multi-task checkpoints get their padded
    observation/action sizes and the task's index (the task must be one they were trained on)."""
    names = state.get("task_names")
    if not names:
        return make_env(task, seed=seed, obs=obs)
    trained = state.get("trained_tasks") or names
    if task not in trained:
        raise UserError(
            f"task={task} is not a task of this multi-task checkpoint; it was trained on {trained}. "
            "A new task needs fine-tuning first: mbdpo-finetune checkpoint=... task=<new> source_task=<known>."
        )
    wm_cfg = state["world_model_config"]
    return make_multitask_env(task, names.index(task), wm_cfg["obs_dim"], wm_cfg["action_dim"], seed=seed)
