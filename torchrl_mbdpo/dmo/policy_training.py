"""DMO-SAPO inside the learned world model of Push-T (``mbdpo-dmo policy``): no simulator in the loop. The same run
works in a pixel world model (frames, the local model's pixel encoder) and in a state world model
(:mod:`~torchrl_mbdpo.dmo.state_model`: the features of the last 3 states, the local model's state encoder): the
world model checkpoint says which.

- **Global model** (the forward pass): :class:`~torchrl_mbdpo.dmo.diffusion_env.DiffusionWorldModelEnv`, the
  trained diffusion world model as a batched TorchRL env (``num_envs`` imagined episodes of ``episode_steps``
  steps, restarted from play-data contexts when they end), whose reward is the learned one (a
  ``mbdpo-dmo reward`` checkpoint: the contrastive energy, or the real-env-reward regression: that choice is the
  reward switch), driven through :class:`~torchrl_mbdpo.dmo.decoupled.EnvGlobalModel`.
- **Local model** (the gradients): the library's world model with its pixel encoder (``obs_type="rgb"``, the
  last 3 frames stacked), latent dynamics and two-hot reward head, pre-trained for ``pretrain_updates`` steps on
  the play data (one-step latent consistency + the learned reward of each transition) and fine-tuned during
  policy optimisation on the global model's transitions and on play-data batches.
- **Policy**: :class:`~torchrl_mbdpo.dmo.loss.DMOLoss` (SAPO actor on the latent, soft TD(lambda) critic,
  learned temperature) on ``H = horizon``-step rollouts of :meth:`DMOLoss.rollout`: values from the global
  model, Jacobians from the local one (the gradient swap ``sg(g) + l - sg(l)``).
- ``forward=local`` is the paper's "No Diffusion" ablation: the local model makes the forward pass too
  (pure latent imagination from play-data start frames; no diffusion sample is drawn, and the local model is
  fine-tuned on the play data only).

Evaluation on the **real** Push-T env (``make_pusht_env``, frames stacked as the local model reads them) with the
deterministic policy: ``eval_episodes`` episodes of ``eval_steps`` steps every ``eval_freq`` iterations; ``eval.csv``
holds the success rate (gym-pusht's own test) and the return against the world-model samples drawn so far
(``world_model_samples``: diffusion samples; ``model_steps``: imagined transitions of either model) and the
wall time. ``checkpoints/latest.pt`` every ``checkpoint_freq`` iterations and at the end; ``resume=true``
continues from it (the imagined episodes restart, so not bit-identical); SIGTERM/SIGINT stop after the
iteration with a checkpoint.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate
from tqdm.auto import tqdm

from .config import FORWARDS, PixelDMOConfig
from .policy_run import OBSERVATION_FRAMES, PolicyRun, evaluate_on_pusht

__all__ = ["FORWARDS", "PixelDMOConfig", "PixelDMOTrainer", "train_pixel_dmo", "evaluate_on_pusht"]


class PixelDMOTrainer(PolicyRun):
    """Runs the protocol of the module docstring (the shared run: :class:`~torchrl_mbdpo.dmo.policy_run.PolicyRun`);
    :meth:`train` returns the last ``eval.csv`` row."""

    kind, command = "dmo_pixel_policy", "policy"
    resume_fields = ("forward", "num_envs", "horizon")

    def run_name(self) -> str:
        return self.cfg.forward

    def build(self) -> None:
        from ..modules import MBDPOWorldModel, WorldModelConfig
        from .decoupled import EnvGlobalModel
        from .loss import DMOLoss

        cfg = self.cfg
        self.global_model = EnvGlobalModel(self.model_env) if cfg.forward == "diffusion" else None
        wm_cfg = WorldModelConfig.from_size(
            1,
            self.model_env.observation_spec["observation"].shape[1],  # 3 stacked frames' channels, or 3 states' features
            self.global_world_model.cfg.action_dim,
            obs_type="rgb" if self.obs == "pixels" else "state",
            latent_dim=cfg.latent_dim,
            mlp_dim=cfg.mlp_dim,
            enc_dim=cfg.enc_dim,
        )
        self.local_model = MBDPOWorldModel(wm_cfg).to(cfg.device)
        self.loss = DMOLoss(
            self.local_model,
            discount=cfg.discount,
            lmbda=cfg.lmbda,
            alpha_init=cfg.alpha_init,
            decoupled=cfg.forward == "diffusion",
            log_std_min=-5.0,
            log_std_max=2.0,
        ).to(cfg.device)
        groups = self.loss.parameter_groups()
        lrs = {"actor": cfg.actor_lr, "critic": cfg.critic_lr, "alpha": cfg.alpha_lr, "local_model": cfg.local_model_lr}
        self.optimizers = {name: torch.optim.Adam(groups[name], lr=lr) for name, lr in lrs.items()}
        self.target_updater = SoftUpdate(self.loss, tau=cfg.tau)
        self.train_rows = self.dataset.transition_rows(self.dataset.split(0)[0])
        self.pretrained = False
        self.pretrain_done = 0  # local-model updates of the pre-training made so far

    # ------------------------------------------------------------------ data
    def _play_batch(self, n: int) -> TensorDict:
        """Play-data transitions as the local model reads them: the last 3 frames (states) before and after ``a_t``, and
        the learned reward of the transition (start: the episode's first observation)."""
        key, observe = self.obs, self.global_world_model.policy_observation
        rows = self.train_rows[torch.randint(len(self.train_rows), (n,), generator=self.generator)]
        w = self.dataset.windows(rows, OBSERVATION_FRAMES, key)
        start = self.dataset.rows[key][self.dataset.episode_start[self.dataset.rows["episode"][rows]]]
        reward = self.reward_fn(TensorDict({key: w["target"], f"start_{key}": start}, batch_size=[n]))
        next_frames = torch.cat([w["frames"][:, 1:], w["target"][:, None]], 1)
        return TensorDict(
            {
                "observation": observe(w["frames"]),
                "action": w["actions"][:, -1],
                "next_observation": observe(next_frames),
                "reward": reward,
            },
            batch_size=[n],
        ).to(self.cfg.device)

    def _step(self, name: str, loss: torch.Tensor, clip: float | None) -> bool:
        from .trainer import guarded_optimizer_step

        return guarded_optimizer_step(self.optimizers[name], loss, clip)

    def local_model_step(self, batch: TensorDict) -> float:
        loss, _, _ = self.loss.local_model_loss(batch["observation"], batch["action"], batch["next_observation"], batch["reward"])
        self._step("local_model", loss, self.cfg.grad_clip_norm)
        return loss.item()

    def pretrain(self) -> None:
        """The local model's pre-training on play data; a stop request ends it after the current update (the count made
        is saved, and a resume makes the rest)."""
        total, quiet = self.cfg.pretrain_updates, not self.cfg.progress
        with tqdm(total=total, initial=self.pretrain_done, desc="local model on play data", disable=quiet, leave=False) as bar:
            while self.pretrain_done < total and not self.control.stop_requested:
                self.local_model_step(self._play_batch(self.cfg.batch_size))
                self.pretrain_done += 1
                bar.update()
        self.pretrained = self.pretrain_done >= total

    # ------------------------------------------------------------------ one iteration
    def rollout(self):
        """An ``H``-step rollout: forward through the diffusion env (DMO) or the local model (No Diffusion)."""
        from .decoupled import decoupled_rollout
        from .loss import _detached_call

        cfg = self.cfg
        if self.global_model is not None:
            td = self.loss.rollout(self.global_model, cfg.horizon)
            self.world_model_samples += cfg.num_envs * cfg.horizon
        else:
            wm = self.local_model
            frames = self.sampler(cfg.num_envs)["frames"][:, -OBSERVATION_FRAMES:]
            obs0 = self.global_world_model.policy_observation(frames).to(cfg.device)
            with torch.no_grad():
                z0 = wm.encode_obs(obs0)
            out = decoupled_rollout(
                z0,
                self.loss.policy,
                None,
                encode=wm.encode_obs,
                local_next=lambda z, a: _detached_call(wm.dynamics.module, z, a),
                local_reward=lambda z, a: wm.decode_reward(_detached_call(wm.reward_head.module, z, a)),
                horizon=cfg.horizon,
                decoupled=False,
            )
            td = self.loss.rollout_to_tensordict(out)
        self.model_steps += cfg.num_envs * cfg.horizon
        return td

    def train_iteration(self) -> dict:
        cfg, loss = self.cfg, self.loss
        td = self.rollout()
        actor_loss = loss.actor_loss(td)
        self._step("actor", actor_loss, cfg.grad_clip_norm)
        td = td.detach()
        critic_loss = torch.zeros(())
        for _ in range(cfg.critic_updates):
            critic_loss = loss.critic_loss(td)
            self._step("critic", critic_loss, cfg.grad_clip_norm)
        self._step("alpha", loss.alpha_loss(td), None)
        self.target_updater.step()
        local = []
        k = loss.tensor_keys
        if k.observation in td.keys(True) and k.global_reward in td.keys(True):  # the diffusion env's transitions
            global_batch = TensorDict(
                {
                    "observation": td[k.observation].flatten(0, 1),
                    "action": td[k.action].flatten(0, 1),
                    "next_observation": td[k.next_observation].flatten(0, 1),
                    "reward": td[k.global_reward].flatten(0, 1),
                },
                batch_size=[td.numel()],
            )
            local.append(self.local_model_step(global_batch))
        for _ in range(cfg.local_model_updates):
            local.append(self.local_model_step(self._play_batch(cfg.batch_size)))
        self.iteration += 1
        return {
            "loss_actor": actor_loss.item(),
            "loss_critic": critic_loss.item(),
            "alpha": loss.alpha.item(),
            "rollout_reward": td["next", "reward"].mean().item(),
            "loss_local_model": sum(local) / max(len(local), 1),
        }

    # ------------------------------------------------------------------ the shared run's hooks
    def policy(self):
        from .trainer import dmo_policy_module

        return dmo_policy_module(self.loss, deterministic=True)

    def model_state(self) -> dict:
        return {
            "loss": self.loss.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "pretrained": self.pretrained,
            "pretrain_done": self.pretrain_done,
            "local_model_config": self.local_model.cfg.to_dict(),
        }

    def load_model_state(self, state: dict, path) -> None:
        from ..trainers.checkpoint import check_compatible

        check_compatible(state["local_model_config"], self.local_model.cfg.to_dict(), "local model", path)
        self.loss.load_state_dict(state["loss"])
        for k, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][k])
        self.pretrained = state["pretrained"]
        self.pretrain_done = state.get("pretrain_done", self.cfg.pretrain_updates if self.pretrained else 0)

    def before_training(self) -> None:
        if not self.pretrained:
            self.pretrain()

    def postfix(self, metrics: dict) -> dict:
        return {"actor": f"{metrics['loss_actor']:.3g}"}


def train_pixel_dmo(cfg: PixelDMOConfig) -> PixelDMOTrainer:
    trainer = PixelDMOTrainer(cfg)
    trainer.train()
    return trainer
