"""Console scripts ``mbdpo-train``, ``mbdpo-eval`` and ``mbdpo-compare`` (Hydra overrides: ``key=value``,
``planner.steps=5``)."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

if not sys.stderr.isatty():  # progress bars in log files: one line every few seconds, not ten per second
    os.environ.setdefault("TQDM_MININTERVAL", "5")

import hydra  # noqa: E402
from hydra.core.config_store import ConfigStore  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402


@dataclass
class EvalConfig:
    checkpoint: Optional[str] = None  # default: the newest runs/**/checkpoints/latest.pt
    eval_episodes: int = 10
    seed: int = 0
    device: str = "cpu"
    task: Optional[str] = None  # default: the checkpoint's task
    planner: Dict[str, Any] = field(default_factory=dict)  # overrides of the run's planner, e.g. +planner.steps=5


def _register():
    from .trainers.config import CompareConfig, register_configs

    register_configs()
    ConfigStore.instance().store(name="mbdpo_eval_schema", node=EvalConfig)
    ConfigStore.instance().store(name="mbdpo_compare_schema", node=CompareConfig)


def _fail(err: Exception):
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)


def _train(cfg: DictConfig) -> None:
    from .trainers.checkpoint import CheckpointError
    from .trainers.config import TrainConfig
    from .trainers.trainer import make_trainer

    try:
        train_cfg: TrainConfig = OmegaConf.to_object(cfg)
        trainer = make_trainer(train_cfg)
    except (ValueError, CheckpointError) as err:
        _fail(err)
    print(f"{train_cfg.algo} on {train_cfg.task}: {train_cfg.steps} agent steps, model_size={train_cfg.model_size}, "
          f"{train_cfg.num_envs} env(s), work_dir={trainer.work_dir}", flush=True)
    trainer.train()
    if trainer.stop_message:
        sys.exit(128 + trainer._signal if trainer._signal else 1)
    last = trainer.last_eval
    print(f"final eval at step {last.get('step')}: return {last.get('episode_reward'):.1f} "
          f"(policy prior {last.get('prior_episode_reward'):.1f}); curve: {trainer.eval_log.png_path}", flush=True)


def _find_latest_checkpoint() -> Path:
    found = sorted(Path("runs").glob("**/checkpoints/latest.pt"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise ValueError("No checkpoint given and none found under runs/. Pass checkpoint=<work_dir>/checkpoints/latest.pt")
    return found[-1]


def _eval(cfg: DictConfig) -> None:
    import torch

    from .envs import make_env, observation_size
    from .trainers.checkpoint import CheckpointError
    from .trainers.evaluation import evaluate
    from .trainers.trainer import load_agent

    try:
        path = Path(cfg.checkpoint) if cfg.checkpoint else _find_latest_checkpoint()
        state, train_cfg, world_model, actor = load_agent(path)
        actor.planner = type(actor.planner)(**{**vars(actor.planner), **cfg.planner})
        task = cfg.task or train_cfg.task
        env = make_env(task, seed=cfg.seed, obs=train_cfg.obs)
        if env.action_spec.shape[-1] != world_model.cfg.action_dim or observation_size(env) != world_model.cfg.obs_dim:
            raise CheckpointError(f"{path} was trained on {train_cfg.task}; task={task} has other observation/action sizes.")
    except (ValueError, CheckpointError) as err:
        _fail(err)
    env.append_transform(actor.make_tensordict_primer())
    torch.manual_seed(cfg.seed)
    world_model.to(cfg.device)
    actor.to(cfg.device)
    returns = evaluate(env, actor, cfg.eval_episodes, env.task_spec.episode_length)
    mean = sum(returns) / len(returns)
    print(f"checkpoint {path} (step {state['step']}), task {task}: mean return {mean:.1f} over {len(returns)} episodes")
    print(f"mean_return={mean:.3f}")


def _compare(cfg: DictConfig) -> None:
    import copy

    from .trainers.compare import compare, markdown_table
    from .trainers.trainer import ALGOS

    base = OmegaConf.to_object(cfg.train)
    unknown = sorted(set(cfg.algos) - set(ALGOS))
    if unknown:
        _fail(ValueError(f"algos: unknown {unknown}; choose from {list(ALGOS)}"))

    def make_config(task, algo, seed):
        run_cfg = copy.deepcopy(base)
        run_cfg.task, run_cfg.algo, run_cfg.seed = task, algo, seed
        return run_cfg

    try:
        final = compare(list(cfg.tasks), list(cfg.algos), list(cfg.seeds), cfg.steps, cfg.root, cfg.out_dir,
                        make_config if cfg.run else None)
    except (ValueError, RuntimeError) as err:
        _fail(err)
    print(markdown_table(final))
    print(f"plots and tables: {cfg.out_dir}/<task>.png, {cfg.out_dir}/summary.csv, {cfg.out_dir}/final.csv")


def train_main():
    _register()
    hydra.main(config_path="config", config_name="train", version_base="1.3")(_train)()


def eval_main():
    _register()
    hydra.main(config_path="config", config_name="eval", version_base="1.3")(_eval)()


def compare_main():
    _register()
    hydra.main(config_path="config", config_name="compare", version_base="1.3")(_compare)()
