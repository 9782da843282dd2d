"""Offline-to-online fine-tuning (spec §4.4): a multi-task checkpoint learns a new task online.

``mbdpo-finetune checkpoint=<offline ckpt> task=<new> source_task=<known> steps=<n>`` appends one task
embedding (or, for a task of the set that was held out, takes its index), initialised from the source
task's, with the new task's action mask and discount, rebuilds the
optimisers (all groups, the score network's included) and trains online as the official script does: no
seed phase, one update per step from the first stored episode. Evaluations run every ``eval_freq``
steps (default 5,000; the official config silently kept only the step-0 one).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial
from typing import Optional

import torch

from ..config import UserError, existing_path, require
from ..data.tdmpc2_dataset import tdmpc2_discount
from ..envs import make_env, make_multitask_env, observation_size
from ..modules import MBDPOWorldModel, WorldModelConfig
from .agent import build_loss_and_actor
from .checkpoint import CheckpointError, load_checkpoint
from .config import TrainConfig, from_container
from .trainer import MBDPOTrainer, make_trainer

__all__ = ["O2O_SOURCES", "FinetuneConfig", "add_task", "make_finetune_trainer"]

# The paper's offline-to-online targets and the pretraining task each starts from (offline_to_online.py:58-69).
O2O_SOURCES = {
    "walker-run": "walker-walk",
    "cheetah-run": "cheetah-run-backwards",
    "hopper-hop": "hopper-stand",
    "pendulum-swingup": "pendulum-spin",
    "reacher-hard": "reacher-easy",
    "mw-bin-picking": "mw-pick-place",
    "mw-box-close": "mw-assembly",
    "mw-door-lock": "mw-door-open",
    "mw-door-unlock": "mw-door-open",
    "mw-hand-insert": "mw-sweep-into",
}


@dataclass
class FinetuneConfig(TrainConfig):
    checkpoint: Optional[str] = None  # a multi-task checkpoint (mbdpo-train mode=offline ...)
    source_task: Optional[str] = None  # default: the paper's source of the task (O2O_SOURCES)
    task: str = "walker-run"
    steps: int = 40_000
    seed_steps: Optional[int] = 0
    pretrain_updates: Optional[int] = 0
    eval_freq: int = 5_000
    checkpoint_freq: int = 5_000

    def validate(self) -> None:
        """The run's rules (:meth:`TrainConfig.validate`) and a multi-task checkpoint to start from."""
        existing_path(
            self.checkpoint, "checkpoint", "a multi-task checkpoint, e.g. runs/offline/mbdpo/mt80/size5/seed1/checkpoints/latest.pt"
        )
        require(self.mode == "online", f"mbdpo-finetune trains online; got mode={self.mode}.")
        super().validate()

    def train_config(self, source: TrainConfig) -> TrainConfig:
        """The online run's config: this one, with the architecture and algorithm of the pretrained model."""
        own = {f.name: getattr(self, f.name) for f in fields(TrainConfig)}
        return TrainConfig(
            **{
                **own,
                "algo": source.algo,
                "model_size": source.model_size,
                "model": source.model,
                "obs": source.obs,
                "mode": "online",
                "data_dir": None,
                "cache_dir": None,
                "exclude_tasks": [],
            }
        )


def add_task(state_dict: dict, new_state_dict: dict, source_index: int, target_index: int) -> dict:
    """A multi-task state dict whose task ``target_index`` starts from the source task's embedding; the
    embedding table grows by one row if the target is a new index. Action masks and per-task discounts
    are the new model's."""
    out = dict(state_dict)
    for key, value in new_state_dict.items():
        if key not in out:
            continue
        if key.endswith("task_emb.weight"):
            table = out[key]
            if table.shape != value.shape:
                table = torch.cat([table, table[source_index : source_index + 1]])
            table = table.clone()
            table[target_index] = table[source_index]
            out[key] = table
        elif out[key].shape != value.shape:  # action_masks, discount: computed from the new task list
            out[key] = value
    return out


def make_finetune_trainer(cfg: FinetuneConfig) -> MBDPOTrainer:
    cfg.validate()
    state = load_checkpoint(cfg.checkpoint)
    names = state.get("task_names")
    if not names or "discounts" not in state:
        raise CheckpointError(
            f"{cfg.checkpoint} is a single-task checkpoint; fine-tuning starts from a multi-task one (mbdpo-train mode=offline ...)."
        )
    trained = state.get("trained_tasks") or names
    if cfg.task in trained:
        raise UserError(
            f"{cfg.task} was pretrained in {cfg.checkpoint}; evaluate it with "
            f"mbdpo-eval checkpoint={cfg.checkpoint} task={cfg.task}, or fine-tune on a task it has not seen."
        )
    source = cfg.source_task or O2O_SOURCES.get(cfg.task)
    if source not in trained:
        raise UserError(f"source_task={source!r} is not a task {cfg.checkpoint} was pretrained on; pass source_task=<one of {trained}>.")
    train_cfg = cfg.train_config(from_container(state["config"]))
    wm_cfg = WorldModelConfig.from_dict(state["world_model_config"])
    probe = make_env(cfg.task)
    obs_dim, action_dim, spec = observation_size(probe), probe.action_spec.shape[-1], probe.task_spec
    probe.close()
    # A task of the checkpoint's set that was not pretrained (held out, or absent from the data) keeps its
    # index; any other task gets a new one, as the official script's index 80.
    new_names = names if cfg.task in names else [*names, cfg.task]
    new_index = new_names.index(cfg.task)
    discounts = list(state["discounts"])
    if len(new_names) > len(names):
        wm_cfg.num_tasks += 1
        wm_cfg.action_dims = [*wm_cfg.action_dims, action_dim]
        discounts.append(tdmpc2_discount(spec.episode_length))
    world_model = MBDPOWorldModel(wm_cfg)
    loss, actor = build_loss_and_actor(train_cfg, world_model, torch.tensor(discounts))
    source_index = names.index(source)
    world_model.load_state_dict(add_task(state["world_model"], world_model.state_dict(), source_index, new_index))
    if "loss" in state:  # keeps the energy normalisation and policy-loss scale of pretraining
        loss.load_state_dict(add_task(state["loss"], loss.state_dict(), source_index, new_index))
    env_maker = partial(make_multitask_env, cfg.task, new_index, wm_cfg.obs_dim, wm_cfg.action_dim)
    if cfg.work_dir is None:
        train_cfg.work_dir = f"runs/finetune/{train_cfg.algo}/{cfg.task}/seed{cfg.seed}"
    print(
        f"fine-tuning {cfg.checkpoint} (step {state['step']}, {len(names)} tasks) on {cfg.task} (obs {obs_dim}, action {action_dim}) "
        f"from {source}'s embedding",
        flush=True,
    )
    return make_trainer(train_cfg, env_maker=env_maker, agent=(world_model, loss, actor), task_names=new_names)
