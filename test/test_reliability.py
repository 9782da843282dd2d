"""Faults a long run meets: damaged or foreign checkpoints, a full disk, NaNs, buffer edge cases."""

import csv
import errno

import pytest
import torch
from tensordict import TensorDict

from torchrl_mbdpo.data import EpisodeWriter, make_replay_buffer
from torchrl_mbdpo.trainers import checkpoint as ckpt
from torchrl_mbdpo.trainers.checkpoint import CheckpointError, load_checkpoint, load_latest, save_checkpoint
from torchrl_mbdpo.trainers.config import ModelOverrides
from torchrl_mbdpo.trainers.evaluation import CsvLog, evaluation_seeds, truncate_csv_logs
from torchrl_mbdpo.trainers.trainer import make_trainer


# ----------------------------------------------------------------------------- checkpoint files
def _two_checkpoints(tmp_path):
    path = tmp_path / "latest.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    save_checkpoint({"step": 2, "w": torch.full((3,), 2.0)}, path)
    return path


def test_previous_checkpoint_is_kept_and_used_when_latest_is_corrupted(tmp_path):
    path = _two_checkpoints(tmp_path)
    assert load_checkpoint(path)["step"] == 2 and load_checkpoint(tmp_path / "previous.pt")["step"] == 1
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the payload
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum|corrupted"):
        load_checkpoint(path)
    with pytest.warns(UserWarning, match="previous checkpoint"):
        state, used = load_latest(tmp_path)
    assert state["step"] == 1 and used.name == "previous.pt"


def test_truncated_checkpoint_is_detected(tmp_path):
    path = _two_checkpoints(tmp_path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated or corrupted"):
        load_checkpoint(path)
    with pytest.warns(UserWarning):
        assert load_latest(tmp_path)[0]["step"] == 1


def test_newer_version_is_refused_and_version_1_is_migrated(tmp_path):
    newer = tmp_path / "newer.pt"
    torch.save({"format_version": ckpt.FORMAT_VERSION + 1, "payload": b""}, newer)
    with pytest.raises(CheckpointError, match="newer than this library"):
        load_checkpoint(newer)
    old = tmp_path / "v1.pt"
    torch.save({"format_version": 1, "step": 7, "world_model": {"w": torch.zeros(2)}}, old)
    state = load_checkpoint(old)
    assert state["step"] == 7 and "format_version" not in state
    foreign = tmp_path / "official.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a torchrl_mbdpo checkpoint"):
        load_checkpoint(foreign)


def test_disk_full_while_writing_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = _two_checkpoints(tmp_path)

    def no_space(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint({"step": 3}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 2 and load_checkpoint(tmp_path / "previous.pt")["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "previous.pt"]  # no temporary left


# ----------------------------------------------------------------------------- runs
def test_disk_full_during_training_warns_and_keeps_training(tmp_path, monkeypatch, tiny_config):
    trainer = make_trainer(tiny_config(steps=2, seed_steps=2, eval_freq=10))
    assert trainer.save_checkpoint() is not None

    def no_space(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_checkpoint", no_space)  # every trainer writes through save_run_checkpoint
    with pytest.warns(UserWarning, match="previous one is intact"):
        assert trainer.save_checkpoint() is None
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"] == 0


def test_nan_losses_are_skipped_then_the_run_stops_with_the_last_finite_state(tmp_path, tiny_config):
    trainer = make_trainer(tiny_config(steps=600, max_nonfinite=3))
    loss = trainer.loss_module
    model_loss = loss.model_loss
    snapshot = {}

    def poisoned(td):  # from the 5th update on, every loss is NaN (fault injection)
        poisoned.calls += 1
        if poisoned.calls == 5:
            snapshot.update({k: v.clone() for k, v in trainer.world_model.state_dict().items()})
        total, out = model_loss(td)
        if poisoned.calls >= 5:
            total = total * float("nan")
        return total, out

    poisoned.calls = 0
    loss.model_loss = poisoned
    trainer.train()
    stepper = trainer.optimization_stepper
    assert stepper.skipped_total == 3 and stepper.skipped_in_a_row == 3
    assert "3 updates in a row had a non-finite loss" in trainer.stop_message
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert state["step"] < 600
    for key, value in state["world_model"].items():
        assert torch.isfinite(value.float()).all(), key
        assert torch.equal(value, snapshot[key]), key  # exactly the state before the first NaN update


def test_resume_refuses_another_config_and_a_new_run_never_overwrites(tmp_path, tiny_config):
    trainer = make_trainer(tiny_config(steps=2, seed_steps=2, eval_freq=10))
    trainer.save_checkpoint()
    with pytest.raises(ValueError, match="already holds a run. Pass resume=true"):
        make_trainer(tiny_config())
    with pytest.raises(CheckpointError, match="latent_dim"):
        make_trainer(tiny_config(resume=True, model=ModelOverrides(latent_dim=32, mlp_dim=32, enc_dim=32)))
    with pytest.raises(CheckpointError, match="resume=true, but .* holds no checkpoint to continue: drop resume=true") as refused:
        make_trainer(tiny_config(tmp_path / "empty", resume=True))
    assert "checkpoint=" not in str(refused.value)  # mbdpo-train has no checkpoint= setting


def test_same_seed_gives_the_same_eval_csv(tmp_path, tiny_config):
    rows = []
    for name in ("a", "b"):
        make_trainer(tiny_config(tmp_path / name, steps=400, eval_freq=200)).train()
        eval_rows = csv.DictReader(open(tmp_path / name / "run" / "eval.csv"))
        rows.append([{k: v for k, v in r.items() if k != "wall_time_s"} for r in eval_rows])
    assert rows[0] == rows[1] and len(rows[0]) == 3


# ----------------------------------------------------------------------------- replay buffer
def _episode(length, start, terminated_at_end=False):
    t = torch.arange(length, dtype=torch.float32)
    done = t == length - 1
    return TensorDict(
        {
            "observation": (start + t).unsqueeze(-1),
            ("next", "observation"): (start + t + 1).unsqueeze(-1),
            "action": torch.zeros(length, 1),
            ("next", "reward"): torch.ones(length, 1),
            ("next", "done"): done.unsqueeze(-1),
            ("next", "terminated"): (done & terminated_at_end).unsqueeze(-1),
            ("next", "truncated"): (done & (not terminated_at_end)).unsqueeze(-1),
        },
        [length],
    )


# ----------------------------------------------------------------------------- log files and seeds
def test_csv_log_appends_and_truncates_to_a_step(tmp_path):
    log = CsvLog(tmp_path / "run" / "eval.csv", ["step", "episode_reward"])
    log.append({"step": 0, "episode_reward": -3.5, "ignored": 1})
    log.append([{"step": 100, "episode_reward": -2.0}, {"step": 200}])
    assert (tmp_path / "run" / "eval.csv").read_text().splitlines() == ["step,episode_reward", "0,-3.5", "100,-2.0", "200,"]
    log.truncate(100)  # a run resumed from its step-100 checkpoint
    assert [r["step"] for r in log.rows()] == ["0", "100"]
    log.append({"step": 200, "episode_reward": -1.0})
    assert log.rows()[-1] == {"step": "200", "episode_reward": "-1.0"}
    # TorchRL's CSV scalars have no header; truncate_csv_logs cuts them and eval.csv together.
    scalars = tmp_path / "run" / "logs" / "mbdpo" / "scalars" / "loss.csv"
    scalars.parent.mkdir(parents=True)
    scalars.write_text("0,1.5\n100,1.25\n\n200,1.0\n")
    truncate_csv_logs(tmp_path / "run", 0)
    assert scalars.read_text() == "0,1.5\n"
    assert [r["step"] for r in log.rows()] == ["0"]


def test_evaluation_seeds_depend_only_on_seed_and_step():
    grid = [(seed, step) for seed in range(1, 4) for step in range(0, 3000, 100)]
    seeds = [evaluation_seeds(seed, step) for seed, step in grid]
    assert seeds == [evaluation_seeds(seed, step) for seed, step in grid]  # nothing else enters
    assert len({s.torch for s in seeds}) == len({s.env for s in seeds}) == len(grid)  # every evaluation its own draws
    assert all(evaluation_seeds(seed, 0).env != seed for seed in range(1, 4))  # not the training env's seed


def test_buffer_wraps_around_without_crossing_episodes_and_samples_episode_ends():
    rb = make_replay_buffer(horizon=3, batch_size=128, capacity=50)
    writer = EpisodeWriter(rb)
    for i in range(9):  # 9 episodes of 7..15 steps = 99 steps in a 50-step buffer: it wraps around
        writer(_episode(7 + i, 1000 * i, terminated_at_end=i % 2 == 0))
    assert len(rb) == 50 and writer.episodes_written == 9
    last_steps = set()
    for _ in range(20):
        s = rb.sample().reshape(128, 3)
        assert (s["episode"] == s["episode"][:, :1]).all()  # one episode per slice, also at the wrap point
        obs = s["observation"].squeeze(-1)
        assert torch.equal(obs[:, 1:] - obs[:, :-1], torch.ones(128, 2))  # consecutive, no jump at the seam
        ends = s["next", "done"].squeeze(-1)
        assert not ends[:, :-1].any()  # an episode's end can only be a slice's last step
        last_steps |= set(obs[:, -1][ends[:, -1]].tolist())
        # terminated vs truncated survive storage: terminated only at the true end of even episodes
        term = s["next", "terminated"].squeeze(-1)
        assert (term <= ends).all() and (s["next", "truncated"].squeeze(-1) <= ends).all()
        assert ((s["episode"][:, -1] % 2 == 0) | ~term[:, -1]).all()
    stored_episode_ends = {1000 * i + 6 + i for i in range(9)} & set(rb[:]["observation"].squeeze(-1).tolist())
    assert stored_episode_ends and stored_episode_ends <= last_steps  # every stored episode end gets sampled


def test_non_finite_observations_are_dropped_and_counted():
    rb = make_replay_buffer(horizon=3, batch_size=4, capacity=100)
    writer = EpisodeWriter(rb)
    bad = _episode(6, 0)
    bad["observation"][2] = float("nan")
    with pytest.warns(UserWarning, match="non-finite"):
        writer(bad)
    writer(_episode(6, 100))
    assert writer.episodes_dropped == 1 and writer.episodes_written == 1 and len(rb) == 6
