"""What the policy trainings inside the learned pixel world model share (``mbdpo-dmo policy``: DMO and its
"No Diffusion" ablation, ``mbdpo-dmo ppo``): the world model, play data and learned reward they train in,
the evaluation on the real Push-T env into ``eval.csv``, checkpoints, resume and signals, and the loop of
iterations.

- The inputs: the diffusion world model checkpoint (``mbdpo-dmo world_model``), the reward checkpoint
  (``mbdpo-dmo reward``; standardised on play-data transitions with ``reward_normalization``) and the play
  dataset (the imagined episodes' start contexts), each checked against the others (image size, context).
- ``eval.csv`` (:data:`EVAL_FIELDS`): the real env's success rate, return, final coverage and trajectory quality of
  the deterministic policy at iteration 0, every ``eval_freq`` iterations and at the end, against the world-model
  samples and wall time; every evaluation of every run starts from the same ``eval_episodes`` start states.
- ``<work_dir>/checkpoints/latest.pt`` every ``checkpoint_freq`` iterations and at the end; ``resume=true``
  continues from it (the settings in :attr:`PolicyRun.resume_fields` must match; ``eval.csv`` is cut back to
  it; the imagined episodes restart, so not bit-identical); a new run never overwrites one;
  SIGTERM/SIGINT stop after the current iteration (an evaluation is abandoned) with a checkpoint (the run's
  :class:`~torchrl_mbdpo.trainers.run_control.RunControl`: ``stop_message``, exit code 128 + signal).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
from tensordict import TensorDict
from tqdm.auto import tqdm

from .play_data import load_play_dataset

__all__ = [
    "OBSERVATION_FRAMES",
    "EVAL_FIELDS",
    "PolicyRun",
    "evaluate_on_pusht",
    "make_eval_env",
    "play_reward_stats",
    "straightness",
    "curvature",
]

OBSERVATION_FRAMES = 3  # the policies' input: the last 3 frames (states) stacked (as TD-MPC2's pixel tasks)
EVAL_FIELDS = [
    "iteration",
    "world_model_samples",
    "model_steps",
    "seconds",
    "success_rate",
    "mean_return",
    "final_coverage",
    "straightness",
    "curvature",
    "steps_to_success",
    "rollout_reward",
]


def straightness(path: torch.Tensor) -> float:
    """The DMO paper's trajectory straightness (Amigo et al., "Coupled Local and Global World Models for Efficient
    First Order RL", trajectory quality): displacement / path length of the agent's positions ``path`` ``(T + 1, 2)``;
    1 is a straight line; NaN for a path that never moves."""
    length = (path[1:] - path[:-1]).norm(dim=-1).sum()
    return float((path[-1] - path[0]).norm() / length) if length > 0 else math.nan


def curvature(path: torch.Tensor, min_step: float = 1e-3) -> float:
    """The DMO paper's trajectory curvature (same section): the heading change per unit of path length, in radians per
    workspace unit, summed over consecutive moves of ``path`` ``(T + 1, 2)`` longer than ``min_step``; NaN with fewer
    than two such moves."""
    step = path[1:] - path[:-1]
    lengths = step.norm(dim=-1)
    moving = step[lengths > min_step]
    if len(moving) < 2:
        return math.nan
    heading = torch.atan2(moving[:, 1], moving[:, 0])
    turn = torch.remainder(heading[1:] - heading[:-1] + math.pi, 2 * math.pi) - math.pi
    return float(turn.abs().sum() / lengths.sum())


def make_eval_env(obs: str, *, image_size: int | None, seed: int, steps: int, device="cpu"):
    """The real Push-T env as the policies read it: ``"observation"`` the last 3 frames stacked (``obs=pixels``) or the
    features of the last 3 states concatenated (``obs=state``: TorchRL's ``UnaryTransform`` of
    :func:`~torchrl_mbdpo.dmo.state_model.state_features`, then ``CatFrames``), as the world-model env makes it."""
    from ..envs.pusht import make_pusht_env

    if obs == "pixels":
        return make_pusht_env(
            image_size=image_size, seed=seed, max_episode_steps=steps, observation_frames=OBSERVATION_FRAMES, device=device
        )
    from torchrl.envs import CatFrames, UnaryTransform

    from .state_model import state_features

    env = make_pusht_env(pixels=False, seed=seed, max_episode_steps=steps, device=device)
    env.append_transform(UnaryTransform(in_keys=["state"], out_keys=["state_features"], fn=state_features))
    env.append_transform(CatFrames(N=OBSERVATION_FRAMES, dim=-1, in_keys=["state_features"], out_keys=["observation"]))
    return env


def _mean(values: list[float]) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


@torch.no_grad()
def evaluate_on_pusht(
    policy, *, image_size: int | None, seed: int, step: int, episodes: int, steps: int, device="cpu", check=None, obs: str = "pixels"
) -> dict:
    """``episodes`` episodes of ``policy`` (a TorchRL policy reading ``"observation"``, :func:`make_eval_env`) on the real
    Push-T env: the success rate (gym-pusht's test at any step), the mean return, the mean final coverage of the goal
    (which moves before success does), the agent's :func:`straightness` and :func:`curvature` (means over episodes) and
    the mean steps to success (over the successful episodes; NaN with none). Seeds: the library's
    ``evaluation_seeds(seed, step)`` (a run passes ``seed=0, step=0`` at every evaluation, so DMO, its ablations and
    PPO meet the same start states every time). ``check()`` is called
    before every step (it raises to abandon the evaluation)."""
    from torchrl.envs.utils import ExplorationType, set_exploration_type

    from ..trainers.evaluation import _Checked, evaluation_seeds

    seeds = evaluation_seeds(seed, step)
    env = make_eval_env(obs, image_size=image_size, seed=seeds.env, steps=steps, device=device)
    successes, returns, coverage, straight, curved, to_success = [], [], [], [], [], []
    policy = policy if check is None else _Checked(policy, check)
    try:
        with torch.random.fork_rng(devices=[]), set_exploration_type(ExplorationType.DETERMINISTIC):
            torch.manual_seed(seeds.torch)
            for _ in range(episodes):
                episode = env.rollout(steps, policy, break_when_any_done=True)
                success = episode["next", "success"].reshape(-1)
                successes.append(bool(success.any()))
                returns.append(float(episode["next", "reward"].sum()))
                coverage.append(float(episode["next", "coverage"][-1]))
                path = torch.cat([episode["state"][:, :2], episode["next", "state"][-1:, :2]]).double()
                straight.append(straightness(path))
                curved.append(curvature(path))
                if success.any():
                    to_success.append(float(success.nonzero()[0, 0]) + 1)
    finally:
        env.close()
    return {
        "success_rate": sum(successes) / len(successes),
        "mean_return": sum(returns) / len(returns),
        "final_coverage": sum(coverage) / len(coverage),
        "straightness": _mean(straight),
        "curvature": _mean(curved),
        "steps_to_success": _mean(to_success),
    }


def play_reward_stats(reward_fn, dataset, n: int, generator: torch.Generator) -> tuple[float, float]:
    """Mean and std of ``reward_fn`` over ``n`` play-data transitions (start: the episode's first observation)."""
    key = reward_fn.key
    rows = dataset.transition_rows()
    rows = rows[torch.randint(len(rows), (n,), generator=generator)]
    start = dataset.rows[key][dataset.episode_start[dataset.rows["episode"][rows]]]
    with torch.no_grad():
        r = reward_fn(TensorDict({key: dataset.rows[key][rows + 1], f"start_{key}": start}, batch_size=[n]))
    return float(r.mean()), float(r.std().clamp_min(1e-6))


class PolicyRun:
    """The shared run; :meth:`train` returns the last ``eval.csv`` row.

    Subclasses set ``kind`` (the checkpoint's), ``command`` (``mbdpo-dmo <command>``), ``counts`` (settings that
    must be >= 1) and ``resume_fields`` (settings a resume must keep), and implement :meth:`build` (networks,
    optimisers: called once the shared inputs and ``model_env``, the diffusion env, exist), :meth:`train_iteration` (returns its
    metrics, ``rollout_reward`` among them), :meth:`policy` (the deterministic TensorDict policy evaluated on the
    real env), :meth:`model_state` / :meth:`load_model_state`; optionally :meth:`check`, :meth:`before_training`,
    :meth:`postfix`, :meth:`close` and :meth:`run_name` (``runs/dmo_pixel/<run_name>/seed<seed>``).

    ``cfg`` needs ``world_model``, ``reward``, ``data``, ``work_dir``, ``iterations``, ``num_envs``,
    ``episode_steps``, ``eval_freq``, ``eval_episodes``, ``eval_steps``, ``checkpoint_freq``,
    ``reward_normalization``, ``seed``, ``device``, ``threads``, ``resume``, ``progress``.
    """

    kind = ""
    command = ""
    resume_fields = ("num_envs",)

    def __init__(self, cfg):
        from ..trainers.evaluation import CsvLog
        from ..trainers.run_control import RunControl, decide_resume
        from .diffusion_env import DiffusionWorldModelEnv, play_data_start_sampler
        from .reward import load_frame_reward
        from .world_model_training import load_world_model

        self.cfg = cfg
        cfg.validate()
        if cfg.threads:
            torch.set_num_threads(int(cfg.threads))
        torch.manual_seed(cfg.seed)
        self.global_world_model, _ = load_world_model(cfg.world_model)
        self.obs, self.context = self.global_world_model.obs_key, self.global_world_model.cfg.context
        self.image_size = size = getattr(self.global_world_model.cfg, "image_size", None)
        if self.context < OBSERVATION_FRAMES:
            raise ValueError(
                f"mbdpo-dmo {self.command} reads the last {OBSERVATION_FRAMES} frames: the world model's context must be >= "
                f"{OBSERVATION_FRAMES}, {cfg.world_model} has {self.context}."
            )
        self.dataset = load_play_dataset(cfg.data, image_size=size)
        self.dataset.check_key(self.obs)
        self.reward_fn, reward_state = load_frame_reward(cfg.reward, image_size=size, obs=self.obs)
        self.reward_kind = reward_state["model_config"]["kind"]
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)  # every draw of training; saved in the checkpoint
        if cfg.reward_normalization:  # an energy is defined up to an affine map: give it unit scale
            self.reward_fn.shift, self.reward_fn.scale = play_reward_stats(self.reward_fn, self.dataset, 1024, self.generator)
        self.sampler = play_data_start_sampler(
            self.dataset, self.context, generator=torch.Generator().manual_seed(cfg.seed + 3), key=self.obs
        )
        self.model_env = DiffusionWorldModelEnv(  # the imagined episodes, restarted from play-data contexts
            self.global_world_model,
            self.sampler,
            batch_size=cfg.num_envs,
            max_episode_steps=cfg.episode_steps,
            reward_fn=self.reward_fn,
            observation_frames=OBSERVATION_FRAMES,
            device=cfg.device,
        )
        root = "dmo_pixel" if self.obs == "pixels" else "dmo_state"
        self.work_dir = Path(cfg.work_dir or Path("runs") / root / self.run_name() / f"seed{cfg.seed}")
        found = decide_resume(self.work_dir, cfg.resume, what=f"mbdpo-dmo {self.command} run")
        self.checkpoint_path = self.work_dir / "checkpoints" / "latest.pt"
        self.iteration = self.world_model_samples = self.model_steps = 0
        self.seconds = 0.0
        self._clock = None
        self.log = CsvLog(self.work_dir / "eval.csv", EVAL_FIELDS)
        self.last_eval, self.last_metrics = {}, {}
        self.control = RunControl(self.work_dir, cfg.checkpoint_freq, self.state_dict, unit="iterations", threads=cfg.threads)
        self.build()
        if found is not None:
            self._restore(*found)
        else:
            self.log.truncate(-1)  # rows of a run killed before its first checkpoint

    @property
    def stop_message(self) -> str | None:
        return self.control.stop_message or None

    # ------------------------------------------------------------------ subclass hooks
    def run_name(self) -> str:
        return self.command

    def build(self) -> None:
        raise NotImplementedError

    def train_iteration(self) -> dict:
        raise NotImplementedError

    def policy(self):
        raise NotImplementedError

    def model_state(self) -> dict:
        raise NotImplementedError

    def load_model_state(self, state: dict, path) -> None:
        raise NotImplementedError

    def before_training(self) -> None:
        pass

    def postfix(self, metrics: dict) -> dict:
        return {}

    def close(self) -> None:
        pass

    # ------------------------------------------------------------------ the run
    def _eval_row(self, seconds: float) -> dict:
        result = evaluate_on_pusht(
            self.policy(),
            image_size=self.image_size,
            obs=self.obs,
            # the same start states at every evaluation of every run (seed and algo alike): a curve shows how the
            # policy changed, not which start states were drawn (they move Push-T's coverage more than a policy does)
            seed=0,
            step=0,
            episodes=self.cfg.eval_episodes,
            steps=self.cfg.eval_steps,
            device=self.cfg.device,
            check=self.control.check,
        )
        row = {
            "iteration": self.iteration,
            "world_model_samples": self.world_model_samples,
            "model_steps": self.model_steps,
            "seconds": f"{seconds:.1f}",
            **{name: f"{result[name]:.4g}" for name in ("success_rate", "mean_return", "final_coverage", "straightness", "curvature")},
            "steps_to_success": "" if math.isnan(result["steps_to_success"]) else f"{result['steps_to_success']:.1f}",
            "rollout_reward": f"{self.last_metrics.get('rollout_reward', float('nan')):.4f}",
        }
        self.log.append(row)
        self.last_eval = row
        return row

    def state_dict(self, seconds: float | None = None) -> dict:
        if seconds is None:
            seconds = self._clock() if self._clock is not None else self.seconds
        return {
            "kind": self.kind,
            "step": self.iteration,
            **self.model_state(),
            "iteration": self.iteration,
            "world_model_samples": self.world_model_samples,
            "model_steps": self.model_steps,
            "seconds": seconds,
            "generator": self.generator.get_state(),
            "config": asdict(self.cfg),
            "reward_kind": self.reward_kind,
        }

    def save(self) -> Path | None:
        return self.control.save()

    def _restore(self, state: dict, path) -> None:
        from ..trainers.checkpoint import CheckpointError, check_compatible

        if state.get("kind") != self.kind:
            raise CheckpointError(f"{path} is not a checkpoint of mbdpo-dmo {self.command} (kind={state.get('kind')!r}).")
        saved = {k: state["config"][k] for k in self.resume_fields}
        check_compatible(saved, {k: getattr(self.cfg, k) for k in saved}, "run setting", path)
        self.load_model_state(state, path)
        self.iteration, self.world_model_samples = state["iteration"], state["world_model_samples"]
        self.model_steps = state["model_steps"]
        self.seconds = float(state["seconds"])
        self.generator.set_state(state["generator"])
        self.log.truncate(self.iteration)
        rows = self.log.rows()
        self.last_eval = rows[-1] if rows else {}
        from ..trainers.run_control import warn_if_other_threads

        warn_if_other_threads(state, path, self.cfg.threads)

    def _evaluate(self) -> None:
        from ..trainers.run_control import RunInterrupted

        try:
            with self.control.in_phase("eval"):
                self._eval_row(self._clock())
        except RunInterrupted:
            pass  # abandoned: the checkpoint written on stop still owes it

    def train(self) -> dict:
        """Iterations up to ``cfg.iterations`` with evaluations; returns the last ``eval.csv`` row. A signal stops it
        after the current iteration with a checkpoint (``control.exit_code``: 128 + signal)."""
        cfg, control = self.cfg, self.control
        start = time.perf_counter()
        self._clock = lambda: self.seconds + time.perf_counter() - start  # noqa: E731
        with control.handle_signals():
            self.before_training()
            if self.iteration == 0 and not self.log.rows():
                self._evaluate()
            control.enter("train")
            desc = self.run_name() if self.run_name() == self.command else f"{self.command} ({self.run_name()})"
            with tqdm(total=cfg.iterations, initial=min(self.iteration, cfg.iterations), desc=desc, disable=not cfg.progress) as bar:
                while self.iteration < cfg.iterations and not control.stop_requested:
                    control.pin_threads()
                    self.last_metrics = self.train_iteration()
                    bar.update()
                    bar.set_postfix(**self.postfix(self.last_metrics), success=self.last_eval.get("success_rate", ""))
                    if self.iteration % cfg.eval_freq == 0 and self.iteration < cfg.iterations:
                        self._evaluate()
                    if self.iteration % cfg.checkpoint_freq == 0 and self.iteration < cfg.iterations:
                        self.save()
            evaluated = self.last_eval and int(self.last_eval["iteration"]) == self.iteration
            control.finish(
                self.iteration,
                complete=self.iteration >= cfg.iterations,
                final_eval=None if evaluated else lambda: self._eval_row(self._clock()),
            )
        self.close()
        if control.stop_message:
            print(control.stop_message, flush=True)
        return self.last_eval
