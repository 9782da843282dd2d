"""Offline multi-task pretraining: TD-MPC2 chunk datasets (format, validator, memmap loader), the offline
trainer, fine-tuning from its checkpoint and the multi-task evaluation. The datasets are written from real
DMControl / MetaWorld rollouts by ``generate_dataset``."""

import shutil
from pathlib import Path

import pytest
import torch

from torchrl_mbdpo.data.task_sets import TASK_SETS
from torchrl_mbdpo.data.tdmpc2_dataset import DatasetError, load_dataset, validate_dataset
from torchrl_mbdpo.modules import PlannerConfig
from torchrl_mbdpo.trainers.checkpoint import load_checkpoint
from torchrl_mbdpo.trainers.config import ModelOverrides, TrainConfig
from torchrl_mbdpo.trainers.finetune import FinetuneConfig, add_task, make_finetune_trainer
from torchrl_mbdpo.trainers.generate_data import generate_dataset
from torchrl_mbdpo.trainers.offline import make_offline_trainer, normalized_score, task_score

TASKS = ["cartpole-balance", "pendulum-swingup"]
TINY_PLANNER = PlannerConfig(steps=2, num_samples=8, num_elites=2, num_pi_trajs=2)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "mt30-small"
    generate_dataset(out, TASKS, episodes_per_task=2, episodes_per_chunk=3, progress=False)
    return out


def copy_of(dataset, tmp_path) -> Path:
    target = tmp_path / "copy"
    shutil.copytree(dataset, target, ignore=shutil.ignore_patterns("memmap"))
    return target


def test_generated_chunks_have_tdmpc2_layout(dataset):
    chunks = sorted(dataset.glob("chunk_*.pt"))
    assert [p.name for p in chunks] == ["chunk_0.pt", "chunk_1.pt"]  # 4 episodes, 3 per file
    chunk = torch.load(chunks[0], weights_only=False)
    n = chunk.batch_size[0]
    assert tuple(chunk.batch_size) == (n, 501)
    assert chunk["obs"].shape == (n, 501, 24) and chunk["obs"].dtype == torch.float32
    assert chunk["action"].shape == (n, 501, 6) and chunk["reward"].shape == (n, 501)
    assert chunk["task"].dtype == torch.int32
    assert torch.isnan(chunk["action"][:, 0]).all() and torch.isnan(chunk["reward"][:, 0]).all()
    assert torch.isfinite(chunk["action"][:, 1:]).all() and torch.isfinite(chunk["reward"][:, 1:]).all()
    for episode in range(n):
        name = TASK_SETS["mt30"][int(chunk["task"][episode, 0])]
        assert name in TASKS
        obs_dim, action_dim = {"cartpole-balance": (5, 1), "pendulum-swingup": (3, 1)}[name]
        assert (chunk["obs"][episode, :, obs_dim:] == 0).all() and chunk["obs"][episode, :, :obs_dim].abs().sum() > 0
        assert (chunk["action"][episode, 1:, action_dim:] == 0).all()
    info = validate_dataset(dataset, "mt30")
    assert info.episodes == {"pendulum-swingup": 2, "cartpole-balance": 2}


def test_loader_round_trip_gives_within_episode_slices(dataset, tmp_path):
    buffer, info = load_dataset(dataset, horizon=3, batch_size=64, cache_dir=tmp_path / "cache", progress=False)
    batch = buffer.sample()
    assert tuple(batch.batch_size) == (64, 3)
    assert torch.equal(batch["next", "observation"][:, :-1], batch["observation"][:, 1:])  # consecutive rows
    assert (batch["task"] == batch["task"][:, :1]).all() and (batch["episode"] == batch["episode"][:, :1]).all()
    assert torch.isfinite(batch["action"]).all()  # never the NaN row 0
    assert not batch["next", "terminated"].any()
    assert torch.allclose(batch["discount"], torch.tensor(0.99))
    # Every sampled transition is (o_t, a_t, r_t, o_t+1) = (obs[t], action[t+1], reward[t+1], obs[t+1]) of a chunk episode.
    chunks = [torch.load(p, weights_only=False) for p in sorted(dataset.glob("chunk_*.pt"))]
    obs = torch.cat([c["obs"] for c in chunks])
    for b in range(0, 64, 16):
        o = batch["observation"][b, 0]
        episode, row = (obs == o).all(-1).nonzero()[0].tolist()
        source = chunks[0] if episode < len(chunks[0]) else chunks[1]
        e = episode if episode < len(chunks[0]) else episode - len(chunks[0])
        assert torch.equal(batch["action"][b], source["action"][e, row + 1 : row + 4])
        assert torch.equal(batch["next", "reward"][b].squeeze(-1), source["reward"][e, row + 1 : row + 4])
        assert TASK_SETS["mt30"][int(batch["task"][b, 0])] == info.tasks[int(source["task"][e, 0])]


def test_loader_reuses_its_memmap_copy_until_the_files_change(dataset, tmp_path, monkeypatch):
    import torchrl_mbdpo.data.tdmpc2_dataset as module

    data = copy_of(dataset, tmp_path)
    load_dataset(data, horizon=3, batch_size=4, tasks=["pendulum-swingup"], progress=False)
    assert (data / "memmap" / "rows").is_dir() and (data / "memmap" / "metadata.json").exists()

    def no_rebuild(*args, **kwargs):
        raise AssertionError("rebuilt the cache")

    with monkeypatch.context() as m:
        m.setattr(module, "_build_cache", no_rebuild)
        buffer, _ = load_dataset(data, horizon=3, batch_size=4, tasks=["pendulum-swingup"], progress=False)
        assert (buffer.sample()["task"] == TASK_SETS["mt30"].index("pendulum-swingup")).all()  # only the selected task
        with pytest.raises(AssertionError, match="rebuilt"):
            load_dataset(data, horizon=3, batch_size=4, tasks=TASKS, progress=False)  # another selection
    buffer, _ = load_dataset(data, horizon=3, batch_size=64, tasks=TASKS, progress=False)
    assert set(buffer.sample()["task"].unique().tolist()) == {TASK_SETS["mt30"].index(t) for t in TASKS}


def test_mt80_layout_stores_101_row_segments(tmp_path):
    pytest.importorskip("metaworld")
    info = generate_dataset(tmp_path / "mt80", ["cartpole-swingup", "mw-reach"], 1, task_set="mt80", progress=False)
    assert info.episodes == {"cartpole-swingup": 5, "mw-reach": 1}  # a 500-step DMC episode = 5 segments
    chunk = torch.load(tmp_path / "mt80" / "chunk_0.pt", weights_only=False)
    assert tuple(chunk["obs"].shape) == (6, 101, 39) and tuple(chunk["action"].shape) == (6, 101, 6)
    dmc = chunk["task"][:, 0] == TASK_SETS["mt80"].index("cartpole-swingup")
    segments = chunk["obs"][dmc]
    ends = {tuple(s[-1].tolist()) for s in segments}
    assert sum(tuple(s[0].tolist()) in ends for s in segments) == 4  # each later segment starts where one ended
    validate_dataset(tmp_path / "mt80", "mt80")
    with pytest.raises(DatasetError, match="holds mt80 data"):
        validate_dataset(tmp_path / "mt80", "mt30")


def _corrupt(data: Path, name: str, **changes):
    chunk = torch.load(data / name, weights_only=False)
    for key, fn in changes.items():
        chunk[key] = fn(chunk[key].clone()) if key in chunk.keys() else fn(None)
    torch.save(chunk, data / name)


@pytest.mark.parametrize(
    "problem, expected",
    [
        ("missing", r"missing chunk_0\.pt"),
        ("nan_reward", r"chunk_1\.pt: reward has 1 NaN/inf values outside row 0, in episode\(s\) \[0\]"),
        ("wrong_padding", r"chunk_1\.pt: obs has shape \(1, 501, 20\), expected \(1, 501, 24\)"),
        ("task_out_of_range", r"chunk_1\.pt: task indices \[40\] are outside the mt30 set"),
        ("not_a_tensordict", r"chunk_1\.pt: holds a dict, not the TensorDict"),
    ],
)
def test_validator_names_the_file_and_the_problem_and_changes_nothing(dataset, tmp_path, problem, expected):
    data = copy_of(dataset, tmp_path)
    if problem == "missing":
        (data / "chunk_0.pt").unlink()
    elif problem == "nan_reward":
        _corrupt(data, "chunk_1.pt", reward=lambda r: r.index_put_((torch.tensor(0), torch.tensor(5)), torch.tensor(float("nan"))))
    elif problem == "wrong_padding":
        chunk = torch.load(data / "chunk_1.pt", weights_only=False)
        chunk = chunk.exclude("obs").set("obs", chunk["obs"][..., :20])
        torch.save(chunk, data / "chunk_1.pt")
    elif problem == "task_out_of_range":
        _corrupt(data, "chunk_1.pt", task=lambda t: torch.full_like(t, 40))
    else:
        torch.save({"obs": torch.zeros(3)}, data / "chunk_1.pt")
    before = {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()}
    with pytest.raises(DatasetError, match=expected):
        validate_dataset(data)
    with pytest.raises(DatasetError, match=expected):
        load_dataset(data, horizon=3, batch_size=4, progress=False)
    assert {p.name: p.read_bytes() for p in data.iterdir() if p.is_file()} == before
    assert not (data / "memmap").exists()


def test_missing_folder_says_how_to_get_the_data(tmp_path):
    with pytest.raises(DatasetError, match=r"huggingface\.co/datasets/nicklashansen/tdmpc2/resolve/main/mt80/chunk_\$i\.pt"):
        validate_dataset(tmp_path / "nowhere", "mt80")
    with pytest.raises(DatasetError, match="mbdpo-dataset generate"):
        validate_dataset(tmp_path)


def offline_config(tmp_path, data, **overrides) -> TrainConfig:
    cfg = TrainConfig(
        mode="offline",
        task=list(TASKS),
        data_dir=str(data),
        cache_dir=str(tmp_path / "cache"),
        steps=200,
        seed=1,
        model_size=1,
        batch_size=32,
        eval_freq=200,
        eval_episodes=0,
        checkpoint_freq=100,
        progress=False,
        work_dir=str(tmp_path / "offline"),
        model=ModelOverrides(latent_dim=32, mlp_dim=64, enc_dim=64, task_dim=16),
        planner=TINY_PLANNER,
        threads=1,
    )
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


@pytest.fixture(scope="module")
def pretrained(dataset, tmp_path_factory):
    """A short offline run; returns (trainer, model loss on a fixed batch before, after)."""
    tmp_path = tmp_path_factory.mktemp("offline")
    trainer = make_offline_trainer(offline_config(tmp_path, dataset))
    torch.manual_seed(0)
    fixed = trainer.dataset.sample()

    def fixed_loss():
        with torch.no_grad():
            _, out = trainer.loss.model_loss(fixed)
        return {k: v.item() for k, v in out.items() if k in ("loss_consistency", "loss_reward", "loss_value")}

    before = fixed_loss()
    trainer.train()
    return trainer, before, fixed_loss()


def test_offline_run_losses_fall_and_checkpoint_holds_the_task_list(pretrained):
    trainer, before, after = pretrained
    assert after["loss_consistency"] < 0.5 * before["loss_consistency"]
    assert after["loss_reward"] < 0.8 * before["loss_reward"]
    state = load_checkpoint(trainer.work_dir / "checkpoints" / "latest.pt")
    assert state["step"] == 200 and state["mode"] == "offline"
    assert state["task_names"] == TASK_SETS["mt30"] and state["trained_tasks"] == TASKS
    assert state["world_model"]["task_emb.weight"].shape == (30, 16)
    assert state["discounts"] == pytest.approx([0.99] * 30)


def test_offline_run_resumes_and_refuses_to_overwrite(pretrained, dataset):
    trainer, _, _ = pretrained
    cfg = offline_config(Path(trainer.work_dir).parent, dataset)
    with pytest.raises(ValueError, match="already holds a run"):
        make_offline_trainer(cfg)
    resumed = make_offline_trainer(offline_config(Path(trainer.work_dir).parent, dataset, resume=True, steps=210))
    assert resumed.step == 200
    assert torch.equal(resumed.world_model.state_dict()["task_emb.weight"], trainer.world_model.state_dict()["task_emb.weight"])


def test_exclude_tasks_and_unknown_tasks(dataset, tmp_path):
    trainer = make_offline_trainer(offline_config(tmp_path, dataset, exclude_tasks=["pendulum-swingup"], steps=1))
    assert trainer.tasks == ["cartpole-balance"]
    assert (trainer.dataset.sample()["task"] == TASK_SETS["mt30"].index("cartpole-balance")).all()
    with pytest.raises(DatasetError, match="not tasks of this mt30 dataset"):
        make_offline_trainer(offline_config(tmp_path, dataset, task=["walker-flip"], work_dir=str(tmp_path / "other")))
    with pytest.raises(DatasetError, match="holds mt30 data"):
        make_offline_trainer(offline_config(tmp_path, dataset, task="mt80", work_dir=str(tmp_path / "other")))


def test_task_score_is_the_papers_normalization():
    assert task_score(800.0, float("nan"), reports_success=False) == 80.0
    assert task_score(3.0, 0.5, reports_success=True) == 50.0
    assert normalized_score([{"score": 80.0}, {"score": 50.0}]) == 65.0


def test_add_task_copies_the_source_embedding_into_a_new_or_held_out_index():
    old = {"task_emb.weight": torch.arange(6.0).reshape(3, 2), "action_masks": torch.ones(3, 4), "other": torch.zeros(1)}
    grown = add_task(old, {"task_emb.weight": torch.zeros(4, 2), "action_masks": torch.zeros(4, 4), "other": torch.ones(1)}, 1, 3)
    assert torch.equal(grown["task_emb.weight"], torch.tensor([[0.0, 1], [2, 3], [4, 5], [2, 3]]))
    assert torch.equal(grown["action_masks"], torch.zeros(4, 4)) and torch.equal(grown["other"], torch.zeros(1))
    kept = add_task(old, {"task_emb.weight": torch.zeros(3, 2)}, 0, 2)
    assert torch.equal(kept["task_emb.weight"], torch.tensor([[0.0, 1], [2, 3], [0, 1]]))
    assert torch.equal(old["task_emb.weight"], torch.arange(6.0).reshape(3, 2))  # the input is not modified


@pytest.mark.parametrize("task, source, index", [("point_mass-easy", "cartpole-balance", 30), ("cartpole-swingup", "pendulum-swingup", 10)])
def test_finetune_from_the_offline_checkpoint(pretrained, tmp_path, task, source, index):
    trainer, _, _ = pretrained
    checkpoint = trainer.work_dir / "checkpoints" / "latest.pt"
    cfg = FinetuneConfig(
        checkpoint=str(checkpoint),
        task=task,
        source_task=source,
        steps=600,
        eval_freq=600,
        eval_episodes=1,
        batch_size=16,
        planner=TINY_PLANNER,
        work_dir=str(tmp_path / "ft"),
        progress=False,
        threads=1,
    )
    ft = make_finetune_trainer(cfg)
    wm = ft.world_model
    assert wm.cfg.num_tasks == max(30, index + 1) and ft.run.task_names[index] == task
    emb = wm.task_emb.weight
    assert torch.equal(emb[index], emb[TASK_SETS["mt30"].index(source)])
    assert torch.equal(emb[:30][torch.arange(30) != index], trainer.world_model.task_emb.weight[torch.arange(30) != index])
    assert wm.action_masks[index].sum() == {"point_mass-easy": 2, "cartpole-swingup": 1}[task]
    ft.train()
    state = load_checkpoint(tmp_path / "ft" / "checkpoints" / "latest.pt")
    assert state["step"] == 600 and state["task_names"][index] == task and len(state["discounts"]) == wm.cfg.num_tasks
    assert not torch.equal(state["world_model"]["task_emb.weight"][index], emb[TASK_SETS["mt30"].index(source)])  # it learned
    rows = ft.run.eval_log.rows()
    assert [int(r["step"]) for r in rows] == [0, 600]


def test_finetune_refuses_pretrained_tasks_and_single_task_checkpoints(pretrained):
    trainer, _, _ = pretrained
    checkpoint = str(trainer.work_dir / "checkpoints" / "latest.pt")
    with pytest.raises(ValueError, match="was pretrained"):
        make_finetune_trainer(FinetuneConfig(checkpoint=checkpoint, task="cartpole-balance", source_task="pendulum-swingup"))
    with pytest.raises(ValueError, match="source_task='walker-walk' is not"):
        make_finetune_trainer(FinetuneConfig(checkpoint=checkpoint, task="walker-run"))  # the paper's source, not pretrained here
    with pytest.raises(ValueError, match="needs checkpoint="):
        make_finetune_trainer(FinetuneConfig())


def test_export_replay_of_an_online_run(tmp_path):
    """``mbdpo-dataset export``: the complete episodes of an online run's replay buffer, in chunk format."""
    from torchrl_mbdpo.trainers.generate_data import export_replay
    from torchrl_mbdpo.trainers.trainer import make_trainer

    cfg = TrainConfig(
        task="cartpole-balance",
        steps=1100,
        seed=2,
        model_size=1,
        eval_freq=10_000,
        eval_episodes=1,
        checkpoint_freq=10_000,
        batch_size=16,
        seed_steps=1100,
        pretrain_updates=0,
        progress=False,
        work_dir=str(tmp_path / "online"),
        threads=1,
        model=ModelOverrides(latent_dim=16, mlp_dim=32, enc_dim=32),
        planner=TINY_PLANNER,
    )
    make_trainer(cfg).train()
    checkpoint = tmp_path / "online" / "checkpoints" / "latest.pt"
    info = export_replay([checkpoint], tmp_path / "exported")
    assert info.episodes == {"cartpole-balance": 2}  # 1,100 steps: two complete 500-step episodes, the rest dropped
    chunk = torch.load(tmp_path / "exported" / "chunk_0.pt", weights_only=False)
    storage = load_checkpoint(checkpoint)["replay_buffer"]["_storage"]
    replay = {key: value[: storage["_len"]] for key, value in storage["_storage"].items()}  # rows past _len were never written
    first = replay["episode"] == replay["episode"][0]
    stored = [e for e in range(2) if torch.equal(chunk["obs"][e, 1, :5], replay["next.observation"][first][0])][0]
    assert torch.equal(chunk["obs"][stored, 0, :5], replay["observation"][first][0])
    assert torch.equal(chunk["obs"][stored, 1:, :5], replay["next.observation"][first])
    assert torch.equal(chunk["action"][stored, 1:, :1], replay["action"][first])
    validate_dataset(tmp_path / "exported", "mt30")


def test_sigterm_mid_training_then_resume_ends_bitwise_equal(dataset, tmp_path):
    import os
    import signal

    straight = make_offline_trainer(offline_config(tmp_path / "a", dataset, steps=60, checkpoint_freq=1000))
    straight.train()
    stopped = make_offline_trainer(offline_config(tmp_path / "b", dataset, steps=60, checkpoint_freq=1000))
    step = stopped.stepper.step

    def stepping(*args):  # SIGTERM arrives during update 25; that update finishes, the run stops after it
        if stopped.stepper.update_count == 24:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(*args)

    stopped.stepper.step = stepping
    stopped.train()
    assert (
        stopped.control.signal == signal.SIGTERM and load_checkpoint(tmp_path / "b" / "offline" / "checkpoints" / "latest.pt")["step"] == 25
    )
    make_offline_trainer(offline_config(tmp_path / "b", dataset, steps=60, checkpoint_freq=1000, resume=True)).train()
    a = load_checkpoint(tmp_path / "a" / "offline" / "checkpoints" / "latest.pt")
    b = load_checkpoint(tmp_path / "b" / "offline" / "checkpoints" / "latest.pt")
    assert a["step"] == b["step"] == 60
    for key, value in a["world_model"].items():
        assert torch.equal(value, b["world_model"][key]), key
