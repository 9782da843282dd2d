"""MBDPO plugged into TorchRL's own TD-MPC2 stack (torchrl >= 0.15; the torchrl-next environment of
``make setup-next``, run by ``.ci/run``). On the default install (torchrl 0.14.1) only the first test runs:
the drop-in names fail at import with one error naming the install.

The equality tests copy the weights of TorchRL's TD-MPC2 components into this library's
``MBDPOWorldModel``: the planner and the loss on TorchRL's networks then give the outputs of the library's
own (reference-checked) planner and loss for the same random draws."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensordict import TensorDict

from torchrl_mbdpo._torchrl_next import has_torchrl_tdmpc2

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "sota-implementations" / "mbdpo_trainer" / "train.py"
needs_next = pytest.mark.skipif(not has_torchrl_tdmpc2(), reason="TorchRL's TD-MPC2 stack (torchrl >= 0.15): make setup-next")


@pytest.mark.skipif(has_torchrl_tdmpc2(), reason="checks the default install")
def test_without_torchrl_015_the_drop_in_names_one_install():
    import torchrl_mbdpo

    for load in (lambda: torchrl_mbdpo.MBDPOPlanner, lambda: __import__("torchrl_mbdpo.trainers.torchrl_configs")):
        with pytest.raises(ImportError, match=r"make setup-next.*torchrl-nightly==2026\.10\.27"):
            load()
    assert torchrl_mbdpo.MBDPOTrainer.__name__ == "MBDPOTrainer"  # the rest works on torchrl 0.14.1


# ----------------------------------------------------------------------------------------- components
OBS, ACT, LATENT, MLP, ENC, NUM_Q, H = 5, 2, 16, 32, 32, 5, 3


def torchrl_components(seed=0):
    """TorchRL's TD-MPC2 world model, policy prior and Q ensemble (its own factories), every weight random
    (their output layers start at zero, which would hide a mis-wiring)."""
    from torchrl.trainers.algorithms.configs.modules import _make_tdmpc2_policy_prior, _make_tdmpc2_q_ensemble, _make_tdmpc2_world_model

    from torchrl_mbdpo.modules import make_energy_network

    torch.manual_seed(seed)
    wm = _make_tdmpc2_world_model(observation_dim=OBS, action_dim=ACT, latent_dim=LATENT, encoder_dim=ENC, mlp_dim=MLP)
    prior = _make_tdmpc2_policy_prior(latent_dim=LATENT, action_dim=ACT, mlp_dim=MLP)
    q = _make_tdmpc2_q_ensemble(latent_dim=LATENT, action_dim=ACT, mlp_dim=MLP, num_q=NUM_Q)
    energy = make_energy_network(LATENT, ACT, MLP)
    with torch.no_grad():
        for module in (wm, prior, energy):
            for p in module.parameters():
                p.normal_(0, 0.3)
        for p in q.q_params.values(True, True):
            p.normal_(0, 0.3)
        q.target_q_params.data.update_(q.q_params.data * 0.5)  # a target distinct from the online heads
        energy.module.norm.mean.fill_(0.3)
        energy.module.norm.std.fill_(1.7)
    return wm, prior, q, energy


def _norm_and_linear_layers(module):
    return [m for m in module.modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm))]


def native_copy(wm, prior, q, energy):
    """This library's world model with the weights of TorchRL's components (same layer order)."""
    from torchrl_mbdpo.modules import MBDPOWorldModel, WorldModelConfig

    native = MBDPOWorldModel(
        WorldModelConfig(obs_dim=OBS, action_dim=ACT, latent_dim=LATENT, mlp_dim=MLP, enc_dim=ENC, num_enc_layers=2, num_q=NUM_Q, horizon=H)
    )
    with torch.no_grad():
        for ours, theirs in (
            (native.encoder, wm.encoder),
            (native.dynamics, wm.dynamics),
            (native.reward_head, wm.reward_head),
            (native.policy, prior),
            (native.energy, energy),
        ):
            a, b = _norm_and_linear_layers(ours), _norm_and_linear_layers(theirs)
            assert [type(x) for x in a] == [type(x) for x in b]
            for x, y in zip(a, b):
                x.weight.copy_(y.weight)
                x.bias.copy_(y.bias)
        skeleton, template = native.qs.module.net._skeleton, q._q_template
        ours = [n for n, m in skeleton.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm))]
        theirs = [n for n, m in template.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.LayerNorm))]
        for o, t in zip(ours, theirs):
            for leaf in ("weight", "bias"):
                native.q_params[(*o.split("."), leaf)].copy_(q.q_params[(*t.split("."), leaf)])
                native.target_q_params[(*o.split("."), leaf)].copy_(q.target_q_params[(*t.split("."), leaf)])
        native.energy_norm.mean.copy_(energy.module.norm.mean)
        native.energy_norm.std.copy_(energy.module.norm.std)
    return native


def slices(seed=1, batch=8):
    g = torch.Generator().manual_seed(seed)
    terminated = torch.zeros(batch, H, 1, dtype=torch.bool)
    terminated[::3, -1] = True
    return TensorDict(
        {
            "observation": torch.randn(batch, H, OBS, generator=g),
            "action": torch.rand(batch, H, ACT, generator=g) * 2 - 1,
            ("next", "observation"): torch.randn(batch, H, OBS, generator=g),
            ("next", "reward"): torch.randn(batch, H, 1, generator=g),
            ("next", "terminated"): terminated,
        },
        batch_size=[batch, H],
    )


# ----------------------------------------------------------------------------------------- equality
@needs_next
@pytest.mark.parametrize("num_envs", [1, 3])
def test_mbdpo_planner_on_torchrl_components_plans_as_the_library_planner(num_envs):
    from torchrl_mbdpo import DiffusionActor, MBDPOPlanner, PlannerConfig
    from torchrl_mbdpo.modules.layers import reference_kernels

    wm, prior, q, energy = torchrl_components()
    native = native_copy(wm, prior, q, energy)
    settings = dict(num_samples=32, num_elites=8, num_pi_trajs=4, temperature=0.5)
    planner = MBDPOPlanner(wm, prior, q, horizon=H, discount=0.97, steps=4, energy=energy, energy_eta=0.1, **settings)
    reference = DiffusionActor(native, PlannerConfig(horizon=H, steps=4, energy_eta=0.1, **settings), discount=0.97)
    obs = torch.randn(num_envs, OBS)
    td = TensorDict(
        {"observation": obs, "is_init": torch.zeros(num_envs, 1, dtype=torch.bool), planner.plan_key: torch.rand(num_envs, H, ACT) - 0.5},
        batch_size=[num_envs],
    )
    torch.manual_seed(3)
    out = planner(td.clone())
    torch.manual_seed(3)
    with reference_kernels():
        ref = reference(td.clone().rename_key_(planner.plan_key, reference.plan_key))
    torch.testing.assert_close(out["action"], ref["action"], atol=2e-5, rtol=0)
    torch.testing.assert_close(out["next", planner.plan_key], ref["next", reference.plan_key], atol=2e-5, rtol=0)
    assert planner.plan_key == "_mbdpo_prev_plan" and not out["action"].equal(torch.zeros_like(out["action"]))


@needs_next
@pytest.mark.parametrize("num_envs", [1, 3])
def test_mbdpo_planner_on_torchrl_components_is_capture_safe(num_envs):
    """The drop-in planner keeps the library planner's capture safety (issue 18): built on the meta device and
    run under CaptureAudit, it makes no host synchronisation and no tensor off the inputs' device."""
    from unittest import mock

    from torchrl_mbdpo import MBDPOPlanner
    from torchrl_mbdpo.modules.capture import CaptureAudit

    with torch.device("meta"), mock.patch.object(torch.Tensor, "is_set_to", lambda self, other: self is other):
        wm, prior, q, energy = torchrl_components()
        planner = MBDPOPlanner(wm, prior, q, horizon=H, discount=0.97, steps=3, energy=energy, num_samples=16, num_elites=4, num_pi_trajs=2)
    td = TensorDict(
        {
            "observation": torch.randn(num_envs, OBS),
            "is_init": torch.arange(num_envs).remainder(2).eq(0).unsqueeze(-1),
            planner.plan_key: torch.rand(num_envs, H, ACT) - 0.5,
        },
        batch_size=[num_envs],
    ).to("meta")
    with CaptureAudit("meta") as audit:
        out = planner(td)
    assert audit.ops > 50 and out["action"].device.type == "meta" and out["action"].shape == (num_envs, ACT)


@needs_next
def test_mbdpo_loss_on_torchrl_components_matches_the_library_loss_term_by_term():
    from torchrl_mbdpo import MBDPOLoss

    wm, prior, q, energy = torchrl_components()
    native = native_copy(wm, prior, q, energy)
    loss = MBDPOLoss(wm, prior, q, horizon=H, discount=0.97, energy=energy)
    reference = MBDPOLoss(native, discount=0.97)
    batch = slices()
    results = []
    for candidate in (loss, reference):
        candidate.latent_model.eval()  # no dropout: the same numbers without equal dropout masks
        torch.manual_seed(5)
        total, metadata = candidate.model_loss(batch)
        actor, actor_metadata = candidate.actor_loss_from_latents(metadata["actor_latents"])
        results.append((total, metadata, actor, actor_metadata))
    (total, md, actor, amd), (ref_total, ref_md, ref_actor, ref_amd) = results
    for key in ("loss_consistency", "loss_reward", "loss_value", "loss_energy", "td_target", "energy_pos_logit", "energy_neg_logit"):
        torch.testing.assert_close(md[key], ref_md[key], atol=1e-5, rtol=1e-5, msg=key)
    torch.testing.assert_close(total, ref_total, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(actor, ref_actor, atol=1e-5, rtol=1e-4)
    assert md["loss_energy"] > 0 and md["loss_value"] > 0
    # TorchRL's protocol: TdMpc2Loss's metric names; a TD target that reads the ensemble's own target heads
    assert {"loss_consistency", "loss_reward", "loss_value", "actor_latents"} <= set(md.keys())
    assert loss.target_qvalue_params is q.target_q_params and loss.qvalue_params is q.q_params


@needs_next
def test_torchrls_own_stepper_runs_the_mbdpo_loss_and_every_parameter_has_an_optimiser():
    from torchrl.trainers.algorithms.tdmpc2 import TdMpc2OptimizationStepper

    from torchrl_mbdpo import MBDPOLoss
    from torchrl_mbdpo.modules import make_score_network
    from torchrl_mbdpo.objectives import make_optimizers

    wm, prior, q, energy = torchrl_components()
    loss = MBDPOLoss(wm, prior, q, horizon=H, energy=energy, score_network=make_score_network(LATENT, ACT, H, MLP), use_score_network=True)
    model_optim, actor_optim = make_optimizers(loss)
    in_optimisers = {id(p) for o in (model_optim, actor_optim) for g in o.param_groups for p in g["params"]}
    missing = [n for n, p in loss.named_parameters() if p.requires_grad and id(p) not in in_optimisers]
    assert not missing, missing  # energy network, score network, Q heads, world model, policy prior: all trained
    assert {id(p) for p in energy.parameters()} <= in_optimisers

    class Trainer:  # what TorchRL's stepper reads of its trainer
        loss_module, clip_grad_norm, clip_norm = loss, True, 20.0

    stepper = TdMpc2OptimizationStepper(loss, model_optim, actor_optim)
    before = [p.clone() for p in energy.parameters()]
    metrics = stepper.step(Trainer(), slices())
    assert torch.isfinite(metrics["loss_model"]) and torch.isfinite(metrics["loss_actor"])
    assert any(not torch.equal(a, b) for a, b in zip(before, energy.parameters()))  # F is trained by TorchRL's own stepper


@needs_next
def test_config_store_holds_mbdpo_beside_tdmpc2():
    from hydra.core.config_store import ConfigStore

    import torchrl_mbdpo.trainers.torchrl_configs  # noqa: F401

    repo = ConfigStore.instance().repo
    for group, name in (
        ("trainer", "mbdpo"),
        ("loss", "mbdpo"),
        ("model", "mbdpo_planner"),
        ("hook", "mbdpo_optimization"),
        ("model", "mbdpo_energy"),
        ("trainer", "tdmpc2"),
        ("loss", "tdmpc2"),
    ):
        assert f"{name}.yaml" in repo[group], (group, name)


# ----------------------------------------------------------------------------------------- the recipe
TINY = [
    "collector.total_frames=300",
    "collector.frames_per_batch=50",
    "collector.init_random_frames=100",
    "trainer.seed_pretrain_steps=20",
    "trainer.optim_steps_per_batch=10",
    "trainer.batch_size=32",
    "trainer.log_interval=50",
    "trainer.progress_bar=false",
    "models.world_model.latent_dim=32",
    "models.world_model.mlp_dim=64",
    "models.world_model.encoder_dim=64",
    "models.policy_prior.latent_dim=32",
    "models.policy_prior.mlp_dim=64",
    "models.q_ensemble.latent_dim=32",
    "models.q_ensemble.mlp_dim=64",
    "models.planner.num_samples=32",
    "models.planner.num_elites=4",
    "models.planner.num_pi_trajs=4",
    "models.planner.iterations=2",
]


def _scalars(run_dir: Path) -> dict[str, list[float]]:
    out = {}
    for path in run_dir.glob("**/scalars/*.csv"):
        out[path.stem] = [float(line.split(",")[1]) for line in path.read_text().splitlines() if line.strip()]
    return out


@needs_next
@pytest.mark.slow
@pytest.mark.parametrize("trainer", ["tdmpc2", "mbdpo"])
def test_the_same_recipe_trains_torchrls_tdmpc2_and_mbdpo_on_dmcontrol(tmp_path, trainer):
    extra = ["trainer.diffusion_steps=3"] if trainer == "mbdpo" else []
    proc = subprocess.run(
        [sys.executable, str(RECIPE), f"trainer={trainer}", *TINY, *extra, f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    scalars = _scalars(tmp_path)
    assert scalars["train_reward"] and all(math.isfinite(v) for v in scalars["loss_model"])
    assert "loss_actor" in scalars
    assert ("loss_energy" in scalars) == (trainer == "mbdpo")  # MBDPO's extra term, trained by MBDPO's stepper
