"""Tests of ``MBDPOLoss`` and the pure math of the update step (spec §2)."""
from __future__ import annotations

import argparse

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives import SoftUpdate

from torchrl_mbdpo.modules.world_model import MBDPOWorldModel, WorldModelConfig
from torchrl_mbdpo.objectives import (
    MBDPOLoss,
    RunningScale,
    contrastive_pairs,
    ema_moments,
    make_optimizers,
    percentile,
    select_hard_negatives,
    td_target,
    update,
)

OBS_DIM, ACTION_DIM, B, H = 5, 2, 16, 3
LOSS_TERMS = ("loss_consistency", "loss_reward", "loss_value", "loss_termination", "loss_energy", "loss_score")


def make_world_model(seed: int = 0, **overrides) -> MBDPOWorldModel:
    torch.manual_seed(seed)
    arch = {**dict(latent_dim=32, mlp_dim=32, enc_dim=32, num_q=2), **overrides}
    cfg = WorldModelConfig.from_size(1, OBS_DIM, ACTION_DIM, **arch)
    return MBDPOWorldModel(cfg)


def make_loss(seed: int = 0, wm_kwargs: dict | None = None, **loss_kwargs):
    """A tiny loss with its target updater (which also silences TorchRL's missing-updater warning)."""
    loss = MBDPOLoss(make_world_model(seed, **(wm_kwargs or {})), **loss_kwargs)
    return loss, SoftUpdate(loss, tau=0.01)


def make_batch(seed: int = 1, batch: int = B, horizon: int = H, keys: dict | None = None, task: bool = False) -> TensorDict:
    """``[B, H]`` slices in TorchRL's layout (time last), with truncated/done set at slice ends as
    ``SliceSampler`` does; a few true terminations."""
    g = torch.Generator().manual_seed(seed)
    keys = {
        "observation": "observation", "action": "action", "next_observation": ("next", "observation"),
        "reward": ("next", "reward"), "terminated": ("next", "terminated"), **(keys or {}),
    }
    terminated = torch.zeros(batch, horizon, 1, dtype=torch.bool)
    terminated[::4, -1] = True
    slice_end = torch.zeros(batch, horizon, 1, dtype=torch.bool)
    slice_end[:, -1] = True
    td = TensorDict(batch_size=[batch, horizon])
    td.set(keys["observation"], torch.randn(batch, horizon, OBS_DIM, generator=g))
    td.set(keys["action"], torch.rand(batch, horizon, ACTION_DIM, generator=g) * 2 - 1)
    td.set(keys["next_observation"], torch.randn(batch, horizon, OBS_DIM, generator=g))
    td.set(keys["reward"], torch.rand(batch, horizon, 1, generator=g) * 2 - 1)
    td.set(keys["terminated"], terminated)
    td.set(("next", "truncated"), slice_end)
    td.set(("next", "done"), slice_end | terminated)
    if task:
        td.set("task", torch.randint(0, 2, (batch, 1), generator=g).expand(batch, horizon).clone())
    return td


def seeded_losses(loss: MBDPOLoss, td: TensorDict, seeds=(0, 1, 2, 3)) -> dict:
    """Model-loss terms averaged over fixed seeds, so that before/after comparisons see the same noise."""
    totals = {}
    for seed in seeds:
        torch.manual_seed(seed)
        with torch.no_grad():
            _, out = loss.model_loss(td)
        for key in LOSS_TERMS:
            if key in out.keys():
                totals[key] = totals.get(key, 0.0) + out[key].item() / len(seeds)
    return totals


# ----------------------------------------------------------------------------------- outputs
@pytest.mark.parametrize("episodic,use_score", [(False, False), (True, True)])
@pytest.mark.parametrize("pairing", ["official", "aligned"])
def test_forward_keys_and_finite(episodic, use_score, pairing):
    loss, _ = make_loss(wm_kwargs=dict(episodic=episodic), use_score_network=use_score, contrastive_pairing=pairing)
    out = loss(make_batch())
    expected = {"loss_consistency", "loss_reward", "loss_value", "loss_energy", "loss_actor"}
    expected |= {"loss_termination"} if episodic else set()
    expected |= {"loss_score"} if use_score else set()
    assert {k for k in out.keys() if k.startswith("loss_")} == expected
    assert set(loss.out_keys) == expected
    assert "actor_latents" not in out.keys()
    for key, value in out.items():
        assert value.shape == torch.Size([]), key
        assert torch.isfinite(value), key
    sum(v for k, v in out.items() if k.startswith("loss_")).backward()


def test_model_loss_aux_latents_and_flat_batch():
    loss, _ = make_loss()
    td = make_batch()
    total, out = loss.model_loss(td)
    assert out["actor_latents"].shape == (B, H + 1, 32) and not out["actor_latents"].requires_grad
    # The total is the coefficient-weighted sum of the unweighted terms of the metadata.
    weighted = sum(getattr(loss, coef) * out[key] for key, coef in loss._COEFS.items() if key in out.keys())
    torch.testing.assert_close(total, weighted)
    # A flat [B*H] sample (as SliceSampler returns it) is reshaped with the model's horizon.
    torch.manual_seed(0)
    _, flat = loss.model_loss(td.reshape(-1))
    torch.manual_seed(0)
    _, shaped = loss.model_loss(td)
    torch.testing.assert_close(flat["loss_consistency"], shaped["loss_consistency"])
    actor_loss, actor_metadata = loss.actor_loss_from_latents(out["actor_latents"])
    assert torch.isfinite(actor_loss) and {"pi_entropy", "pi_scaled_entropy", "pi_scale"} <= set(actor_metadata.keys())


def test_invalid_flags_raise():
    wm = make_world_model()
    with pytest.raises(ValueError, match="contrastive_pairing"):
        MBDPOLoss(wm, contrastive_pairing="shuffled")
    with pytest.raises(ValueError, match="target_q_pair"):
        MBDPOLoss(wm, target_q_pair="all")
    with pytest.raises(ValueError, match="contrastive_momentum"):
        MBDPOLoss(wm, contrastive_momentum=1.0)
    with pytest.raises(ValueError, match="num_q"):
        MBDPOLoss(make_world_model(num_q=1))
    loss, _ = make_loss()
    with pytest.raises(NotImplementedError, match="discount"):
        loss.make_value_estimator()
    with pytest.raises(ValueError, match=r"\[B, H\]"):
        loss.model_loss(make_batch().unsqueeze(0))


# ----------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("pairing", ["official", "aligned"])
def test_each_model_term_decreases_on_a_fixed_batch(pairing):
    loss, updater = make_loss(wm_kwargs=dict(episodic=True), contrastive_pairing=pairing)
    td = make_batch()
    # Behaviour actions at the corners of the action box: the policy's actions (near 0 at init) and the
    # hard negatives rarely land there, so the energy net has something to learn in a few steps.
    td["action"] = 0.9 * torch.randn(B, H, ACTION_DIM, generator=torch.Generator().manual_seed(5)).sign()
    model_optim, pi_optim = make_optimizers(loss, lr=1e-3)
    before = seeded_losses(loss, td)
    for _ in range(150):
        info = update(loss, td, model_optim, pi_optim, updater)
        assert all(torch.isfinite(v) for v in info.values())
    after = seeded_losses(loss, td)
    assert set(after) == set(LOSS_TERMS) - {"loss_score"}
    for key in after:
        assert after[key] < 0.9 * before[key], (key, before[key], after[key])


def test_score_term_decreases_when_training_the_score_network():
    # The MC score target is very noisy (one random (tau, x_tau) per update, divided by 1 - abar_tau),
    # and its spread grows as the value function becomes informative, so during joint training the
    # score loss is not monotone (nor is it in the official code). With the rest of the model fixed
    # and a few recurring draws, the target is a fixed function the score network must fit.
    loss, _ = make_loss(use_score_network=True)
    wm = loss.world_model
    with torch.no_grad():  # returns that depend on the actions: non-uniform MC weights
        wm.reward_head.module.net[-1].weight.normal_()
    td = make_batch()
    optim = torch.optim.Adam(wm.score_net.parameters(), lr=1e-2)
    seeds = (0, 1, 2, 3)
    wm.train()
    before = seeded_losses(loss, td, seeds)["loss_score"]
    for step in range(200):
        torch.manual_seed(seeds[step % len(seeds)])
        loss.model_loss(td)[1]["loss_score"].backward()
        optim.step()
        optim.zero_grad(set_to_none=True)
    after = seeded_losses(loss, td, seeds)["loss_score"]
    assert after < 0.5 * before, (before, after)


def test_pi_loss_increases_q_of_the_policy():
    loss, _ = make_loss()
    wm = loss.world_model
    # At init the last Q layer is zero, so Q ignores the action; give it a slope to climb.
    with torch.no_grad():
        wm.qs.module.net.params["2", "weight"].normal_(0, 0.3)
    latents = loss.model_loss(make_batch())[1]["actor_latents"]
    zs = latents.transpose(0, 1)
    _, pi_optim = make_optimizers(loss, lr=3e-3)

    def q_of_mean_action():
        wm.eval()
        with torch.no_grad():
            q = wm.q_value(zs, wm.pi(zs).mean, reduce="avg", pair=torch.arange(2))
        wm.train()
        return q.mean().item()

    q_before = q_of_mean_action()
    wm.train()
    losses = []
    for _ in range(100):
        actor_loss, _ = loss.actor_loss_from_latents(latents)
        actor_loss.backward()
        pi_optim.step()
        pi_optim.zero_grad(set_to_none=True)
        losses.append(actor_loss.item())
    assert q_of_mean_action() > q_before + 0.1
    assert sum(losses[-10:]) < sum(losses[:10])


# ----------------------------------------------------------------------------------- gradients
def _grad_owners(loss: MBDPOLoss) -> set[str]:
    return {name.split(".")[1] for name, p in loss.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_pi_loss_gradients_reach_only_the_policy():
    loss, _ = make_loss(wm_kwargs=dict(episodic=True), use_score_network=True)
    with torch.no_grad():  # a non-constant Q, so the gradient through the action is non-zero
        loss.world_model.qs.module.net.params["2", "weight"].normal_()
    loss.world_model.train()
    loss.actor_loss_from_latents(loss.model_loss(make_batch())[1]["actor_latents"])[0].backward()
    assert _grad_owners(loss) == {"policy"}


def test_model_loss_gradients_skip_the_policy():
    loss, _ = make_loss(wm_kwargs=dict(episodic=True), use_score_network=True)
    with torch.no_grad():  # non-zero heads, so every module's gradient is non-zero
        loss.world_model.qs.module.net.params["2", "weight"].normal_()
    loss.model_loss(make_batch())[0].backward()
    owners = _grad_owners(loss)
    assert "policy" not in owners
    assert {"encoder", "dynamics", "reward_head", "done_head", "energy", "score_net", "qs"} <= owners
    assert not any(t.requires_grad for t in loss.target_qvalue_params.values(True, True))


def test_make_optimizers_partitions_the_world_model():
    loss, _ = make_loss(wm_kwargs=dict(episodic=True))
    model_optim, pi_optim = make_optimizers(loss, lr=1e-3, enc_lr_scale=0.3)
    wm = loss.world_model
    enc_group, rest_group = model_optim.param_groups
    assert enc_group["lr"] == pytest.approx(3e-4) and rest_group["lr"] == pytest.approx(1e-3)
    assert {id(p) for p in enc_group["params"]} == {id(p) for p in wm.encoder.parameters()}
    assert {id(p) for p in pi_optim.param_groups[0]["params"]} == {id(p) for p in wm.policy.parameters()}
    assert pi_optim.defaults["eps"] == 1e-5
    everything = [id(p) for g in model_optim.param_groups + pi_optim.param_groups for p in g["params"]]
    assert sorted(everything) == sorted(id(p) for p in wm.parameters())
    assert {id(p) for p in wm.qs.parameters()} <= set(id(p) for p in rest_group["params"])
    assert {id(p) for p in wm.score_net.parameters()} <= set(id(p) for p in rest_group["params"])


# ----------------------------------------------------------------------------------- target network
def test_soft_update_moves_target_by_exactly_tau():
    loss, updater = make_loss()
    model_optim, pi_optim = make_optimizers(loss)
    target_before = loss.target_qvalue_params.data.clone()
    torch.testing.assert_close(target_before, loss.qvalue_params.data)
    update(loss, make_batch(), model_optim, pi_optim, updater)
    online = loss.qvalue_params.data
    expected = target_before + 0.01 * (online - target_before)
    torch.testing.assert_close(loss.target_qvalue_params.data, expected, rtol=0, atol=1e-7)
    assert (online != target_before).any()
    for _ in range(3):
        update(loss, make_batch(), model_optim, pi_optim, updater)
    assert (loss.target_qvalue_params.data != loss.qvalue_params.data).any()
    assert not loss.world_model.training  # update() leaves the model in eval mode, as the official agent


def test_target_q_has_no_dropout_and_keeps_the_mode():
    loss, _ = make_loss()
    wm = loss.world_model
    td = make_batch()
    wm.eval()
    torch.manual_seed(0)
    eval_targets = loss.td_targets(td)
    wm.train()
    torch.manual_seed(0)
    train_targets = loss.td_targets(td)
    assert wm.qs.training
    # Same pi noise; dropout in the target heads would make these differ.
    torch.testing.assert_close(train_targets, eval_targets)


# ----------------------------------------------------------------------------------- TD target
def test_td_target_pure_function():
    reward = torch.tensor([[1.0], [2.0], [3.0]])
    terminated = torch.tensor([[False], [True], [False]])
    next_q = torch.tensor([[10.0], [10.0], [-4.0]])
    expected = torch.tensor([[1.0 + 0.9 * 10.0], [2.0], [3.0 - 0.9 * 4.0]])
    torch.testing.assert_close(td_target(reward, terminated, next_q, 0.9), expected)
    per_sample = torch.tensor([[0.5], [0.5], [1.0]])
    torch.testing.assert_close(td_target(reward, terminated.float(), next_q, per_sample), torch.tensor([[6.0], [2.0], [-1.0]]))


def test_termination_stops_bootstrap_but_truncation_does_not():
    loss, _ = make_loss()
    with torch.no_grad():  # a clearly non-zero target value
        loss.target_qvalue_params["2", "bias"].zero_()
        loss.target_qvalue_params["2", "bias"][:, -1] = 10.0
    td = make_batch()
    terminated = torch.zeros(B, H, 1, dtype=torch.bool)
    terminated[0, 1] = True
    truncated = torch.zeros(B, H, 1, dtype=torch.bool)
    truncated[1, 2] = truncated[0, 2] = True
    td.set(("next", "terminated"), terminated)
    td.set(("next", "truncated"), truncated)
    td.set(("next", "done"), terminated | truncated)
    targets = loss.td_targets(td)
    reward = td["next", "reward"]
    assert targets[0, 1] == reward[0, 1]  # terminated: exactly the reward
    assert (targets[1, 2] - reward[1, 2]).abs() > 1.0  # truncated only: bootstraps
    assert (targets[~terminated] - reward[~terminated]).abs().min() > 1.0
    # A per-sample discount entry overrides the constructor's (multi-task gamma).
    td.set("discount", torch.zeros(B, H, 1))
    torch.testing.assert_close(loss.td_targets(td), reward)


# ----------------------------------------------------------------------------------- contrastive
def test_contrastive_pairs_official_reproduces_the_mismatch():
    horizon, batch = 3, 4
    t_idx, b_idx = torch.meshgrid(torch.arange(horizon), torch.arange(batch), indexing="ij")
    ids = torch.stack([t_idx, b_idx], -1).float()  # ids[t, b] = (t, b)
    task = torch.arange(batch) * 10
    z, a, tasks = contrastive_pairs(ids, ids, task, mode="official")
    for i in range(horizon * batch):
        assert z[i].tolist() == [i // batch, i % batch]  # latents in (t, b) order
        assert a[i].tolist() == [i % horizon, i // horizon]  # actions in (b, t) order
        assert tasks[i] == task[i // horizon]
    # Only the first and last rows pair a latent with its own action.
    matches = (z == a).all(-1)
    assert matches[0] and matches[-1] and matches.sum() == 2
    z, a, tasks = contrastive_pairs(ids, ids, task, mode="aligned")
    assert torch.equal(z, a)
    assert torch.equal(tasks, task[z[:, 1].long()])
    with pytest.raises(ValueError):
        contrastive_pairs(ids, ids, None, mode="other")


def test_hard_negative_is_the_highest_scored_candidate():
    candidates = torch.arange(12.0).view(2, 3, 2)
    logits = torch.tensor([[0.1, 2.0, -1.0], [5.0, 0.0, 4.0]])
    torch.testing.assert_close(select_hard_negatives(candidates, logits), torch.tensor([[2.0, 3.0], [6.0, 7.0]]))


def test_energy_stats_update_and_are_checkpointed():
    loss, _ = make_loss(contrastive_momentum=0.9)
    stats = loss.energy_norm
    assert stats is loss.world_model.energy_norm  # the planner reads what the loss updates
    mean0, std0 = stats.mean.clone(), stats.std.clone()
    assert mean0 == 0 and std0 == 1
    with torch.no_grad():  # a non-zero F, so its logits have a spread
        loss.world_model.energy.module.net[-1].weight.normal_()
    _, out = loss.model_loss(make_batch())
    assert stats.mean != mean0 and stats.std != std0
    assert out["energy_mean"] == stats.mean and out["energy_std"] == stats.std
    state = loss.state_dict()
    assert torch.equal(state["energy_norm.mean"], stats.mean)
    assert torch.equal(state["energy_norm.std"], stats.std)
    assert "scale.value" in state and "discount" in state
    fresh, _ = make_loss(seed=3, contrastive_momentum=0.9)
    fresh.load_state_dict(state)
    assert fresh.energy_norm.mean == stats.mean and fresh.energy_norm.std == stats.std
    assert fresh.world_model.energy_norm.mean == stats.mean
    # normalized_energy: clamp((F - mu) / max(sigma, 1e-6), -5, 5)
    f = torch.tensor([[-100.0], [0.0], [0.5], [100.0]])
    expected = ((f - stats.mean) / stats.std.clamp_min(1e-6)).clamp(-5, 5)
    torch.testing.assert_close(loss.normalized_energy(f), expected)
    assert loss.normalized_energy(f).abs().max() == 5.0


def test_ema_moments_rule():
    logits = torch.tensor([[1.0], [3.0]])  # mean 2, biased std 1
    mean, std = ema_moments(torch.tensor(0.0), torch.tensor(1.0), logits, momentum=0.9)
    torch.testing.assert_close((mean, std), (torch.tensor(0.2), torch.tensor(1.0)))
    _, std = ema_moments(torch.tensor(0.0), torch.tensor(1.0), torch.ones(4, 1), momentum=0.9)
    torch.testing.assert_close(std, torch.tensor(0.9 + 0.1 * 1e-6))  # std floored at 1e-6


# ----------------------------------------------------------------------------------- running scale
def test_running_scale_against_hand_computed_values():
    scale = RunningScale(tau=0.01)
    q0 = torch.arange(0.0, 101.0, 10.0).view(-1, 1)  # 0, 10, ..., 100 (n = 11)
    # positions 0.05 * 10 = 0.5 and 0.95 * 10 = 9.5: P5 = 5, P95 = 95, range 90.
    torch.testing.assert_close(percentile(q0, (5, 95)), torch.tensor([[5.0], [95.0]]))
    scale.update(q0)
    torch.testing.assert_close(scale.value, torch.tensor([1.0 + 0.01 * (90.0 - 1.0)]))
    torch.testing.assert_close(scale(torch.tensor([1.89])), torch.tensor([1.0]))
    # A range below 1 is clamped to 1: S moves towards 1.
    scale.update(torch.full((7, 1), 3.0))
    torch.testing.assert_close(scale.value, torch.tensor([1.89 + 0.01 * (1.0 - 1.89)]))
    x = torch.randn(256, 1)
    torch.testing.assert_close(percentile(x, (5, 95)), torch.quantile(x, torch.tensor([0.05, 0.95]), dim=0))


# ----------------------------------------------------------------------------------- keys
def test_set_keys():
    loss, _ = make_loss()
    assert loss.tensor_keys.reward == ("next", "reward")
    custom = dict(observation="obs", action="act", reward=("next", "rew"), terminated=("next", "term"), next_observation=("next", "obs"))
    loss.set_keys(**custom)
    assert loss.tensor_keys.observation == "obs" and loss.tensor_keys.terminated == ("next", "term")
    assert set(loss.in_keys) == set(custom.values())
    _, out = loss.model_loss(make_batch(keys=custom))
    assert torch.isfinite(out["loss_value"])
    with pytest.raises(KeyError):
        loss.model_loss(make_batch())
    with pytest.raises(ValueError):
        loss.set_keys(not_a_key="x")
    loss.set_keys(observation=None)
    assert loss.tensor_keys.observation == "observation"


# ----------------------------------------------------------------------------------- multi-task
@pytest.mark.parametrize("pairing", ["official", "aligned"])
def test_multitask_losses(pairing):
    loss, updater = make_loss(
        wm_kwargs=dict(num_tasks=2, task_dim=8, action_dims=[2, 1]), contrastive_pairing=pairing, use_score_network=True
    )
    td = make_batch(task=True)
    td.set("discount", torch.where(td["task"] == 0, 0.99, 0.95).unsqueeze(-1))
    assert "task" in loss.in_keys
    model_optim, pi_optim = make_optimizers(loss)
    info = update(loss, td, model_optim, pi_optim, updater)
    assert all(torch.isfinite(v) for v in info.values())
    _, out = loss.model_loss(td)
    assert out["task"].shape == (B,)
    assert torch.isfinite(loss.actor_loss_from_latents(out["actor_latents"], out["task"])[0])


if __name__ == "__main__":
    args, unknown = argparse.ArgumentParser().parse_known_args()
    pytest.main([__file__, "--capture", "no", "--exitfirst"] + unknown)
