"""What the ``mbdpo-dmo`` console commands do, one function each: it receives its validated settings (a schema of
:mod:`.config`) and returns the exit code (a run's: its :class:`~torchrl_mbdpo.trainers.run_control.RunControl`'s)."""

from __future__ import annotations

from .config import DMOTrainConfig, PixelCompareConfig, PixelDMOConfig, PlayDataConfig, PPOConfig, RewardTrainConfig, WorldModelTrainConfig

__all__ = ["train", "dataset", "world_model", "reward", "policy", "ppo", "compare"]


def train(cfg: DMOTrainConfig) -> int:
    """``mbdpo-dmo train task=<task>``: DMO-SAPO on the task's simulator (or a learned global model)."""
    from .trainer import make_dmo_trainer

    trainer = make_dmo_trainer(cfg)
    print(
        f"dmo ({cfg.forward_model} global model{'' if cfg.decoupled else ', no decoupling'}) on {cfg.task}: "
        f"{cfg.steps} env steps, model_size={cfg.model_size}, {cfg.num_envs} env(s), horizon {cfg.horizon}, work_dir={trainer.work_dir}",
        flush=True,
    )
    code = trainer.train()
    if code == 0:
        last = trainer.last_eval
        print(f"final eval at step {last.get('step')}: return {float(last.get('episode_reward')):.1f}; curve: {trainer.eval_log.png_path}")
    return code


def dataset(cfg: PlayDataConfig) -> int:
    """``mbdpo-dmo dataset out=<dir> episodes=N``: a play dataset of the real Push-T env."""
    from .play_data import write_play_dataset

    info = write_play_dataset(
        cfg.out,
        cfg.episodes,
        image_size=cfg.image_size,
        episode_length=cfg.episode_length,
        scripted_fraction=cfg.scripted_fraction,
        noise=cfg.noise,
        seed=cfg.seed,
        progress=cfg.progress,
        pixels=cfg.pixels,
    )
    behaviours = ", ".join(f"{n} {name}" for name, n in info.behaviours.items())
    print(
        f"play dataset written to {cfg.out}: {info.episodes} episodes ({behaviours}), {info.transitions} transitions, "
        f"{f'{info.image_size}x{info.image_size} frames' if info.pixels else 'states only'}, {info.seconds:.1f} s"
    )
    return 0


def world_model(cfg: WorldModelTrainConfig) -> int:
    """``mbdpo-dmo world_model data=<dir>``: the global diffusion world model."""
    from .world_model_training import WorldModelTrainer

    trainer = WorldModelTrainer(cfg)
    n = sum(p.numel() for p in trainer.model.parameters())
    m = trainer.model_cfg
    observations = f"{m.image_size}x{m.image_size} frames" if cfg.obs == "pixels" else "Push-T states"
    print(
        f"world model ({n / 1e6:.2f}M parameters, {observations}, "
        f"k={m.context}, {m.num_steps} denoising steps) "
        f"on {trainer.dataset.path}: {len(trainer.train_episodes)} train / {len(trainer.held_out_episodes)} held-out episodes, "
        f"updates {trainer.update} -> {cfg.updates}, work_dir={trainer.work_dir}",
        flush=True,
    )
    last = trainer.train()
    picture = "frames" if cfg.obs == "pixels" else "trajectories"
    if trainer.control.exit_code == 0:
        print(
            f"update {last.get('update')}: held-out loss {last.get('held_out_loss')}; checkpoint {trainer.checkpoint_path}; "
            f"loss curve {trainer.work_dir / 'loss.png'}; {picture} {trainer.checkpoint_path.parent / f'{picture}.png'}",
            flush=True,
        )
        from .open_loop import metric_lines

        for line in metric_lines(getattr(trainer, "open_loop", {})):
            print(line, flush=True)
    return trainer.control.exit_code


def reward(cfg: RewardTrainConfig) -> int:
    """``mbdpo-dmo reward data=<dir> kind=energy|env``: the world model's reward."""
    from .reward import RewardTrainer

    trainer = RewardTrainer(cfg)
    print(
        f"reward ({cfg.kind}, {cfg.obs}) on {trainer.dataset.path}: updates {trainer.update} -> {cfg.updates}, work_dir={trainer.work_dir}",
        flush=True,
    )
    last = trainer.train()
    if trainer.control.exit_code == 0:
        print(
            f"update {last.get('update')}: held-out loss {last.get('held_out_loss')}, pair accuracy "
            f"{last.get('held_out_accuracy') or '-'}, correlation with the env's reward {last.get('env_reward_corr')}; "
            f"checkpoint {trainer.checkpoint_path}",
            flush=True,
        )
    return trainer.control.exit_code


def _policy_run(trainer, what: str) -> int:
    c = trainer.cfg
    print(
        f"{what}, in the world model {c.world_model}: iterations {trainer.iteration} -> {c.iterations}, work_dir={trainer.work_dir}",
        flush=True,
    )
    last = trainer.train()
    if trainer.control.exit_code == 0:
        print(
            f"iteration {last.get('iteration')}: real Push-T success {last.get('success_rate')}, final coverage "
            f"{last.get('final_coverage')}, return {last.get('mean_return')} after "
            f"{last.get('world_model_samples')} world-model samples; {trainer.work_dir / 'eval.csv'}",
            flush=True,
        )
    return trainer.control.exit_code


def policy(cfg: PixelDMOConfig) -> int:
    """``mbdpo-dmo policy world_model=<ckpt> reward=<ckpt> data=<dir>``: DMO-SAPO inside the world model."""
    from .policy_training import PixelDMOTrainer

    trainer = PixelDMOTrainer(cfg)
    what = f"dmo policy ({cfg.forward} forward, {trainer.reward_kind} reward), {cfg.num_envs} envs x H={cfg.horizon}"
    return _policy_run(trainer, what)


def ppo(cfg: PPOConfig) -> int:
    """``mbdpo-dmo ppo world_model=<ckpt> reward=<ckpt> data=<dir>``: the PPO baseline in the same world model."""
    from .ppo import PPOTrainer

    trainer = PPOTrainer(cfg)
    return _policy_run(trainer, f"ppo ({trainer.reward_kind} reward), {cfg.num_envs} envs x {cfg.rollout_steps} steps")


def compare(cfg: PixelCompareConfig) -> int:
    """``mbdpo-dmo compare world_model=<ckpt> reward=<ckpt> data=<dir> seeds=[0,1]``: DMO, No Diffusion and PPO."""
    from ..trainers.run_control import RunStopped
    from .compare import compare_pixel_algos

    try:
        summary = compare_pixel_algos(cfg)
    except RunStopped as stop:
        return stop.code
    print(
        "| algo | seeds | real success (final) | final coverage | return (final) | straightness | curvature | steps to success "
        "| imagined transitions | seconds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in summary:
        print(
            f"| {r['algo']} | {r['seeds']} | {r['final_success_rate']} ± {r['success_std']} | {r['final_coverage']} ± {r['coverage_std']} "
            f"| {r['final_return']} ± {r['return_std']} | {r['straightness']} | {r['curvature']} | {r['steps_to_success']} "
            f"| {r['samples']} | {r['seconds']} |"
        )
    out = cfg.out_dir or cfg.root
    print(f"{out}/comparison.csv, {out}/summary.csv, {out}/comparison.png")
    return 0
