"""The TD-MPC2 sibling: MPPI actor, TDMPC2Loss, the algo switch, diagnostics and the comparison command."""

import csv
import math

import pytest
import torch
from tensordict import TensorDict
from tensordict.nn import InteractionType, set_interaction_type

from torchrl_mbdpo import DiffusionActor, MBDPOLoss, MPPIActor, MPPIConfig, TDMPC2Loss
from torchrl_mbdpo.modules import MBDPOWorldModel, WorldModelConfig
from torchrl_mbdpo.modules.mppi import mppi_sample
from torchrl_mbdpo.trainers.agent import load_agent
from torchrl_mbdpo.trainers.compare import load_published
from torchrl_mbdpo.trainers.diagnostics import action_drift, td_error
from torchrl_mbdpo.trainers.optimization import make_optimizers, update
from torchrl_mbdpo.trainers.trainer import make_trainer

from helpers import PointMassModel

SMALL_MPPI = dict(num_samples=256, num_elites=32, num_pi_trajs=0, iterations=6)


def test_mppi_lands_on_optimum_per_env_and_fits_std():
    targets = torch.stack([torch.full((3, 2), v) for v in (-0.7, 0.0, 0.5)])
    value = lambda c: -((c - targets[:, None]) ** 2).sum((-1, -2))  # noqa: E731
    plan, mean, std = mppi_sample(torch.zeros(3, 3, 2), value, None, MPPIConfig(**SMALL_MPPI))
    assert plan.shape == mean.shape == std.shape == (3, 3, 2)
    assert (mean - targets).abs().max() < 0.1
    assert (plan - targets).abs().max() < 0.2  # an elite, drawn by weight
    assert std.max() < 0.5 and std.min() >= 0.05  # fitted to the elites, clamped at min_std
    random = torch.rand(3, 4096, 3, 2) * 2 - 1
    assert (value(mean[:, None]).squeeze(1) > value(random).max(1).values).all()


def test_mppi_actor_on_analytic_model_finds_best_first_action_and_explores_with_elite_std():
    actor = MPPIActor(PointMassModel([0.3, -0.4]), MPPIConfig(**{**SMALL_MPPI, "num_pi_trajs": 8}), discount=0.99)
    obs = torch.tensor([[0.0, 0.0], [0.5, -0.5], [-0.2, 0.3]])
    td = TensorDict(
        {"observation": obs, "is_init": torch.ones(3, 1, dtype=torch.bool), "_tdmpc2_prev_mean": torch.zeros(3, 3, 2)}, batch_size=[3]
    )
    with set_interaction_type(InteractionType.DETERMINISTIC):
        out = actor(td.clone())
    assert (out["action"] - (torch.tensor([0.3, -0.4]) - obs)).abs().max() < 0.1
    with set_interaction_type(InteractionType.RANDOM):
        noisy = actor(td.clone())
    assert 0 < (noisy["action"] - out["action"]).abs().max() < 0.5


def _world_model(**kw):
    return MBDPOWorldModel(WorldModelConfig.from_size(1, 5, 2, latent_dim=32, mlp_dim=32, enc_dim=32, **kw))


def _batch(B=8, H=3):
    return TensorDict(
        {
            "observation": torch.randn(B, H, 5),
            "action": torch.rand(B, H, 2) * 2 - 1,
            ("next", "observation"): torch.randn(B, H, 5),
            ("next", "reward"): torch.rand(B, H, 1),
            ("next", "terminated"): torch.zeros(B, H, 1, dtype=torch.bool),
        },
        batch_size=[B, H],
    )


def test_tdmpc2_loss_has_no_energy_terms_and_trains_the_rest():
    wm = _world_model()
    loss = TDMPC2Loss(wm)
    assert loss.target_q_pair == "random"
    out = loss(_batch())
    assert "loss_energy" not in out.keys() and "loss_score" not in out.keys()
    assert {"loss_consistency", "loss_reward", "loss_value", "loss_actor"} <= set(out.keys())
    assert set(loss.out_keys) == {k for k in out.keys() if k.startswith("loss_")}
    energy_before = [p.clone() for p in wm.energy.parameters()]
    dynamics_before = [p.clone() for p in wm.dynamics.parameters()]
    update(loss, _batch(), *make_optimizers(loss))
    assert all(torch.equal(a, b) for a, b in zip(energy_before, wm.energy.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(dynamics_before, wm.dynamics.parameters()))
    with pytest.raises(TypeError, match="energy_coef"):
        TDMPC2Loss(wm, energy_coef=1.0)


def test_switching_algorithms_is_one_line_on_the_same_world_model():
    wm = _world_model()
    td = TensorDict(observation=torch.randn(4, 5), batch_size=[4])
    for actor_cls, loss_cls in ((DiffusionActor, MBDPOLoss), (MPPIActor, TDMPC2Loss)):
        actor, loss = actor_cls(wm), loss_cls(wm)
        out = actor(td.clone())
        assert out["action"].shape == (4, 2) and out["next", actor.plan_key].shape == (4, 3, 2)
        assert out["action"].abs().max() <= 1
        assert torch.isfinite(loss(_batch())["loss_value"])
        assert actor.in_keys == ["observation", actor.plan_key, "is_init"] and actor.plan_key.startswith("_")


def test_diagnostics_measure_what_they_claim():
    torch.manual_seed(0)
    wm = _world_model(q_init="trunc_normal").eval()  # zero biases: the zeroed Q output layer predicts exactly 0
    obs = torch.randn(64, 5)
    z = wm.encode_obs(obs)
    prior = wm.pi(z)
    same = action_drift(wm, obs, prior.action)  # the prior's own samples: log-ratio ~ 0
    far = action_drift(wm, obs, -torch.sign(prior.mean) * 0.999)
    assert abs(same["action_drift_logratio"]) < 0.3
    assert far["action_drift_logratio"] > 5 and far["action_drift_l2"] > same["action_drift_l2"]
    # TD error: zero-initialised reward/Q heads predict 0, so with r = 0 the TD error is 0, with r = 1 it is 1.
    transitions = _batch().reshape(-1)
    transitions["next", "reward"].zero_()
    loss = MBDPOLoss(wm)
    assert td_error(loss, transitions) == pytest.approx(0.0, abs=1e-5)
    transitions["next", "reward"].fill_(1.0)
    assert td_error(loss, transitions) == pytest.approx(1.0, abs=1e-4)


def test_tdmpc2_training_run_logs_diagnostics_and_checkpoint_reloads_as_tdmpc2(tmp_path, tiny_config):
    cfg = tiny_config(algo="tdmpc2", mppi=MPPIConfig(iterations=2, num_samples=8, num_elites=2, num_pi_trajs=2))
    trainer = make_trainer(cfg)
    assert isinstance(trainer.planner, MPPIActor) and isinstance(trainer.loss_module, TDMPC2Loss)
    trainer.train()
    rows = list(csv.DictReader(open(tmp_path / "run" / "eval.csv")))
    assert [int(r["step"]) for r in rows] == [0, 300, 600]
    # Episodes reach the buffer whole: the first ones (200 steps per env) only after step 300.
    assert math.isnan(float(rows[0]["td_error_replay"])) and math.isnan(float(rows[1]["td_error_replay"]))
    assert math.isfinite(float(rows[2]["td_error_replay"]))
    for r in rows:
        for key in ("td_error_planner", "action_drift_l2", "action_drift_logratio", "prior_episode_reward"):
            assert math.isfinite(float(r[key])), key
    _, saved_cfg, world_model, actor = load_agent(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert saved_cfg.algo == "tdmpc2" and isinstance(actor, MPPIActor)
    assert world_model.state_dict().keys() == _mbdpo_keys(tiny_config, tmp_path)


def _mbdpo_keys(tiny_config, tmp_path):
    trainer = make_trainer(tiny_config(work_dir=str(tmp_path / "mbdpo"), steps=2))
    return trainer.world_model.state_dict().keys()


def test_compare_command_writes_png_and_tables_from_tiny_runs(tmp_path, cli):
    """The command's wiring (runs, collection, aggregation, files), on runs as small as the trainer allows:
    100 agent steps, evaluations at 0 and 100 of one episode. No time limit: it tests wiring, not speed."""
    root, out_dir = tmp_path / "runs", tmp_path / "cmp"
    args = [
        "tasks=[gym:Pendulum-v1]",
        "algos=[mbdpo,tdmpc2]",
        "seeds=[1,2]",
        "steps=100",
        f"root={root}",
        f"out_dir={out_dir}",
        "train.num_envs=1",
        "train.eval_freq=100",
        "train.eval_episodes=1",
        "train.seed_steps=50",
        "train.pretrain_updates=2",
        "train.batch_size=8",
        "train.checkpoint_freq=100",
        "train.progress=false",
        "train.threads=1",
        "train.model_size=1",
        "train.model.latent_dim=8",
        "train.model.mlp_dim=16",
        "train.model.enc_dim=16",
        "train.planner.steps=2",
        "train.planner.num_samples=4",
        "train.planner.num_elites=2",
        "train.planner.num_pi_trajs=1",
        "train.mppi.iterations=1",
        "train.mppi.num_samples=4",
        "train.mppi.num_elites=2",
        "train.mppi.num_pi_trajs=1",
    ]
    out = cli("compare_main", *args)
    assert out.returncode == 0, out.stderr[-3000:]
    assert (out_dir / "gym_Pendulum-v1.png").stat().st_size > 5000
    final = list(csv.DictReader(open(out_dir / "final.csv")))
    assert [(r["algo"], r["step"], r["n_seeds"]) for r in final] == [("mbdpo", "100", "2"), ("tdmpc2", "100", "2")]
    summary = list(csv.DictReader(open(out_dir / "summary.csv")))
    assert [(r["algo"], int(r["step"])) for r in summary] == [("mbdpo", 0), ("mbdpo", 100), ("tdmpc2", 0), ("tdmpc2", 100)]
    # Each summary row is the mean and population sd over the two seeds of the runs' own eval.csv rows.
    for r in summary:
        returns = [
            float(row["episode_reward"])
            for seed in (1, 2)
            for row in csv.DictReader(open(root / r["algo"] / "gym_Pendulum-v1" / f"seed{seed}" / "eval.csv"))
            if int(row["step"]) == int(r["step"])
        ]
        assert len(returns) == 2
        mean = (returns[0] + returns[1]) / 2
        assert float(r["episode_reward_mean"]) == pytest.approx(mean, rel=1e-6)
        assert float(r["episode_reward_sd"]) == pytest.approx(abs(returns[0] - returns[1]) / 2, rel=1e-6, abs=1e-9)
    assert "| gym:Pendulum-v1 | tdmpc2 | 100 | 2 |" in out.stdout
    # A second call collects the finished runs instead of training them again.
    mtime = (root / "mbdpo" / "gym_Pendulum-v1" / "seed1" / "eval.csv").stat().st_mtime
    again = cli("compare_main", *args)
    assert again.returncode == 0 and again.stdout.count("collected") == 4
    assert (root / "mbdpo" / "gym_Pendulum-v1" / "seed1" / "eval.csv").stat().st_mtime == mtime


def test_published_curves_ship_with_the_package():
    curves = load_published()
    cheetah = dict((step, mean) for step, mean, _ in curves["mbdpo", "cheetah-run"])
    assert cheetah[100_000] == pytest.approx(761, abs=1)
    assert ("tdmpc2", "cheetah-run") in curves
