"""The policy prior as a TensorDict policy, to evaluate it on its own beside the planner."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.nn.probabilistic import InteractionType, interaction_type

__all__ = ["PolicyPriorActor"]


class PolicyPriorActor(TensorDictModuleBase):
    """Acts with the world model's Gaussian-tanh prior: ``tanh(mu)`` when deterministic, a sample otherwise."""

    def __init__(self, world_model, observation_key="observation"):
        super().__init__()
        self.world_model = world_model
        self.observation_key = observation_key
        self.in_keys = [observation_key] + (["task"] if world_model.cfg.multitask else [])
        self.out_keys = ["action"]

    @torch.no_grad()
    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        wm = self.world_model
        task = tensordict.get("task") if wm.cfg.multitask else None
        sample = wm.pi(wm.encode_obs(tensordict.get(self.observation_key), task), task)
        deterministic = interaction_type() in (InteractionType.DETERMINISTIC, InteractionType.MODE, InteractionType.MEAN)
        tensordict.set("action", sample.mean if deterministic else sample.action)
        return tensordict
