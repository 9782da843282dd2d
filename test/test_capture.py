"""Issue 18: the planners and the update are capture-safe (no host synchronisation, no tensor on another
device: proven on the meta device under :class:`CaptureAudit`), compile to one graph per piece
(``fullgraph=True``), give eager's numbers for the same random draws, and do not recompile on new inputs."""

import contextlib
import warnings
from unittest import mock

import pytest
import torch
from tensordict import TensorDict

from torchrl_mbdpo.modules import DiffusionActor, MBDPOWorldModel, MPPIActor, PlannerConfig, WorldModelConfig, functional
from torchrl_mbdpo.modules.capture import CaptureAudit, CaptureError
from torchrl_mbdpo.modules.compile import CompileOptions, compile_report
from torchrl_mbdpo.modules.mppi import MPPIConfig
from torchrl_mbdpo.objectives import MBDPOLoss, TDMPC2Loss
from torchrl_mbdpo.trainers.optimization import CompiledUpdate, make_optimizers, update

import helpers

OBS, ACT = helpers.OBS_DIM, helpers.ACTION_DIM
VARIANTS = {
    "single": {},
    "multitask_episodic": dict(num_tasks=3, task_dim=4, action_dims=[2, 1, 2], episodic=True),
}


@contextlib.contextmanager
def meta_device():
    """Build on the meta device (tensors without storage). TorchRL's ``SoftUpdate`` asks ``is_set_to`` at
    construction, which has no meta kernel: answered by identity here."""
    with torch.device("meta"), mock.patch.object(torch.Tensor, "is_set_to", lambda self, other: self is other):
        yield


def capturable_on_meta():
    """Capturable Adam checks that its tensors are on an accelerator; the meta device stands in for CUDA."""
    return mock.patch("torch.optim.adam._get_capturable_supported_devices", lambda supports_xla=True: ["cuda", "meta"])


def tiny_world_model(variant="single", num_q=5, seed=0, perturb=False):
    torch.manual_seed(seed)
    cfg = WorldModelConfig.from_size(1, OBS, ACT, latent_dim=16, mlp_dim=32, enc_dim=32, num_q=num_q, **VARIANTS[variant])
    wm = MBDPOWorldModel(cfg)
    if perturb:  # heads not zero-initialised, so that candidates' returns differ
        with torch.no_grad():
            for p in wm.parameters():
                p.add_(0.1 * torch.randn_like(p))
    return wm.eval()


def make_actor(wm, planner):
    if planner == "mppi":
        return MPPIActor(wm, MPPIConfig(iterations=2, num_samples=16, num_elites=4, num_pi_trajs=2))
    return DiffusionActor(wm, PlannerConfig(steps=3, num_samples=16, num_elites=4, num_pi_trajs=2, score_source=planner))


def plan_inputs(wm, num_envs, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(num_envs, OBS, generator=g)
    prev = torch.rand(num_envs, 3, ACT, generator=g) * 2 - 1
    init = torch.arange(num_envs) % 2 == 0
    task = torch.arange(num_envs) % 3 if wm.cfg.multitask else None
    return [None if t is None else t.to(device) for t in (obs, prev, init, task)]


def tiny_loss(loss_cls=MBDPOLoss, variant="single", num_q=5, seed=0):
    wm = tiny_world_model(variant, num_q, seed)
    kwargs = dict(use_score_network=True, score_num_samples=8, diffusion_steps=3) if loss_cls is MBDPOLoss else {}
    loss = loss_cls(wm, **kwargs)
    from torchrl.objectives import SoftUpdate

    return loss, SoftUpdate(loss, tau=0.01)


# ------------------------------------------------------------------------------------------ the audit itself
def test_audit_fails_on_host_syncs_and_stray_devices():
    x = torch.randn(4, device="meta")
    offences = {
        "item": lambda: x.sum().item(),
        "python if": lambda: bool(x.sum() > 0),
        "boolean mask": lambda: x[x > 0],
        "multinomial": lambda: torch.multinomial(x.abs().unsqueeze(0), 1),
        "host data": lambda: x * torch.tensor([1.0, 2.0, 3.0, 4.0]),
        "cpu scalar tensor": lambda: x * torch.tensor(2.0),
        "to cpu": lambda: x.cpu(),
    }
    for name, fn in offences.items():
        with pytest.raises(CaptureError), CaptureAudit("meta"):
            fn()
    audit = CaptureAudit("meta", strict=False)
    with audit:
        torch.where(x > 0, x, 2.0 * x).exp().sum()  # a where, a Python scalar: fine
    assert audit.offences == [] and audit.ops >= 4


# ------------------------------------------------------------------------------------------ planners on meta
@pytest.mark.parametrize("planner", ["mc", "network", "mppi"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("num_envs", [1, 3])
def test_planner_is_capture_safe(planner, variant, num_envs):
    with meta_device():
        wm = tiny_world_model(variant)
        actor = make_actor(wm, planner)
    obs, prev, init, task = plan_inputs(wm, num_envs, "meta")
    td = TensorDict({"observation": obs, actor.plan_key: prev, "is_init": init}, batch_size=[num_envs], device="meta")
    if task is not None:
        td["task"] = task
    for explore in (True, False):
        with CaptureAudit("meta") as audit:
            action, plan = actor.plan(obs, prev, init, task, explore=explore)
        assert audit.ops > 50 and action.shape == (num_envs, ACT) and plan.device.type == "meta"
    with CaptureAudit("meta"):
        out = actor(td)  # the TensorDict plumbing of the collector's call too
    assert out["action"].device.type == "meta"


def test_planner_audit_fails_on_multinomial_and_host_schedule(monkeypatch):
    """The planner tests can fail: the former multinomial draw and a schedule rebuilt with .tolist() are caught."""
    with meta_device():
        wm = tiny_world_model()
        mppi, diffusion = make_actor(wm, "mppi"), make_actor(wm, "mc")
    obs, prev, init, _ = plan_inputs(wm, 2, "meta")
    monkeypatch.setattr("torchrl_mbdpo.modules.mppi.categorical_sample", lambda w: torch.multinomial(w, 1).squeeze(1))
    with pytest.raises(CaptureError, match="multinomial"), CaptureAudit("meta"):
        mppi.plan(obs, prev, init)

    def rebuilt(self):
        alphas, abar = functional.diffusion_schedule(self.steps, self.beta0, self.betaT)
        return alphas.to("meta").double().tolist(), abar.to("meta").double().tolist()

    monkeypatch.setattr(PlannerConfig, "schedule", rebuilt)
    with pytest.raises(CaptureError), CaptureAudit("meta"):
        diffusion.plan(obs, prev, init)


# ------------------------------------------------------------------------------------------ the update on meta
@pytest.mark.parametrize("loss_cls, variant", [(MBDPOLoss, "single"), (MBDPOLoss, "multitask_episodic"), (TDMPC2Loss, "single")])
@pytest.mark.parametrize("num_q", [2, 5])
def test_update_is_capture_safe(loss_cls, variant, num_q):
    """Model step, policy step, target update, running statistics and the non-finite guard: no host sync, every
    tensor on the batch's device (capturable Adam: its step counters too)."""
    with meta_device():
        loss, updater = tiny_loss(loss_cls, variant, num_q)
        model_optim, pi_optim = make_optimizers(loss, capturable=True)
    batch = helpers.make_batch(task=loss.latent_model.cfg.multitask).to("meta")
    with capturable_on_meta(), CaptureAudit("meta") as audit:
        info = update(loss, batch, model_optim, pi_optim, updater)  # off the CPU: the sync-free guard
        info = update(loss, batch, model_optim, pi_optim, updater)  # with the optimiser state now present
    assert audit.ops > 1000
    assert {v.device.type for v in info.values()} == {"meta"} and info["nonfinite_skipped"].shape == ()
    assert {s["step"].device.type for s in model_optim.state.values()} == {"meta"}


def test_update_audit_fails_on_the_host_guard_and_a_cpu_step_counter():
    """The update tests can fail: the Python-branch guard and a non-capturable Adam (CPU step counter) are caught
    (with non-capturable optimisers the default guard is the branch: a sync-free one would sync per parameter)."""
    with meta_device():
        loss, updater = tiny_loss()
        capturable = make_optimizers(loss, capturable=True)
        plain = make_optimizers(loss, capturable=False)
    batch = helpers.make_batch().to("meta")
    with capturable_on_meta(), pytest.raises(CaptureError, match="host synchronisation"), CaptureAudit("meta"):
        update(loss, batch, *capturable, updater, sync_free=False)
    with pytest.raises(CaptureError, match="on cpu"), CaptureAudit("meta"):
        update(loss, batch, *plain, updater, sync_free=True)
    with pytest.raises(CaptureError, match="host synchronisation"), CaptureAudit("meta"):
        update(loss, batch, *plain, updater)  # the default with host step counters: the branch


# ------------------------------------------------------------------------------------------ the sync-free guard
def _run_updates(sync_free, poison_at, loss_cls=MBDPOLoss):
    loss, updater = tiny_loss(loss_cls, num_q=2)
    model_optim, pi_optim = make_optimizers(loss)
    torch.manual_seed(5)
    infos = []
    for i in range(3):
        batch = helpers.make_batch(i)
        if i == poison_at:
            batch["next", "reward"][0, 0] = float("nan")
        infos.append(update(loss, batch, model_optim, pi_optim, updater, sync_free=sync_free))
    return loss, (model_optim, pi_optim), infos


@pytest.mark.parametrize("poison_at", [None, 0, 1])
@pytest.mark.parametrize("loss_cls", [MBDPOLoss, TDMPC2Loss])
def test_sync_free_guard_equals_the_branch_bit_for_bit(poison_at, loss_cls):
    """torch.where puts back exactly what the skipped step would have left: parameters, targets, running statistics,
    Adam's moments and step counts (a skip at the first update too, where Adam's state does not exist yet)."""
    branch, sync_free = _run_updates(False, poison_at, loss_cls), _run_updates(True, poison_at, loss_cls)
    expected = [float(i == poison_at) for i in range(3)]
    assert [float(i["nonfinite_skipped"]) for i in sync_free[2]] == expected == [float(i["nonfinite_skipped"]) for i in branch[2]]
    for key, value in branch[0].state_dict().items():
        assert torch.equal(value, sync_free[0].state_dict()[key]), key
    for ob, os in zip(branch[1], sync_free[1]):
        for p_b, p_s in zip(helpers_params(ob), helpers_params(os)):
            for k, v in ob.state[p_b].items():
                assert torch.equal(v, os.state[p_s][k]), k
    for ib, i_s in zip(branch[2], sync_free[2]):
        for key in ib.keys():
            assert torch.equal(ib[key].nan_to_num(7.0), i_s[key].nan_to_num(7.0)), key


def helpers_params(optimizer):
    return [p for g in optimizer.param_groups for p in g["params"]]


def test_sync_free_guard_skips_a_non_finite_step():
    """The skipped update leaves everything as it was (the guard must not be a no-op); the flag stays a tensor."""
    loss, updater = tiny_loss(num_q=2)
    model_optim, pi_optim = make_optimizers(loss)
    update(loss, helpers.make_batch(0), model_optim, pi_optim, updater, sync_free=True)
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    moments = {k: v.clone() for k, v in model_optim.state[helpers_params(model_optim)[0]].items()}
    batch = helpers.make_batch(1)
    batch["observation"][0, 0, 0] = float("inf")
    info = update(loss, batch, model_optim, pi_optim, updater, sync_free=True)
    assert isinstance(info["nonfinite_skipped"], torch.Tensor) and info["nonfinite_skipped"].item() == 1.0
    for key, value in loss.state_dict().items():
        assert torch.equal(value, before[key]), key
    for key, value in model_optim.state[helpers_params(model_optim)[0]].items():
        assert torch.equal(value, moments[key]), key
    info = update(loss, helpers.make_batch(2), model_optim, pi_optim, updater, sync_free=True)
    assert info["nonfinite_skipped"].item() == 0.0
    after = loss.state_dict()
    assert any(not torch.equal(after[key], before[key]) for key in before)  # a finite step moves the weights again


# ------------------------------------------------------------------------------------------ torch.compile
@pytest.fixture
def no_recompile():
    """Dynamo may compile each function once: a second variant raises (recompile limit 1, and an error on recompile)."""
    torch._dynamo.reset()
    with torch._dynamo.config.patch(recompile_limit=1, fail_on_recompile_limit_hit=True, error_on_recompile=True):
        yield
    torch._dynamo.reset()


@pytest.mark.parametrize("planner", ["mc", "network", "mppi"])
def test_compiled_planner_is_one_graph_equal_to_eager_without_recompiling(planner, no_recompile):
    wm = tiny_world_model(perturb=True)
    eager = make_actor(wm, planner)
    compiled = make_actor(wm, planner).compile_planner(backend="aot_eager")  # fullgraph=True: a graph break fails
    for seed in range(3):  # new observations, warm starts and draws: the same graph
        obs, prev, init, _ = plan_inputs(wm, 2, seed=seed)
        torch.manual_seed(seed)
        expected = eager.plan(obs, prev, init)
        torch.manual_seed(seed)
        got = compiled.plan(obs, prev, init)
        for e, g in zip(expected, got):
            torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    assert f"{type(compiled).__name__}.plan(explore=True)" in compile_report()


def test_compiled_planner_multitask_and_greedy_are_single_graphs():
    torch._dynamo.reset()
    wm = tiny_world_model("multitask_episodic", perturb=True)
    actor = make_actor(wm, "mc")
    obs, prev, init, task = plan_inputs(wm, 3)
    for explore in (True, False):
        fn = actor._plan_exploring if explore else actor._plan_greedy
        explanation = torch._dynamo.explain(fn)(obs, prev, init, task)
        assert explanation.graph_count == 1 and explanation.graph_break_count == 0, explanation.break_reasons
    torch.manual_seed(0)
    expected = actor.plan(obs, prev, init, task, explore=False)
    torch.manual_seed(0)
    got = actor.compile_planner(backend="eager").plan(obs, prev, init, task, explore=False)
    torch.testing.assert_close(got, expected)


def _updates(step_fn, seeds=(0, 1, 2)):
    torch.manual_seed(3)
    return [step_fn(helpers.make_batch(seed)) for seed in seeds]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_update_equals_eager_without_recompiling(precision, no_recompile):
    eager_loss, eager_updater = tiny_loss(num_q=2)
    eager_optims = make_optimizers(eager_loss)
    expected = _updates(lambda b: update(eager_loss, b, *eager_optims, eager_updater, precision=precision))
    loss, updater = tiny_loss(num_q=2)
    step = CompiledUpdate(loss, *make_optimizers(loss), updater, precision=precision, backend="aot_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tensordict's lock_() inside a compiled graph
        got = _updates(step)
    # fp32: every update matches. bf16: the first does; later ones drift apart (bf16 roundings of slightly
    # different weights, amplified by the score target's 1 / (1 - abar)), so only the weights are compared there.
    compared = got if precision == "fp32" else got[:1]
    for e, g in zip(expected, compared):
        assert set(e.keys()) == set(g.keys())
        for key in e.keys():
            torch.testing.assert_close(g[key], e[key], rtol=2e-4, atol=1e-5, msg=lambda m: f"{key}: {m}")
    atol = 1e-5 if precision == "fp32" else 2e-3  # Adam moves a weight by about lr = 3e-4 per update
    for (name, p_e), p_g in zip(eager_loss.state_dict().items(), loss.state_dict().values()):
        torch.testing.assert_close(p_g, p_e, rtol=1e-3, atol=atol, msg=lambda m: f"{name}: {m}")
    assert {"update.model_forward", "update.model_step", "update.actor_forward", "update.actor_step"} <= set(compile_report())


def test_compiled_update_skips_non_finite_steps_and_tdmpc2_compiles(no_recompile):
    loss, updater = tiny_loss(TDMPC2Loss, "multitask_episodic")
    model_optim, pi_optim = make_optimizers(loss)
    step = CompiledUpdate(loss, model_optim, pi_optim, updater, backend="eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert step(helpers.make_batch(0, task=True))["nonfinite_skipped"].item() == 0.0
        before = {k: v.clone() for k, v in loss.state_dict().items()}
        batch = helpers.make_batch(1, task=True)
        batch["next", "reward"][2, 1] = float("nan")
        assert step(batch)["nonfinite_skipped"].item() == 1.0
    for key, value in loss.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_compile_options_validate():
    with pytest.raises(ValueError, match="compile mode"):
        CompileOptions(mode="fast")
    with pytest.raises(ValueError, match="cudagraphs=True"):
        CompileOptions(mode="reduce-overhead", cudagraphs=True)
    assert CompileOptions(mode="default").mode is None


def test_chunked_mish_equals_the_unchunked_composite_bit_for_bit():
    """The CPU fast path of Mish runs large no-grad tensors in cache-sized row blocks: the same values, bit for bit."""
    from torchrl_mbdpo.modules.layers import Mish

    mish = Mish()
    with torch.no_grad():
        for shape in [(2304, 384), (5000, 7, 33), (300_000,)]:
            x = torch.randn(*shape) * 5
            assert x.numel() > 2 * Mish.CHUNK_NUMEL
            q = x.clamp(max=20.0).exp_().add_(1.0)
            expected = torch.addcdiv(x, x, q.mul_(q).add_(1.0), value=-2.0)
            assert torch.equal(mish(x), expected)
            torch.testing.assert_close(mish(x), torch.nn.functional.mish(x), atol=5e-6, rtol=0)
