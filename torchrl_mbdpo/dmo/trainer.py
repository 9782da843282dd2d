"""Online DMO-SAPO training (``mbdpo-dmo train``): first-order policy optimisation through coupled global and
local world models (:class:`~torchrl_mbdpo.dmo.loss.DMOLoss`).

Protocol (all counts in agent steps of the REAL env, ``steps`` included, as for the other algorithms; the
last iteration may overshoot ``steps`` by less than ``H * num_envs``):

1. seed phase: ``seed_steps`` random actions on the batched env (``num_envs`` copies); the transitions
   fill a replay buffer of single transitions (``TensorDictReplayBuffer`` + ``RandomSampler``), then the
   local model (encoder, latent dynamics, reward head) is pre-trained for ``pretrain_updates`` steps of
   :meth:`DMOLoss.local_model_loss` (and, with ``forward_model=learned``, the learned global model too);
2. each iteration:

   - ``forward_model=sim``: one ``H = horizon`` step rollout of the current (stochastic) policy on the
     global model, an :class:`~torchrl_mbdpo.dmo.decoupled.EnvGlobalModel` over the batched real env
     (its episodes carry on across iterations and restart when they end); the rollout's real transitions
     enter the replay buffer: ``H * num_envs`` env steps per iteration;
   - ``forward_model=learned``: the global model is :class:`~torchrl_mbdpo.dmo.learned_model_env.LearnedGlobalEnv`
     (an MLP ``(o, a) -> (o' - o, r)`` trained by MSE on the replay data, ``learned_updates`` steps per
     iteration), wrapped by the same ``EnvGlobalModel``; the real env only collects data: the current
     policy runs ``collect_steps`` steps on it per iteration (default ``H``; ``collect_steps * num_envs``
     REAL env steps, the only ones counted in ``steps``; the model's rollouts are free, so fewer real steps
     per iteration mean more policy updates per real step);
   - actor step on the rollout (backpropagation through time, decoupled gradients), ``critic_updates``
     critic steps and one temperature step on the detached rollout, a Polyak update of the target critic
     (``tau``), then ``local_model_updates`` local-model steps on replay batches (``batch_size``
     transitions): the local model is fine-tuned on the data of the current policy.
     ``decoupled=false`` (ablation): the rollout's forward pass is the local model's imagination
     from the real start state; the real env is still stepped with the imagined actions, for the data.

Evaluation at step 0, every ``eval_freq`` steps and at the end on a separate env with the deterministic
policy (``tanh`` of the actor's mean), ``eval_episodes`` episodes; rows in ``<work_dir>/eval.csv`` (+ eval.png;
the planner-only columns stay empty). Checkpoints (``checkpoints/latest.pt``) every ``checkpoint_freq``
steps and at the end hold the models, optimisers, replay buffer and counters; ``resume=true`` continues from
one (the envs restart fresh episodes, so a resumed run is not bit-identical to an uninterrupted one).
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import LazyTensorStorage, RandomSampler, TensorDictReplayBuffer
from torchrl.objectives import SoftUpdate
from torchrl.record.loggers import get_logger
from tqdm.auto import tqdm

from ..envs import make_env, observation_size
from ..modules import MBDPOWorldModel, WorldModelConfig
from ..trainers.checkpoint import CheckpointError, load_checkpoint
from ..trainers.config import default_work_dir, from_container, to_container
from ..trainers.evaluation import EvalLog, episode_success, evaluate, evaluation_seeds, truncate_csv_logs
from ..trainers.run_control import RunControl, RunInterrupted, run_to_resume
from ..trainers.run_control import rng_state as _rng_state
from ..trainers.run_control import set_rng_state as _set_rng_state
from .config import FORWARD_MODELS, DMOTrainConfig
from .decoupled import EnvGlobalModel
from .learned_model_env import LearnedGlobalEnv, ObservationModel
from .loss import DMOLoss

__all__ = ["FORWARD_MODELS", "DMOPolicy", "DMOTrainer", "make_dmo_trainer", "make_dmo_loss", "local_world_model", "load_dmo_policy"]

# What the replay buffer keeps of each transition.
REPLAY_KEYS = ["observation", "action", ("next", "observation"), ("next", "reward"), ("next", "done"), ("next", "terminated")]


def guarded_optimizer_step(optimizer, loss: torch.Tensor, clip: float | None) -> bool:
    """One step of ``optimizer`` on ``loss``, gradients clipped to ``clip`` (``None``: not clipped); a non-finite loss
    or gradient norm skips the step, leaving no gradient behind (returns False)."""
    optimizer.zero_grad(set_to_none=True)
    if not torch.isfinite(loss):
        return False
    loss.backward()
    params = [p for group in optimizer.param_groups for p in group["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, clip if clip is not None else math.inf)
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        return False
    optimizer.step()
    return True


class DMOPolicy(nn.Module):
    """``observation -> action`` of a :class:`DMOLoss`'s actor (encode, then the policy); ``deterministic``:
    ``tanh`` of the mean. Wrapped as ``TensorDictModule(DMOPolicy(loss), ["observation"], ["action"])`` it is
    a TorchRL policy (``env.rollout(n, policy)``)."""

    def __init__(self, loss: DMOLoss, deterministic: bool = True):
        super().__init__()
        self.loss = loss
        self.deterministic = deterministic

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        z = self.loss.world_model.encode_obs(observation)
        return self.loss.policy(z, deterministic=self.deterministic)[0]


def dmo_policy_module(loss: DMOLoss, deterministic: bool = True) -> TensorDictModule:
    """The DMO actor as a TorchRL policy: ``"observation"`` -> ``"action"``."""
    return TensorDictModule(DMOPolicy(loss, deterministic), in_keys=["observation"], out_keys=["action"])


def make_dmo_loss(cfg: DMOTrainConfig, world_model: MBDPOWorldModel, discount: float) -> DMOLoss:
    return DMOLoss(
        world_model,
        discount=cfg.discount if cfg.discount is not None else discount,
        lmbda=cfg.lmbda,
        alpha_init=cfg.alpha_init,
        target_entropy=cfg.target_entropy,
        decoupled=cfg.decoupled,
        log_std_min=cfg.log_std_min,
        log_std_max=cfg.log_std_max,
        consistency_coef=cfg.consistency_coef,
        reward_coef=cfg.reward_coef,
    ).to(cfg.device)


def _replay_buffer(capacity: int) -> TensorDictReplayBuffer:
    """Single transitions, sampled uniformly (``rb.sample(n)``)."""
    return TensorDictReplayBuffer(storage=LazyTensorStorage(max(1, capacity)), sampler=RandomSampler())


class DMOTrainer:
    """Runs the protocol of the module docstring; build it with :func:`make_dmo_trainer`."""

    def __init__(
        self,
        cfg: DMOTrainConfig,
        *,
        env,
        eval_env,
        world_model: MBDPOWorldModel,
        loss: DMOLoss,
        work_dir,
        learned_model: ObservationModel | None = None,
        capacity: int | None = None,
    ):
        self.cfg = cfg
        self.env, self.eval_env, self.world_model, self.loss_module = env, eval_env, world_model, loss
        self.task_spec = env.task_spec
        self.work_dir = Path(work_dir)
        self.device = torch.device(cfg.device)
        groups = loss.parameter_groups()
        lrs = {"actor": cfg.actor_lr, "critic": cfg.critic_lr, "alpha": cfg.alpha_lr, "local_model": cfg.local_model_lr}
        self.optimizers = {name: torch.optim.Adam(groups[name], lr=lr) for name, lr in lrs.items()}
        self.param_groups = groups
        self.target_updater = SoftUpdate(loss, tau=cfg.tau)  # also copies the critic into its target
        # Capacity min(buffer_size, steps), fixed by the run's first config (a resumed run keeps its buffer).
        capacity = min(cfg.buffer_size, max(cfg.steps, 1)) if capacity is None else capacity
        self.capacity = int(capacity)
        self.replay_buffer = _replay_buffer(capacity)
        self.start_buffer = _replay_buffer(min(capacity, 100_000))  # observations that started an episode
        self.learned_model = learned_model
        if learned_model is not None:
            self.optimizers["learned_model"] = torch.optim.Adam(learned_model.parameters(), lr=cfg.learned_lr)
        self.eval_policy = dmo_policy_module(loss, deterministic=True)
        self.eval_log = EvalLog(
            self.work_dir, title=f"dmo ({cfg.forward_model}{'' if cfg.decoupled else ', no decoupling'}) {cfg.task} (seed {cfg.seed})"
        )
        self.logger = get_logger(cfg.logger, logger_name=str(self.work_dir / "logs"), experiment_name="dmo")
        self.control = RunControl(self.work_dir, cfg.checkpoint_freq, self.checkpoint_state, unit="agent steps", threads=cfg.threads)
        self.env_steps = 0
        self.iterations = 0
        self.pretrained = False
        self.pretrain_done = 0  # local-model updates of the pretraining made so far
        self._next_eval = cfg.eval_freq
        self._next_ckpt = cfg.checkpoint_freq
        self._normalizer_size = 0
        self.skipped_in_a_row = 0
        self.skipped_total = 0
        self.last_eval: dict = {}
        self.stop_message = ""
        self._train_returns: list[float] = []
        self._t0 = time.time()
        self._start_envs()

    # ----------------------------------------------------------------- envs and data
    def _start_envs(self) -> None:
        """(Re)start the training envs: the real env's global-model wrapper (and the learned model's env)."""
        self.env.set_seed(self.cfg.seed + 7919 * self.env_steps)
        self.real = EnvGlobalModel(self.env, record=True)
        self.learned_env = self.learned = None
        if self.learned_model is not None:
            self.learned_env = LearnedGlobalEnv(
                self.learned_model,
                self._sample_start_observations,
                batch_size=self.cfg.num_envs,
                action_dim=self.world_model.cfg.action_dim,
                max_episode_steps=self.task_spec.episode_length,
                device=self.device,
            )
            self.learned = None  # created once the buffer holds data (its reset samples from it)

    @property
    def global_model(self) -> EnvGlobalModel:
        """The global model of the rollouts: the real env (sim) or the learned model's env (learned)."""
        if self.learned_model is None:
            return self.real
        if self.learned is None:
            self.learned = EnvGlobalModel(self.learned_env)
        return self.learned

    def _sample_start_observations(self, n: int) -> torch.Tensor:
        buffer = self.start_buffer if self.cfg.learned_reset == "start" and len(self.start_buffer) else self.replay_buffer
        if not len(buffer):
            raise RuntimeError("LearnedGlobalEnv reset before any real data was collected.")
        return buffer.sample(n)["observation"].to(self.device)

    def _store(self, transitions: TensorDictBase | None) -> None:
        """Real transitions (``[B, T]`` or ``[T]``) -> the replay buffer (non-finite ones are dropped)."""
        if transitions is None:
            return
        flat = transitions.reshape(-1)
        done = flat.get(("next", "done")).reshape(-1)
        if done.any() and ("next", "episode_reward") in flat.keys(True):
            self._train_returns.extend(flat.get(("next", "episode_reward")).reshape(-1)[done].tolist())
        if "is_init" in flat.keys():
            starts = flat.get("is_init").reshape(-1)
            if starts.any():
                self.start_buffer.extend(flat[starts].select("observation").clone())
        data = flat.select(*REPLAY_KEYS).clone()
        finite = torch.ones(data.shape[0], dtype=torch.bool)
        for key in ("observation", ("next", "observation"), ("next", "reward")):
            finite &= torch.isfinite(data.get(key).reshape(data.shape[0], -1)).all(-1)
        if not finite.all():
            warnings.warn(f"Dropped {int((~finite).sum())} transition(s) with a non-finite observation or reward.", stacklevel=2)
            data = data[finite]
        if data.shape[0]:
            self.replay_buffer.extend(data)

    def _sample(self) -> TensorDictBase:
        return self.replay_buffer.sample(self.cfg.batch_size).to(self.device)

    # ----------------------------------------------------------------- optimisation
    def _optim_step(self, name: str, loss: torch.Tensor, clip: float | None) -> bool:
        return guarded_optimizer_step(self.optimizers[name], loss, clip)

    def local_model_step(self) -> dict:
        batch = self._sample()
        loss, consistency, reward_ce = self.loss_module.local_model_loss(
            batch["observation"], batch["action"], batch["next", "observation"], batch["next", "reward"]
        )
        self._optim_step("local_model", loss, self.cfg.model_grad_clip_norm)
        return {"loss_local_model": loss.item(), "local_consistency": consistency.item(), "local_reward_ce": reward_ce.item()}

    def learned_model_step(self) -> dict:
        batch = self._sample()
        loss = self.learned_model.loss(batch["observation"], batch["action"], batch["next", "observation"], batch["next", "reward"])
        self._optim_step("learned_model", loss, self.cfg.model_grad_clip_norm)
        return {"loss_learned_model": loss.item()}

    def _fit_learned_normalizer(self, force: bool = False) -> None:
        """Refit the learned model's normalisation whenever the data has doubled (on up to 100k transitions)."""
        size = len(self.replay_buffer)
        if self.learned_model is None or not size or not (force or size >= 2 * self._normalizer_size):
            return
        data = self.replay_buffer.sample(min(size, 100_000)).to(self.device)
        self.learned_model.fit_normalizer(data["observation"], data["next", "observation"], data["next", "reward"])
        self._normalizer_size = size

    def policy_update(self, rollout: TensorDictBase) -> dict:
        """Actor step (BPTT through the rollout), ``critic_updates`` critic steps, one temperature step and
        the target critic's Polyak update."""
        loss, cfg = self.loss_module, self.cfg
        actor_loss = loss.actor_loss(rollout)
        actor_ok = self._optim_step("actor", actor_loss, cfg.grad_clip_norm)
        rollout = rollout.detach()
        critic_loss = torch.zeros(())
        for _ in range(cfg.critic_updates):
            critic_loss = loss.critic_loss(rollout)
            self._optim_step("critic", critic_loss, cfg.grad_clip_norm)
        alpha_loss = loss.alpha_loss(rollout)
        self._optim_step("alpha", alpha_loss, None)
        self.target_updater.step()
        if actor_ok:
            self.skipped_in_a_row = 0
        else:
            self.skipped_in_a_row += 1
            self.skipped_total += 1
        return {
            "loss_actor": actor_loss.item(),
            "loss_critic": critic_loss.item(),
            "loss_alpha": alpha_loss.item(),
            "alpha": loss.alpha.item(),
            "entropy": (-rollout["action_log_prob"]).mean().item(),
            "rollout_reward": rollout["next", "reward"].mean().item(),
        }

    # ----------------------------------------------------------------- phases
    def seed_phase(self) -> None:
        """Random actions for ``seed_steps`` env steps (rounded up to whole batched steps, at most ``steps``)."""
        B = self.real.batch_size
        target = min(self.cfg.seed_steps, self.cfg.steps)
        with torch.no_grad():
            while self.env_steps < target and not self._stop:
                self.real(self.env.action_spec.rand().reshape(B, -1).to(self.device))
                self.env_steps += B
                self._pbar_update(B)
        self._store(self.real.pop_transitions())

    def pretrain(self) -> None:
        cfg = self.cfg
        self._fit_learned_normalizer(force=True)
        metrics = {}
        updates = cfg.pretrain_updates if len(self.replay_buffer) else 0  # seed_steps=0: nothing to pretrain on
        bar = tqdm(total=updates, initial=self.pretrain_done, desc="pretraining on seed data", disable=not self.cfg.progress, leave=False)
        with bar:
            while self.pretrain_done < updates and not self._stop:
                metrics = self.local_model_step()
                if self.learned_model is not None:
                    metrics.update(self.learned_model_step())
                self.pretrain_done += 1
                bar.update()
        self.pretrained = self.pretrain_done >= updates
        self._log(metrics)

    def collect_real(self) -> None:
        """``forward_model=learned``: ``collect_steps`` (default ``H``) steps of the current stochastic policy on
        the real env, into the buffer."""
        B, wm, cfg = self.real.batch_size, self.world_model, self.cfg
        with torch.no_grad():
            for _ in range(cfg.collect_steps or cfg.horizon):
                z = wm.encode_obs(self.real.observation.to(self.device))
                self.real(self.loss_module.policy(z)[0])
                self.env_steps += B
        self._store(self.real.pop_transitions())

    def iteration(self) -> dict:
        """One DMO iteration (see the module docstring); returns its metrics."""
        cfg, metrics = self.cfg, {}
        self.control.pin_threads()
        before = self.env_steps
        if self.learned_model is not None:
            self.collect_real()
            self._fit_learned_normalizer()
            for _ in range(cfg.learned_updates):
                metrics.update(self.learned_model_step())
            rollout = self.loss_module.rollout(self.global_model, cfg.horizon)
        else:
            rollout = self.loss_module.rollout(self.real, cfg.horizon)
            self.env_steps += self.real.batch_size * cfg.horizon
            self._store(self.real.pop_transitions())
        metrics.update(self.policy_update(rollout))
        for _ in range(cfg.local_model_updates):
            metrics.update(self.local_model_step())
        self.iterations += 1
        self._pbar_update(self.env_steps - before)
        return metrics

    # ----------------------------------------------------------------- bookkeeping
    @property
    def _stop(self) -> bool:
        """A stop was requested (a signal) or the run must stop (non-finite updates)."""
        return self.control.stop_requested or bool(self.stop_message)

    def _pbar_update(self, n: int) -> None:
        if self._pbar is not None:
            self._pbar.update(n)

    def _log(self, metrics: dict) -> None:
        if self.logger is not None:
            for k, v in metrics.items():
                self.logger.log_scalar(f"train/{k}", v, step=self.env_steps)

    def _evaluate_if_due(self) -> None:
        if self.env_steps >= self._next_eval and not self._stop:
            try:
                with self.control.in_phase("eval"):
                    self.run_evaluation()
            except RunInterrupted:
                return  # abandoned: the checkpoint written on stop still owes it
            self._next_eval = (self.env_steps // self.cfg.eval_freq + 1) * self.cfg.eval_freq

    def _checkpoint_if_due(self) -> None:
        if self.env_steps >= self._next_ckpt:
            self._next_ckpt = (self.env_steps // self.cfg.checkpoint_freq + 1) * self.cfg.checkpoint_freq
            self.save_checkpoint()

    def _too_many_nonfinite(self) -> bool:
        if self.skipped_in_a_row >= self.cfg.max_nonfinite:
            self.stop_message = (
                f"Stopped at step {self.env_steps}: {self.skipped_in_a_row} actor updates in a row had a non-finite loss or "
                "gradient (they were skipped; the checkpoint holds the last finite parameters). Lower actor_lr or "
                "horizon, or check the rewards/observations for NaN or huge values."
            )
            return True
        return False

    # ----------------------------------------------------------------- public
    def train(self) -> int:
        """Seed phase, pretraining and DMO iterations until ``steps`` env steps, then the final evaluation; a
        signal stops it after the current step with a checkpoint (:class:`~.run_control.RunControl`). Returns the
        exit code."""
        control = self.control
        self._pbar = tqdm(total=self.cfg.steps, initial=self.env_steps, desc="dmo", disable=not self.cfg.progress)
        with control.handle_signals(), self._pbar:
            if self.env_steps == 0 and not self.last_eval:
                self._next_eval = 0  # the step-0 evaluation
                self._evaluate_if_due()
            if not self.pretrained:
                control.enter("seed")
                self.seed_phase()
                self._evaluate_if_due()
                if not self._stop:
                    control.enter("pretrain")
                    self.pretrain()
            control.enter("train")
            while self.env_steps < self.cfg.steps and not self._stop:
                metrics = self.iteration()
                if self._train_returns:
                    metrics["train_return"] = sum(self._train_returns) / len(self._train_returns)
                    self._train_returns.clear()
                self._log(metrics)
                last_return = float(self.last_eval.get("episode_reward", math.nan))
                self._pbar.set_postfix(actor=f"{metrics['loss_actor']:.3g}", eval=f"{last_return:.1f}", refresh=False)
                if self._too_many_nonfinite():
                    break
                self._evaluate_if_due()
                if not self._stop:
                    self._checkpoint_if_due()
            evaluated = int(float(self.last_eval.get("step", -1))) == self.env_steps  # (csv rows after a resume)
            control.finish(
                self.env_steps,
                complete=self.env_steps >= self.cfg.steps and self.pretrained,
                final_eval=None if evaluated else self.run_evaluation,
                reason=self.stop_message,
            )
        self._pbar = None
        if control.stop_requested:
            self.stop_message = control.stop_message
        if self.stop_message:
            print(self.stop_message, flush=True)
        return control.exit_code

    _pbar = None

    def run_evaluation(self) -> dict:
        """Deterministic-policy returns on the eval env, seeded by ``(seed, step)`` and isolated from training RNGs."""
        step, n = self.env_steps, self.cfg.eval_episodes
        seeds = evaluation_seeds(self.cfg.seed, step)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seeds.torch)
            self.eval_env.set_seed(seeds.env)
            played = []
            returns = evaluate(
                self.eval_env, self.eval_policy, n, self.task_spec.episode_length, transitions=played, check=self.control.check
            )
            returns = torch.tensor(returns)
        played = torch.cat([td.reshape(-1) for td in played])
        row = {
            "step": step,
            "episode_reward": returns.mean().item(),
            "episode_reward_std": returns.std(unbiased=False).item(),
            "episode_success": episode_success(played),
            "env_steps": step * self.task_spec.action_repeat,
            "wall_time_s": round(time.time() - self._t0, 1),
        }
        self.eval_log.append(row)
        self.last_eval = row
        if self.logger is not None:
            self.logger.log_scalar("eval/episode_reward", row["episode_reward"], step=step)
        return row

    def checkpoint_state(self) -> dict:
        return {
            "algo": "dmo",
            "policy_loader": f"{__name__}:load_dmo_policy",  # how mbdpo-eval loads the policy
            "config": to_container(self.cfg),
            "task": {**dataclasses.asdict(self.task_spec), "discount": self.task_spec.discount},
            "world_model_config": self.world_model.cfg.to_dict(),
            "step": self.env_steps,
            "world_model": self.world_model.state_dict(),
            "loss": self.loss_module.state_dict(),
            "learned_model": self.learned_model.state_dict() if self.learned_model is not None else None,
            "optimizers": {name: optim.state_dict() for name, optim in self.optimizers.items()},
            "replay_buffer": self.replay_buffer.state_dict(),
            "buffer_capacity": self.capacity,
            "start_buffer": self.start_buffer.state_dict(),
            "trainer": {
                "next_eval": self._next_eval,
                "next_ckpt": self._next_ckpt,
                "pretrained": self.pretrained,
                "pretrain_done": self.pretrain_done,
                "iterations": self.iterations,
                "normalizer_size": self._normalizer_size,
                "skipped_total": self.skipped_total,
                "wall_time_s": time.time() - self._t0,
            },
            "rng": _rng_state(),
        }

    def save_checkpoint(self) -> Path | None:
        """Write the run state to ``<work_dir>/checkpoints/latest.pt`` (a failed write warns, training goes on)."""
        return self.control.save()

    def load_state(self, state: dict) -> None:
        """Continue from a checkpoint of :meth:`save_checkpoint` (fresh env episodes, see the module docstring)."""
        self.world_model.load_state_dict(state["world_model"])
        self.loss_module.load_state_dict(state["loss"])
        if self.learned_model is not None:
            self.learned_model.load_state_dict(state["learned_model"])
        for name, optim in self.optimizers.items():
            optim.load_state_dict(state["optimizers"][name])
        self.replay_buffer.load_state_dict(state["replay_buffer"])
        self.start_buffer.load_state_dict(state["start_buffer"])
        t = state["trainer"]
        self.env_steps = state["step"]
        self._next_eval, self._next_ckpt, self.pretrained = t["next_eval"], t["next_ckpt"], t["pretrained"]
        self.pretrain_done = t.get("pretrain_done", self.cfg.pretrain_updates if self.pretrained else 0)
        self.iterations, self._normalizer_size, self.skipped_total = t["iterations"], t["normalizer_size"], t["skipped_total"]
        self._t0 = time.time() - t.get("wall_time_s", 0.0)  # wall_time_s of eval.csv goes on from the checkpoint's
        truncate_csv_logs(self.work_dir, self.env_steps)
        rows = self.eval_log.rows()
        self.last_eval = rows[-1] if rows else {}
        _set_rng_state(state["rng"])
        self._start_envs()


def local_world_model(cfg: DMOTrainConfig, obs_dim: int, action_dim: int, episodic: bool) -> MBDPOWorldModel:
    """The local latent model: the encoder, latent dynamics and reward head of an
    :class:`~torchrl_mbdpo.modules.MBDPOWorldModel` of size ``model_size`` (its planner heads stay unused)."""
    return MBDPOWorldModel(WorldModelConfig.from_size(cfg.model_size, obs_dim, action_dim, episodic=episodic, **cfg.model.as_kwargs()))


def make_dmo_trainer(cfg: DMOTrainConfig) -> DMOTrainer:
    """Envs, local world model, :class:`DMOLoss` (and learned global model) of ``mbdpo-dmo train``; with
    ``resume=true``, restored from ``<work_dir>/checkpoints``."""
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work_dir = Path(cfg.work_dir or default_work_dir("dmo", cfg.task, cfg.seed))
    state = run_to_resume(cfg, work_dir)
    torch.manual_seed(cfg.seed)
    env = make_env(cfg.task, seed=cfg.seed, num_envs=cfg.num_envs)
    spec = env.task_spec
    eval_env = make_env(cfg.task, seed=evaluation_seeds(cfg.seed, 0).env, num_envs=max(1, min(cfg.num_envs, cfg.eval_episodes)))
    obs_dim, action_dim = observation_size(env), env.action_spec.shape[-1]
    episodic = spec.episodic if cfg.episodic is None else cfg.episodic
    world_model = local_world_model(cfg, obs_dim, action_dim, episodic).to(cfg.device)
    loss = make_dmo_loss(cfg, world_model, spec.discount)
    learned = cfg.forward_model == "learned"
    learned_model = ObservationModel(obs_dim, action_dim, hidden=cfg.learned_hidden).to(cfg.device) if learned else None
    # The replay capacity is fixed by the run's first config: a resumed run keeps the buffer it had.
    capacity = state["buffer_capacity"] if state is not None else min(cfg.buffer_size, max(cfg.steps, 1))
    trainer = DMOTrainer(
        cfg,
        env=env,
        eval_env=eval_env,
        world_model=world_model,
        loss=loss,
        work_dir=work_dir,
        learned_model=learned_model,
        capacity=capacity,
    )
    if state is not None:
        trainer.load_state(state)
    return trainer


def load_dmo_policy(checkpoint_path, deterministic: bool = True, *, state: dict | None = None):
    """``(state, cfg, loss, policy)`` of a ``mbdpo-dmo train`` checkpoint (``state``: its content, if already loaded);
    ``policy`` is a TorchRL policy module (``observation -> action``) for ``evaluate(env, policy, ...)`` /
    ``env.rollout``. It is the checkpoint's ``policy_loader``, through which ``mbdpo-eval`` evaluates it."""
    state = load_checkpoint(checkpoint_path) if state is None else state
    if state.get("algo") != "dmo":
        raise CheckpointError(f"{checkpoint_path} is not a checkpoint of mbdpo-dmo train (algo={state.get('algo')!r}).")
    cfg = from_container(state["config"], DMOTrainConfig)
    world_model = MBDPOWorldModel(WorldModelConfig.from_dict(state["world_model_config"]))
    loss = make_dmo_loss(cfg, world_model, state["task"]["discount"])
    loss.load_state_dict(state["loss"])
    return state, cfg, loss, dmo_policy_module(loss, deterministic)
