"""The PPO baseline of DMO's pixel experiments (``mbdpo-dmo ppo``): TorchRL's ``ClipPPOLoss`` with ``GAE`` on image
observations, trained inside the same learned world model as DMO (no simulator in the loop).

A TorchRL ``Collector`` rolls the stochastic policy out in :class:`~torchrl_mbdpo.dmo.diffusion_env.DiffusionWorldModelEnv`
(``num_envs`` imagined episodes of ``episode_steps`` steps from play-data contexts; the learned reward, standardised
on play data as for DMO): ``rollout_steps`` steps per env and iteration. GAE advantages, then ``ppo_epochs`` passes of
minibatch updates over the batch. Actor: a ``ProbabilisticActor`` with a ``TanhNormal`` on a conv net over the last
3 frames (``"observation"``, uint8 ``(9, H, W)``, the frames DMO's local model reads; in a state world model a tanh MLP
on the features of the last 3 states); critic: a ``ValueOperator`` on its own trunk.
Evaluation on the real Push-T env with the deterministic policy, as DMO
(:func:`~torchrl_mbdpo.dmo.policy_run.evaluate_on_pusht`, same seeds); ``eval.csv`` has DMO's columns, so the
comparison reads both alike. Checkpoints and ``resume=true`` as DMO's (the imagined episodes restart).
"""

from __future__ import annotations

import torch
from tensordict.nn import NormalParamExtractor, TensorDictModule
from torch import nn

from .config import PPOConfig
from .policy_run import PolicyRun

__all__ = ["PPOConfig", "PPOTrainer", "train_ppo"]


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


def _trunk(observation_shape, hidden: int) -> nn.Module:
    """Frames ``(C, H, W)``: :class:`_ConvTrunk`; state features ``(D,)``: a two-layer tanh MLP (PPO's usual)."""
    if len(observation_shape) == 3:
        return _ConvTrunk(observation_shape[0], observation_shape[-1], hidden)
    return nn.Sequential(nn.Linear(observation_shape[0], hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh())


class PPOTrainer(PolicyRun):
    """Runs the protocol of the module docstring (the shared run: :class:`~torchrl_mbdpo.dmo.policy_run.PolicyRun`);
    :meth:`train` returns the last ``eval.csv`` row."""

    kind, command = "dmo_pixel_ppo", "ppo"
    resume_fields = ("hidden", "num_envs", "rollout_steps")

    def build(self) -> None:
        from torchrl.collectors import Collector
        from torchrl.modules import ProbabilisticActor, TanhNormal, ValueOperator
        from torchrl.objectives import ClipPPOLoss
        from torchrl.objectives.value import GAE

        cfg = self.cfg
        A = self.global_world_model.cfg.action_dim
        observation = self.model_env.observation_spec["observation"].shape[1:]
        trunk = _trunk(observation, cfg.hidden)
        actor_net = nn.Sequential(trunk, nn.Linear(cfg.hidden, 2 * A), NormalParamExtractor())
        self.actor = ProbabilisticActor(
            TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
            in_keys=["loc", "scale"],
            spec=self.model_env.action_spec,
            distribution_class=TanhNormal,
            distribution_kwargs={"low": -1.0, "high": 1.0},
            return_log_prob=True,
        ).to(cfg.device)
        critic_net = nn.Sequential(_trunk(observation, cfg.hidden), nn.Linear(cfg.hidden, 1))
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
            self.model_env,
            self.actor,
            frames_per_batch=self.frames_per_batch,
            total_frames=-1,
            device=cfg.device,
            auto_register_policy_transforms=False,
        )
        self._batches = iter(self.collector)

    def train_iteration(self) -> dict:
        cfg = self.cfg
        batch = next(self._batches)  # [num_envs, rollout_steps]
        self.world_model_samples += batch.numel()
        self.model_steps += batch.numel()
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

    # ------------------------------------------------------------------ the shared run's hooks
    def policy(self):
        return self.actor

    def model_state(self) -> dict:
        return {"loss": self.loss.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_model_state(self, state: dict, path) -> None:
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])

    def postfix(self, metrics: dict) -> dict:
        return {"loss": f"{metrics['loss']:.3g}"}

    def close(self) -> None:
        self.collector.shutdown()


def train_ppo(cfg: PPOConfig) -> PPOTrainer:
    trainer = PPOTrainer(cfg)
    trainer.train()
    return trainer
