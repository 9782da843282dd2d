"""Official MBDPO / TD-MPC2 checkpoints in and out (``mbdpo-import``, ``mbdpo-export``).

Expected values come from the fixture's reference outputs, computed by the official code on its own
checkpoints (``shared/fixtures/official-mbdpo``). Where those outputs cannot tell a wrong import from a right
one (reward, energy and Q heads of a fresh model have zero output weights, so they ignore their inputs), the
heads are given random output weights and compared with a forward pass written from the official layout
(:func:`official_forward`, itself checked against the reference outputs first).
"""

import math
import os
from pathlib import Path

import imageio.v2 as imageio
import pytest
import torch
import torch.nn.functional as F

from torchrl_mbdpo.data.task_sets import TASK_SETS
from torchrl_mbdpo.modules import MBDPOWorldModel, PlannerConfig, WorldModelConfig
from torchrl_mbdpo.trainers.agent import load_agent
from torchrl_mbdpo.trainers.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from torchrl_mbdpo.trainers.interop import export_checkpoint, import_checkpoint

from helpers import run_cli as _cli

_REPO = Path(__file__).resolve().parents[1]
# shared/ lies in the checkout or beside it (as on CI); MBDPO_OFFICIAL_FIXTURES points elsewhere.
FIXTURES = next(
    (
        p
        for p in [
            os.environ.get("MBDPO_OFFICIAL_FIXTURES"),
            _REPO / "shared" / "fixtures" / "official-mbdpo",
            _REPO.parent / "shared" / "fixtures" / "official-mbdpo",
        ]
        if p and Path(p).is_dir()
    ),
    None,
)
FIXTURES = Path(FIXTURES) if FIXTURES else _REPO / "shared" / "fixtures" / "official-mbdpo"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason="the official-MBDPO fixtures (shared/fixtures/official-mbdpo) are not here")
NAMES = {"single": "mbdpo_official_cheetah-run_size1", "mt30": "mbdpo_official_mt30_size1"}
OUTPUTS = ["latent", "next_latent", "reward_logits", "q_logits_all", "energy", "score", "pi_raw_mean", "pi_raw_log_std"]
TINY_PLANNER = ["+planner.steps=2", "+planner.num_samples=8", "+planner.num_elites=2", "+planner.num_pi_trajs=2"]


def official(kind):
    return torch.load(FIXTURES / f"{NAMES[kind]}.pt", weights_only=True)["model"]


def reference(kind):
    return torch.load(FIXTURES / f"{NAMES[kind]}_reference.pt", weights_only=True)


def fixture_keys(kind):
    return [tuple(line.split("\t")) for line in (FIXTURES / f"{NAMES[kind]}_keys.txt").read_text().splitlines()]


# ----------------------------------------------------------------------------- the official layout, written out
def _mlp(sd, prefix, x, head=None, simnorm=False):
    """The official ``layers.mlp`` from its state dict: NormedLinear (Linear, LayerNorm, Mish) layers, then a
    plain Linear, or a NormedLinear with SimNorm (``simnorm``). ``head`` picks one member of stacked Q weights."""
    i = 0
    while f"{prefix}.{i}.weight" in sd:
        w, b = sd[f"{prefix}.{i}.weight"], sd[f"{prefix}.{i}.bias"]
        if head is not None:
            w, b = w[head], b[head]
        x = F.linear(x, w, b)
        last = f"{prefix}.{i + 1}.weight" not in sd
        if f"{prefix}.{i}.ln.weight" in sd:
            lw, lb = sd[f"{prefix}.{i}.ln.weight"], sd[f"{prefix}.{i}.ln.bias"]
            x = F.layer_norm(x, x.shape[-1:], lw if head is None else lw[head], lb if head is None else lb[head])
            if last and simnorm:
                x = torch.softmax(x.unflatten(-1, (-1, 8)), -1).flatten(-2)
            else:
                x = F.mish(x)
        i += 1
    return x


def official_forward(sd, inputs):
    """Every reference output from an official state dict (``[z, e, a]`` inputs, task embedding with max_norm 1)."""
    task = inputs.get("task")
    emb = (
        (lambda x: [F.embedding(task, sd["_task_emb.weight"].clone(), max_norm=1.0).expand(*x.shape[:-1], -1)])
        if task is not None
        else (lambda x: [])
    )
    cat = lambda *parts: torch.cat([p for p in parts if p is not None], -1)  # noqa: E731
    obs, a, plan, tau = inputs["obs"], inputs["action"], inputs["noisy_plan"], inputs["tau"]
    z = _mlp(sd, "_encoder.state", cat(obs, *emb(obs)), simnorm=True)
    za = cat(z, *emb(z), a)
    half = 32
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / (half - 1))
    t_emb = torch.cat([torch.sin(tau.float()[:, None] * freqs), torch.cos(tau.float()[:, None] * freqs)], -1)
    num_q = sd["_Qs.params.0.weight"].shape[0]
    mu, log_std = _mlp(sd, "_pi", cat(z, *emb(z))).chunk(2, -1)
    return {
        "latent": z,
        "next_latent": _mlp(sd, "_dynamics", za, simnorm=True),
        "reward_logits": _mlp(sd, "_reward", za),
        "q_logits_all": torch.stack([_mlp(sd, "_Qs.params", za, head=h) for h in range(num_q)]),
        "energy": _mlp(sd, "_F", za),
        "score": _mlp(sd, "_score", cat(z, *emb(z), plan.flatten(-2), t_emb)).unflatten(-1, plan.shape[-2:]),
        "pi_raw_mean": mu,
        "pi_raw_log_std": log_std,
    }


def our_outputs(world_model, inputs):
    task = inputs.get("task")
    world_model.eval()
    with torch.no_grad():
        z = world_model.encode_obs(inputs["obs"], task)
        a = inputs["action"]
        mu, log_std = world_model.policy.module(z, *world_model.task_args(task)).chunk(2, -1)
        plan = inputs["noisy_plan"]
        score = world_model.score(z, plan, inputs["tau"], task) if plan.shape[-2] == world_model.cfg.horizon else None
        return {
            "latent": z,
            "next_latent": world_model.next(z, a, task),
            "reward_logits": world_model.reward(z, a, task),
            "q_logits_all": world_model.q_logits(z, a, task),
            "energy": world_model.energy_logit(z, a, task),
            "target_q_logits_all": world_model.q_logits(z, a, task, source="target"),
            "score": score,
            "pi_raw_mean": mu,
            "pi_raw_log_std": log_std,
        }


def world_model_of(state):
    wm = MBDPOWorldModel(WorldModelConfig.from_dict(state["world_model_config"]))
    wm.load_state_dict(state["world_model"])
    return wm


def assert_close(got, expected, names, atol=1e-5):
    for name in names:
        assert got[name].shape == expected[name].shape, name
        err = (got[name] - expected[name]).abs().max().item()
        assert err <= atol, f"{name}: max abs error {err:.3g}"


# ----------------------------------------------------------------------------- import
@pytest.mark.parametrize("kind", ["single", "mt30"])
def test_import_reproduces_every_reference_output_of_the_official_model(kind, tmp_path):
    state = import_checkpoint(FIXTURES / f"{NAMES[kind]}.pt", tmp_path / "ours.pt")
    ref = reference(kind)
    assert_close(our_outputs(world_model_of(state), ref), ref, OUTPUTS)
    cfg = state["world_model_config"]
    assert (cfg["obs_dim"], cfg["action_dim"], cfg["latent_dim"], cfg["mlp_dim"], cfg["enc_dim"], cfg["num_q"]) == (
        (17, 6) if kind == "single" else (24, 6)
    ) + (128, 384, 256, 2)
    assert (cfg["num_tasks"], cfg["task_dim"]) == ((1, 0) if kind == "single" else (30, 64))
    if kind == "mt30":
        assert cfg["action_dims"] == official("mt30")["_action_masks"].sum(1).int().tolist()
        assert state["task_names"] == TASK_SETS["mt30"] and state["config"]["task"] == "mt30"
    else:
        assert state["task"]["name"] == "cheetah-run"  # from the file name: the official files do not record it
    assert state["config"]["algo"] == "mbdpo" and state["imported"]["format"] == "mbdpo"
    assert load_checkpoint(tmp_path / "ours.pt")["world_model_config"] == cfg


def with_output_weights(sd: dict) -> dict:
    """The official state dict with random output weights for reward, F and Q (and random Q LayerNorms),
    the target Qs half the online ones."""
    sd, g = dict(sd), torch.Generator().manual_seed(1)
    for key in ("_reward.2.weight", "_F.2.weight", "_Qs.params.2.weight"):
        sd[key] = 0.05 * torch.randn(sd[key].shape, generator=g)
    for key in [k for k in sd if k.startswith("_Qs.params.") and ".ln." in k]:
        sd[key] = sd[key] + 0.2 * torch.randn(sd[key].shape, generator=g)
    for key in [k for k in sd if k.startswith("_Qs.params.")]:
        sd[key.replace("_Qs.params.", "_detach_Qs_params.")] = sd[key.replace("_Qs.params.", "_target_Qs_params.")] = sd[key]
    sd["_target_Qs_params.2.weight"] = 0.5 * sd["_Qs.params.2.weight"]
    return sd


@pytest.mark.parametrize("kind", ["single", "mt30"])
def test_import_of_heads_with_output_weights_matches_the_official_layout(kind, tmp_path):
    """The reference heads are zero-initialised (their outputs ignore the input order): give them weights."""
    sd, ref = official(kind), reference(kind)
    assert_close(official_forward(sd, ref), ref, OUTPUTS)  # the written-out official forward is the official model's
    sd = with_output_weights(sd)
    torch.save({"model": sd}, tmp_path / "official.pt")
    wm = world_model_of(import_checkpoint(tmp_path / "official.pt", task="cheetah-run" if kind == "single" else None))
    expected = official_forward(sd, ref)
    ours = our_outputs(wm, ref)
    assert ours["reward_logits"].std(0).max() > 1e-3 and ours["q_logits_all"].std(1).max() > 1e-3  # input-dependent now
    assert_close(ours, expected, OUTPUTS)
    target = official_forward({**sd, "_Qs.params.2.weight": sd["_target_Qs_params.2.weight"]}, ref)["q_logits_all"]
    assert (ours["target_q_logits_all"] - target).abs().max() <= 1e-5


def _tdmpc2_layout(sd: dict, layout: str) -> dict:
    """The fixture in TD-MPC2's layouts: no F, no score; ``parameter_list``: functorch's ParameterList of the
    released checkpoints (``_Qs.params.<n>``, ``_target_Qs.params.<n>``, no log-std or mask buffers);
    ``per_head``: one module per Q head."""
    sd = {k: v for k, v in sd.items() if not k.startswith(("_F.", "_score."))}
    if layout == "stacked":
        return sd
    names = ["weight", "bias", "ln.weight", "ln.bias"]
    out = {k: v for k, v in sd.items() if "Qs" not in k and k not in ("log_std_min", "log_std_dif", "_action_masks")}
    for src, dst in (("_Qs.params.", "_Qs"), ("_target_Qs_params.", "_target_Qs")):
        for key, value in sd.items():
            if key.startswith(src):
                layer, name = key[len(src) :].split(".", 1)
                if layout == "parameter_list":
                    out[f"{dst}.params.{4 * int(layer) + names.index(name)}"] = value
                else:
                    for head in range(value.shape[0]):
                        out[f"{dst}.{head}.{layer}.{name}"] = value[head]
    return out


@pytest.mark.parametrize("layout", ["stacked", "parameter_list", "per_head"])
@pytest.mark.parametrize("kind", ["single", "mt30"])
def test_import_of_tdmpc2_checkpoints_in_each_layout(kind, layout, tmp_path):
    sd = with_output_weights(official(kind))
    torch.save({"model": _tdmpc2_layout(sd, layout)}, tmp_path / "tdmpc2.pt")
    state = import_checkpoint(tmp_path / "tdmpc2.pt", task="cheetah-run" if kind == "single" else None)
    assert state["imported"]["format"] == "tdmpc2" and state["imported"]["q_layout"] == layout
    assert state["config"]["algo"] == "tdmpc2"
    notes = " | ".join(state["imported"]["notes"])
    assert "energy network F starts fresh: TD-MPC2 has none" in notes and "score network starts fresh" in notes
    ref = reference(kind)
    ours = our_outputs(world_model_of(state), ref)
    assert_close(ours, ref, ["latent", "next_latent", "pi_raw_mean", "pi_raw_log_std"])
    assert_close(ours, official_forward(sd, ref), ["reward_logits", "q_logits_all"])
    target = official_forward({**sd, "_Qs.params.2.weight": sd["_target_Qs_params.2.weight"]}, ref)["q_logits_all"]
    assert (ours["target_q_logits_all"] - target).abs().max() <= 1e-5
    assert torch.equal(ours["energy"], torch.zeros_like(ours["energy"]))  # fresh F: zero output layer
    if layout == "parameter_list" and kind == "mt30":  # no mask buffer: masks from the tasks' action sizes
        assert "no action masks" in notes and state["world_model_config"]["action_dims"][3] == 6  # cheetah-run


def test_an_imported_checkpoint_evaluates_with_a_video(tmp_path):
    out = _cli("import_main", f"checkpoint={FIXTURES / NAMES['single']}.pt", "out=single.pt", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "task cheetah-run" in out.stdout and "note: energy normalisation" in out.stdout
    ev = _cli("eval_main", "checkpoint=single.pt", "eval_episodes=1", "save_video=true", "video_size=64", *TINY_PLANNER, cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert "task cheetah-run: mean return" in ev.stdout and math.isfinite(float(ev.stdout.split("mean_return=")[1].split()[0]))
    video = tmp_path / "videos" / "eval_cheetah-run_step0.mp4"  # mbdpo-eval save_video=true: the evaluated episode
    assert f"video of the 1 episodes: {video.relative_to(tmp_path)}" in ev.stdout
    reader = imageio.get_reader(video)
    assert sum(1 for _ in reader) == 501 and reader.get_meta_data()["size"] == (64, 64)
    reader.close()
    again = _cli("import_main", f"checkpoint={FIXTURES / NAMES['single']}.pt", "out=single.pt", cwd=tmp_path)
    assert again.returncode == 2 and "exists; nothing was written" in again.stderr and "Traceback" not in again.stderr


def test_an_imported_multitask_checkpoint_starts_fine_tuning(tmp_path):
    """walker-run held out of the "pretraining", fine-tuned from walker-walk's embedding."""
    from torchrl_mbdpo.trainers.finetune import FinetuneConfig, make_finetune_trainer

    imported = import_checkpoint(FIXTURES / f"{NAMES['mt30']}.pt", tmp_path / "mt30.pt", exclude_tasks=["walker-run"])
    assert "walker-run" not in imported["trained_tasks"] and len(imported["trained_tasks"]) == 29
    _, _, wm, _ = load_agent(tmp_path / "mt30.pt")
    cfg = FinetuneConfig(
        checkpoint=str(tmp_path / "mt30.pt"),
        task="walker-run",
        source_task="walker-walk",
        steps=20,
        eval_freq=10_000,
        eval_episodes=1,
        checkpoint_freq=10_000,
        batch_size=16,
        planner=PlannerConfig(steps=2, num_samples=8, num_elites=2, num_pi_trajs=2),
        work_dir=str(tmp_path / "ft"),
        progress=False,
        threads=1,
    )
    ft = make_finetune_trainer(cfg)
    emb = ft.world_model.task_emb.weight
    assert torch.equal(emb[2], emb[1])  # walker-run (index 2) starts from walker-walk's embedding
    for key, value in wm.state_dict().items():
        if key != "task_emb.weight":
            assert torch.equal(ft.world_model.state_dict()[key], value), key
    ft.train()
    assert [int(r["step"]) for r in ft.run.eval_log.rows()] == [0, 20]
    assert load_checkpoint(tmp_path / "ft" / "checkpoints" / "latest.pt")["task_names"][2] == "walker-run"


def test_bad_files_get_one_clear_error_each_and_nothing_is_overwritten(tmp_path):
    good = (FIXTURES / f"{NAMES['single']}.pt").read_bytes()
    out = tmp_path / "out.pt"
    (tmp_path / "truncated.pt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        import_checkpoint(tmp_path / "truncated.pt", out)
    (tmp_path / "text.pt").write_text("not a checkpoint at all")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        import_checkpoint(tmp_path / "text.pt", out)
    torch.save({"state_dict": {"layer.weight": torch.zeros(2, 2)}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not an official MBDPO or TD-MPC2 checkpoint"):
        import_checkpoint(tmp_path / "other.pt", out)
    save_checkpoint({"world_model": {}}, tmp_path / "ours.pt")
    with pytest.raises(CheckpointError, match="already a torchrl_mbdpo checkpoint"):
        import_checkpoint(tmp_path / "ours.pt", out)
    sd = official("single")
    sd["_dynamics.0.weight"] = torch.zeros(384, 100)
    torch.save({"model": sd}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match="fit no architecture"):
        import_checkpoint(tmp_path / "odd.pt", out, task="cheetah-run")
    sd = official("single")
    sd["_reward.1.weight"] = torch.zeros(384, 300)
    torch.save({"model": sd}, tmp_path / "odd2.pt")
    with pytest.raises(CheckpointError, match=r"fit no architecture.*_reward.1.weight has shape \(384, 300\)"):
        import_checkpoint(tmp_path / "odd2.pt", out, task="cheetah-run")
    (tmp_path / "model.pt").write_bytes(good)
    with pytest.raises(CheckpointError, match="pass task=<name>; tasks of these sizes: cheetah-run, "):  # five tasks of its sizes
        import_checkpoint(tmp_path / "model.pt", out)
    assert not out.exists()
    out.write_bytes(b"precious")
    with pytest.raises(CheckpointError, match="overwrite=true"):
        import_checkpoint(FIXTURES / f"{NAMES['single']}.pt", out)
    with pytest.raises(CheckpointError, match="overwrite=true"):
        export_checkpoint(tmp_path / "ours.pt", out)
    assert out.read_bytes() == b"precious"
    with pytest.raises(CheckpointError, match="converts with mbdpo-import"):  # an official file given to mbdpo-eval & co
        load_checkpoint(FIXTURES / f"{NAMES['single']}.pt")
    with pytest.raises(CheckpointError, match="observation 17 and action 6"):
        import_checkpoint(FIXTURES / f"{NAMES['single']}.pt", task="cartpole-swingup")


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("kind", ["single", "mt30"])
def test_export_has_the_official_keys_and_shapes(kind, tmp_path):
    """A model built here (not imported) with the fixture's architecture exports to exactly its key list."""
    mt = kind == "mt30"
    cfg = WorldModelConfig.from_size(1, 24 if mt else 17, 6, **(dict(num_tasks=30, task_dim=64, action_dims=[6] * 30) if mt else {}))
    export_checkpoint(MBDPOWorldModel(cfg), tmp_path / "official.pt")
    sd = torch.load(tmp_path / "official.pt", weights_only=True)["model"]
    assert [(k, str(tuple(v.shape))) for k, v in sd.items()] == fixture_keys(kind)
    assert all(sd[k].dtype == v.dtype for k, v in official(kind).items())


def test_import_then_export_gives_back_the_official_file(tmp_path):
    src = FIXTURES / f"{NAMES['mt30']}.pt"
    out = _cli("import_main", f"checkpoint={src}", "out=mt30.pt", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    out = _cli("export_main", "checkpoint=mt30.pt", "out=back.pt", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    back, original = torch.load(tmp_path / "back.pt", weights_only=True)["model"], official("mt30")
    assert list(back) == list(original)
    for key, value in original.items():
        assert torch.equal(back[key], value) and back[key].dtype == value.dtype, key


ROUND_TRIP = {
    "single": dict(obs_dim=5, action_dim=1, task="cartpole-swingup"),
    "multitask-episodic": dict(
        obs_dim=6,
        action_dim=2,
        num_tasks=3,
        task_dim=8,
        action_dims=[1, 2, 1],
        episodic=True,
        horizon=4,
        tasks=["cartpole-balance", "reacher-easy", "pendulum-swingup"],
    ),
    "rgb": dict(obs_dim=9, action_dim=6, obs_type="rgb", latent_dim=512, task="cheetah-run"),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIP))
@pytest.mark.parametrize("fmt", ["mbdpo", "tdmpc2"])
def test_export_then_import_reproduces_our_outputs_exactly(case, fmt, tmp_path):
    spec = dict(ROUND_TRIP[case])
    task, tasks = spec.pop("task", None), spec.pop("tasks", None)
    arch = dict(latent_dim=16, mlp_dim=32, enc_dim=24, num_enc_layers=3, num_q=3)
    arch.update(spec)
    wm = MBDPOWorldModel(WorldModelConfig(**arch))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # every weight random (fresh heads are zero and would hide a wrong column order)
        for p in list(wm.parameters()) + list(wm.target_q_params.values(True, True)):
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    cfg = wm.cfg
    ours = {"world_model_config": cfg.to_dict(), "world_model": wm.state_dict()}
    export_checkpoint(ours, tmp_path / "official.pt", fmt=fmt)
    state = import_checkpoint(tmp_path / "official.pt", tmp_path / "back.pt", task=task, tasks=tasks)
    back = world_model_of(load_checkpoint(tmp_path / "back.pt"))
    assert state["imported"]["format"] == fmt
    B, H, A = 5, cfg.horizon, cfg.action_dim
    obs = torch.randint(0, 255, (B, 9, 64, 64), dtype=torch.uint8) if cfg.obs_type == "rgb" else torch.randn(B, cfg.obs_dim)
    inputs = {"obs": obs, "action": torch.rand(B, A) * 2 - 1, "noisy_plan": torch.randn(B, H, A), "tau": torch.arange(B)}
    if cfg.multitask:
        inputs["task"] = torch.arange(B) % cfg.num_tasks
    torch.manual_seed(3)
    expected = our_outputs(wm, inputs)
    torch.manual_seed(3)
    got = our_outputs(back, inputs)
    same = OUTPUTS + ["target_q_logits_all"]
    if fmt == "tdmpc2":
        same = [n for n in same if n not in ("energy", "score")]
    for name in same:
        assert torch.equal(got[name], expected[name]), name
    assert back.cfg.episodic == cfg.episodic and back.cfg.horizon == (cfg.horizon if fmt == "mbdpo" else 3)
    if cfg.multitask:
        assert back.cfg.action_dims == cfg.action_dims and torch.equal(back.task_emb.weight, wm.task_emb.weight)


def test_export_refuses_what_the_official_layout_cannot_hold(tmp_path):
    with pytest.raises(CheckpointError, match="latent_dim 512"):
        export_checkpoint(MBDPOWorldModel(WorldModelConfig(obs_dim=9, action_dim=1, latent_dim=64, obs_type="rgb")), tmp_path / "x.pt")
    out = _cli("export_main", f"checkpoint={tmp_path / 'missing.pt'}", "out=x.pt", cwd=tmp_path)
    assert out.returncode == 2 and "No checkpoint at" in out.stderr
    assert not (tmp_path / "x.pt").exists()
