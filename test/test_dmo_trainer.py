"""DMO-SAPO training (``mbdpo-dmo train``): tiny runs per global-model kind and the ablation, the learned global
model as a TorchRL env, resume, and the command line."""

import copy
import csv
import math

import pytest
import torch
from torchrl.envs.utils import check_env_specs

from torchrl_mbdpo.dmo.config import DMOTrainConfig
from torchrl_mbdpo.dmo.decoupled import EnvGlobalModel
from torchrl_mbdpo.dmo.learned_model_env import LearnedGlobalEnv, ObservationModel
from torchrl_mbdpo.dmo.trainer import load_dmo_policy, make_dmo_trainer
from torchrl_mbdpo.envs import make_env
from torchrl_mbdpo.trainers.checkpoint import load_checkpoint
from torchrl_mbdpo.trainers.config import ModelOverrides


@pytest.fixture(autouse=True)
def _one_thread():
    # TorchRL raises torch's thread count when a batched env of an earlier test is garbage-collected.
    torch.set_num_threads(1)
    yield


# 2 envs x horizon 4 = 8 env steps per iteration; 80 seed steps, then 20 iterations to 240.
STEPS, SEED_STEPS, EVAL_FREQ = 240, 80, 80


def dmo_config(tmp_path, forward_model="sim", decoupled=True, **overrides) -> DMOTrainConfig:
    settings = dict(
        task="gym:Pendulum-v1",
        steps=STEPS,
        seed=3,
        model_size=1,
        eval_freq=EVAL_FREQ,
        eval_episodes=1,
        checkpoint_freq=120,
        batch_size=16,
        progress=False,
        threads=1,
        work_dir=str(tmp_path / "run"),
        model=ModelOverrides(latent_dim=16, mlp_dim=32, enc_dim=32),
        forward_model=forward_model,
        decoupled=decoupled,
        horizon=4,
        num_envs=2,
        seed_steps=SEED_STEPS,
        pretrain_updates=200,
        critic_updates=2,
        local_model_updates=2,
        learned_hidden=16,
        learned_updates=2,
    )
    return DMOTrainConfig(**{**settings, **overrides})


def heldout_transitions(task: str, seed: int, steps: int = 200):
    """Random-action transitions of one Pendulum episode on a fresh env seeded apart from the run's."""
    return make_env(task, seed=seed).rollout(steps, break_when_any_done=False)


@torch.no_grad()
def local_reward_ce(loss, steps) -> float:
    """The local model's one-step reward cross entropy on the transitions (its ``local_model_loss`` term)."""
    return loss.local_model_loss(steps["observation"], steps["action"], steps["next", "observation"], steps["next", "reward"])[2].item()


def eval_steps(work_dir):
    return [int(r["step"]) for r in csv.DictReader(open(work_dir / "eval.csv"))]


@pytest.mark.parametrize("forward_model, decoupled", [("sim", True), ("learned", True), ("sim", False)])
def test_tiny_dmo_run(tmp_path, forward_model, decoupled):
    cfg = dmo_config(tmp_path, forward_model, decoupled)
    trainer = make_dmo_trainer(cfg)
    assert trainer.loss_module.decoupled is decoupled
    untrained = copy.deepcopy(trainer.loss_module)
    actor_before = [p.detach().clone() for p in trainer.loss_module.parameter_groups()["actor"]]
    trainer.train()
    run = tmp_path / "run"

    # Env steps: the budget counts real env steps only (seed phase + H * num_envs per iteration).
    assert trainer.env_steps == STEPS and trainer.real.env_steps == STEPS
    assert trainer.iterations == (STEPS - SEED_STEPS) // (2 * 4)
    assert len(trainer.replay_buffer) == STEPS  # every real transition, none of the learned model's
    if forward_model == "learned":
        assert trainer.learned.env_steps == trainer.iterations * 2 * 4  # the rollouts ran on the learned model
        assert isinstance(trainer.learned.env, LearnedGlobalEnv)
    else:
        assert trainer.learned is None

    rows = list(csv.DictReader(open(run / "eval.csv")))
    assert [int(r["step"]) for r in rows] == [0, 80, 160, 240]
    assert all(r["prior_episode_reward"] == "" and float(r["wall_time_s"]) >= 0 for r in rows)
    assert (run / "eval.png").stat().st_size > 1000

    # Learning signal on held-out random-action Pendulum transitions: the local model's reward prediction falls
    # from log(101) (the zero-initialised reward head) by a margin; a local model whose optimiser never steps,
    # or that is fitted to wrong rewards, does not get there. The actor is stepped too.
    heldout = heldout_transitions(cfg.task, seed=12345)
    before, after = local_reward_ce(untrained, heldout), local_reward_ce(trainer.loss_module, heldout)
    assert before == pytest.approx(math.log(101), abs=1e-3)
    assert after < 0.8 * before, (before, after)
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, trainer.loss_module.parameter_groups()["actor"]))
    state = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert state["algo"] == "dmo" and state["step"] == STEPS and state["config"]["forward_model"] == forward_model
    learned = {"learned_model"} if forward_model == "learned" else set()
    assert set(state["optimizers"]) == {"actor", "critic", "alpha", "local_model"} | learned
    for k, v in state["world_model"].items():
        assert torch.equal(v, trainer.world_model.state_dict()[k])


def test_learned_global_model_with_fewer_real_steps_per_iteration(tmp_path):
    cfg = dmo_config(tmp_path, "learned")
    cfg.collect_steps = 1  # 2 real steps per iteration; the H = 4 step rollouts run on the learned model
    trainer = make_dmo_trainer(cfg)
    trainer.train()
    assert trainer.env_steps == STEPS and trainer.real.env_steps == STEPS
    assert trainer.iterations == (STEPS - SEED_STEPS) // 2
    assert trainer.learned.env_steps == trainer.iterations * 2 * 4
    assert len(trainer.replay_buffer) == STEPS
    with pytest.raises(ValueError, match="collect_steps applies to forward_model=learned"):
        make_dmo_trainer(dmo_config(tmp_path, work_dir=str(tmp_path / "sim"), collect_steps=1))


def test_resume_refusal_and_saved_policy(tmp_path):
    cfg = dmo_config(tmp_path, steps=160)
    make_dmo_trainer(cfg).train()
    with pytest.raises(ValueError, match="already holds a run"):
        make_dmo_trainer(cfg)
    resumed = make_dmo_trainer(dmo_config(tmp_path, steps=240, resume=True))
    assert resumed.env_steps == 160 and len(resumed.replay_buffer) == 160 and resumed.pretrained
    resumed.train()
    assert eval_steps(tmp_path / "run") == [0, 80, 160, 240] and resumed.env_steps == 240
    assert len(resumed.replay_buffer) == 160  # capacity min(buffer_size, steps) of the run's first config
    resumed = make_dmo_trainer(dmo_config(tmp_path, steps=320, resume=True))  # again: the buffer wraps around
    assert resumed.capacity == 160
    resumed.train()
    assert eval_steps(tmp_path / "run") == [0, 80, 160, 240, 320] and len(resumed.replay_buffer) == 160
    wall = [float(r["wall_time_s"]) for r in csv.DictReader(open(tmp_path / "run" / "eval.csv"))]
    assert wall == sorted(wall)  # wall time goes on across resumes

    state, saved_cfg, loss, policy = load_dmo_policy(tmp_path / "run" / "checkpoints" / "latest.pt")
    assert isinstance(saved_cfg, DMOTrainConfig) and state["algo"] == "dmo" and state["step"] == 320
    obs = torch.randn(5, 3)
    with torch.no_grad():
        torch.testing.assert_close(policy.module(obs), resumed.eval_policy.module(obs))
    # Bad settings get one clear error.
    with pytest.raises(ValueError, match="forward_model must be one of"):
        make_dmo_trainer(dmo_config(tmp_path, work_dir=str(tmp_path / "other"), forward_model="magic"))


def test_learned_global_env_specs_and_resets():
    torch.manual_seed(0)
    model = ObservationModel(3, 1, hidden=16)
    data = torch.randn(64, 3)
    model.fit_normalizer(data, data + 0.1 * torch.randn(64, 3), torch.randn(64))
    starts = torch.arange(12.0).reshape(4, 3) / 12
    sampler = lambda n: starts[torch.randint(len(starts), (n,))]  # noqa: E731
    env = LearnedGlobalEnv(model, sampler, batch_size=2, action_dim=1, max_episode_steps=3)
    check_env_specs(env)

    # EnvGlobalModel drives it unchanged: episodes of max_episode_steps steps, restarting from the sampler's observations.
    global_model = EnvGlobalModel(env, record=True)
    for _ in range(5):
        step = global_model(torch.rand(2, 1) * 2 - 1)
    td = global_model.pop_transitions()
    assert td.batch_size == (2, 5) and global_model.env_steps == 10
    assert td["step_count"].squeeze(-1).tolist() == [[0, 1, 2, 0, 1]] * 2
    done = td["next", "done"].squeeze(-1)
    assert done[:, 2].all() and done.sum() == 2 and not td["next", "terminated"].any()
    assert all(any(torch.equal(o, s) for s in starts) for o in td["observation"][:, 3])  # restarted from a start observation
    with torch.no_grad():
        next_obs, reward = model(td["observation"], td["action"])
    torch.testing.assert_close(td["next", "observation"], next_obs)
    torch.testing.assert_close(td["next", "reward"], reward)
    assert not step.done.any()

    # The model learns (o, a) -> (o' - o, r) by MSE.
    obs, action = torch.randn(256, 3), torch.rand(256, 1) * 2 - 1
    nxt, rew = 0.9 * obs + 0.1 * action, -obs.pow(2).sum(-1, keepdim=True)
    model.fit_normalizer(obs, nxt, rew)
    optim = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.loss(obs, action, nxt, rew).item()
    for _ in range(100):
        optim.zero_grad()
        model.loss(obs, action, nxt, rew).backward()
        optim.step()
    assert model.loss(obs, action, nxt, rew).item() < 0.3 * first


def test_mbdpo_eval_loads_a_policy_only_through_this_package():
    """A checkpoint names the function that loads its policy; one outside torchrl_mbdpo is refused, not imported."""
    from torchrl_mbdpo.trainers.checkpoint import CheckpointError
    from torchrl_mbdpo.trainers.commands import _policy_loader

    assert _policy_loader({"policy_loader": "torchrl_mbdpo.dmo.trainer:load_dmo_policy"}, "x.pt") is load_dmo_policy
    with pytest.raises(CheckpointError, match="outside torchrl_mbdpo"):
        _policy_loader({"policy_loader": "os:system"}, "x.pt")
