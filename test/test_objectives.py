"""Tests of ``MBDPOLoss`` / ``TDMPC2Loss`` and the pure math of the update step (arXiv 2605.26282; official
``MBDPO/mbdpo.py:346-680``): expected values are worked out by hand or from analytic heads, not by the code."""

from __future__ import annotations

import argparse
import math

import pytest
import torch
from tensordict import TensorDict

from torchrl_mbdpo.objectives import (
    MBDPOLoss,
    RunningScale,
    TDMPC2Loss,
    contrastive_pairs,
    ema_moments,
    make_optimizers,
    percentile,
    select_hard_negatives,
    td_target,
    update,
)

from helpers import ACTION_DIM, LOSS_TERMS, B, H, make_batch, make_loss, make_world_model, seeded_losses, set_constant_q_heads


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
    # and a few recurring draws, the target is a fixed function the score network must fit. (Two Q heads:
    # with five, one of these four draws has a target far larger than the others (a small tau divides it by
    # 1 - abar_tau), which takes longer than 200 steps to fit.)
    loss, _ = make_loss(use_score_network=True, wm_kwargs=dict(num_q=2))
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
    # Heavy dropout and non-zero last Q layers, so that dropout does change Q (at init the last weights are
    # zero and Q ignores everything before them).
    loss, _ = make_loss(wm_kwargs=dict(dropout=0.5))
    wm = loss.world_model
    with torch.no_grad():
        loss.qvalue_params["2", "weight"].normal_()
        loss.target_qvalue_params.data.update_(loss.qvalue_params.data)
    td = make_batch()
    z, a = wm.encode_obs(td["observation"][:, 0]), td["action"][:, 0]
    wm.train()
    assert not torch.allclose(wm.q_logits(z, a), wm.q_logits(z, a))  # the online heads do drop units
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


# Five target heads with known constant values (bins 60, 55, 30, 35, 40 of the symlog support): heads 0 and 1
# give e^2 - 1 and e - 1, every pair with another head has a min of at most -(e^2 - 1).
TARGET_BINS = [60, 55, 30, 35, 40]


def test_td_target_is_the_min_of_target_heads_0_and_1_of_five():
    loss, _ = make_loss()
    assert loss.latent_model.cfg.num_q == 5
    heads = set_constant_q_heads(loss.target_qvalue_params, TARGET_BINS)
    set_constant_q_heads(loss.qvalue_params, [70] * 5)  # the online heads say e^4 - 1: not the target's
    assert heads[:2] == pytest.approx([math.e**2 - 1, math.e - 1])
    td = make_batch()
    reward, alive = td["next", "reward"], 1 - td["next", "terminated"].float()
    expected = reward + 0.99 * alive * (math.e - 1)  # min(Q_tgt[0], Q_tgt[1]) = e - 1, whatever a' ~ pi
    for seed in range(5):  # the pair must not be drawn: the same heads under any seed
        torch.manual_seed(seed)
        torch.testing.assert_close(loss.td_targets(td), expected, atol=1e-4, rtol=0)


def test_tdmpc2_td_target_takes_a_random_pair_of_the_five_target_heads():
    loss, _ = make_loss(loss_cls=TDMPC2Loss)
    heads = set_constant_q_heads(loss.target_qvalue_params, TARGET_BINS)
    pair_mins = sorted({min(heads[i], heads[j]) for i in range(5) for j in range(i + 1, 5)})
    td = make_batch()
    reward, alive = td["next", "reward"], ~td["next", "terminated"]
    seen = []
    for seed in range(20):
        torch.manual_seed(seed)
        next_q = ((loss.td_targets(td) - reward) / 0.99)[alive]
        assert torch.allclose(next_q, next_q[0], atol=1e-3)  # one pair per call
        seen.append(next_q[0].item())
    assert all(min(abs(v - m) for m in pair_mins) < 1e-3 for v in seen), (seen, pair_mins)
    assert len({round(v, 2) for v in seen}) >= 3  # a different pair from call to call


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
    # The planner's energy term, worked by hand with mean 0.5 and std 0.25: F = 0.25 -> -1, F = 1.5 -> 4, and
    # F = -2 or 100 -> clipped to -5 and 5; a std of 0 counts as 1e-6.
    stats.mean.fill_(0.5)
    stats.std.fill_(0.25)
    f = torch.tensor([[-2.0], [0.25], [1.5], [100.0]])
    torch.testing.assert_close(loss.normalized_energy(f), torch.tensor([[-5.0], [-1.0], [4.0], [5.0]]))
    stats.mean.zero_()
    stats.std.zero_()
    torch.testing.assert_close(loss.normalized_energy(torch.tensor([[2e-6]])), torch.tensor([[2.0]]))


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
MULTITASK = dict(num_tasks=2, task_dim=8, action_dims=[2, 1])  # task 1 acts in its first dim only


def multitask_batch(seed: int = 1) -> TensorDict:
    """``make_batch(task=True)`` with the padded action dim of task-1 slices zeroed, as the data stores it."""
    td = make_batch(seed, task=True)
    action = td["action"].clone()
    action[..., 1][td["task"] == 1] = 0.0
    td["action"] = action
    return td


def spy_on(monkeypatch, obj, name: str) -> list:
    """Record ``(args, kwargs, output)`` of every call of the method ``obj.name`` (which keeps working)."""
    calls, original = [], getattr(obj, name)

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append((args, kwargs, out))
        return out

    monkeypatch.setattr(obj, name, spy)
    return calls


@pytest.mark.parametrize("pairing", ["official", "aligned"])
def test_multitask_energy_term_pairs_tasks_and_masks_as_the_official_code(pairing, monkeypatch):
    loss, _ = make_loss(wm_kwargs=MULTITASK, contrastive_pairing=pairing)
    wm = loss.world_model
    with torch.no_grad():  # a non-constant F, so the hard negative is a real choice
        wm.energy.module.net[-1].weight.normal_()
    td = multitask_batch()
    calls = spy_on(monkeypatch, wm, "energy_logit")
    _, out = loss.model_loss(td)
    assert len(calls) == 3  # positives, the candidates of the negatives, the chosen negatives
    (z_pos, a_pos, task_pos), _, f_pos = calls[0]
    (z_cand, a_cand, task_cand), _, f_cand = calls[1]
    (z_neg, a_neg, task_neg), _, f_neg = calls[2]

    # Row i holds the latent of step t = i // B of slice b = i % B (time-major, as the official code).
    actions, tasks, latents = td["action"], td["task"][:, 0], out["actor_latents"]
    row = torch.arange(H * B)
    t, b = row // B, row % B
    if pairing == "official":  # actions and tasks flattened slice-major: row i gets slice i // H, step i % H
        paired_action, paired_task = actions[row // H, row % H], tasks[row // H]
    else:
        paired_action, paired_task = actions[b, t], tasks[b]
    torch.testing.assert_close(z_pos, latents[b, t])
    torch.testing.assert_close(a_pos, paired_action)
    assert torch.equal(task_pos, paired_task)

    # Candidates: per row (policy action, noisy policy action, uniform), with the row's (paired) task.
    assert torch.equal(task_cand, paired_task.repeat_interleave(3))
    torch.testing.assert_close(z_cand, z_pos.repeat_interleave(3, 0))
    candidates = a_cand.view(H * B, 3, ACTION_DIM)
    assert candidates.abs().max() <= 1
    one_dim = paired_task == 1
    assert (candidates[one_dim, 0, 1] == 0).all()  # the policy prior is masked by the row's task
    assert (candidates[~one_dim, 0, 1] != 0).all()
    assert (candidates[one_dim, 2, 1] != 0).all()  # the uniform negatives are not (official quirk)
    # The negative is the candidate F scores highest, with the same latent and task as the positive.
    hardest = f_cand.view(H * B, 3).argmax(1)
    torch.testing.assert_close(a_neg, candidates[row, hardest])
    torch.testing.assert_close(z_neg, z_pos)
    assert torch.equal(task_neg, paired_task)
    # 0.5 (BCE(F_pos, 1) + BCE(F_neg, 0)), BCE with logits written as softplus.
    expected = 0.5 * (torch.nn.functional.softplus(-f_pos).mean() + torch.nn.functional.softplus(f_neg).mean())
    torch.testing.assert_close(out["loss_energy"], expected)


def test_multitask_policy_loss_rows_use_their_own_task_and_mask(monkeypatch):
    loss, _ = make_loss(wm_kwargs=MULTITASK, entropy_coef=0.0)
    wm = loss.world_model
    value = set_constant_q_heads(wm.q_params, [60] * 5)[0]  # every online head: e^2 - 1
    td = multitask_batch()
    _, metadata = loss.model_loss(td)
    latents, task = metadata["actor_latents"], metadata["task"]
    assert torch.equal(task, td["task"][:, 0])
    calls = spy_on(monkeypatch, wm, "q_value")
    wm.train()
    actor_loss, _ = loss.actor_loss_from_latents(latents, task)
    # Q = e^2 - 1 for every row; the running scale stays 1 (P95 - P5 = 0 is clamped to 1), so the loss is
    # -Q * mean_t rho^t over t = 0..H = -(e^2 - 1) (1 + 1/2 + 1/4 + 1/8) / 4.
    assert value == pytest.approx(math.e**2 - 1)
    assert actor_loss.item() == pytest.approx(-value * (1 + 0.5 + 0.25 + 0.125) / 4, rel=1e-5)
    (((z, action, q_task), kwargs, _),) = calls
    assert kwargs["source"] == "detached" and z.shape == (H + 1, B, 32)
    assert torch.equal(q_task, task)  # each slice's latents with its own task
    assert (action[:, task == 1, 1] == 0).all() and (action[:, task == 0, 1] != 0).all()


def test_multitask_td_target_uses_each_tasks_discount_and_masked_next_actions(monkeypatch):
    loss, _ = make_loss(wm_kwargs=MULTITASK, discount=torch.tensor([0.9, 0.5]))
    set_constant_q_heads(loss.target_qvalue_params, TARGET_BINS)
    set_constant_q_heads(loss.qvalue_params, [70] * 5)
    td = multitask_batch()
    task = td["task"][:, 0]
    calls = spy_on(monkeypatch, loss.world_model, "q_value")
    targets = loss.td_targets(td)
    reward, alive = td["next", "reward"], 1 - td["next", "terminated"].float()
    gamma = torch.where(task == 0, 0.9, 0.5).view(B, 1, 1)
    torch.testing.assert_close(targets, reward + gamma * alive * (math.e - 1), atol=1e-4, rtol=0)
    (((_, next_action, q_task), kwargs, _),) = calls
    assert kwargs["source"] == "target" and kwargs["reduce"] == "min" and kwargs["pair"].tolist() == [0, 1]
    assert torch.equal(q_task, task)
    assert (next_action[:, task == 1, 1] == 0).all() and (next_action[:, task == 0, 1] != 0).all()
    # A per-sample discount entry overrides the constructor's.
    td.set("discount", torch.full((B, H, 1), 0.25))
    torch.testing.assert_close(loss.td_targets(td), reward + 0.25 * alive * (math.e - 1), atol=1e-4, rtol=0)


def test_multitask_update_with_the_score_network_is_finite():
    loss, updater = make_loss(wm_kwargs=MULTITASK, use_score_network=True)
    td = multitask_batch()
    assert "task" in loss.in_keys
    info = update(loss, td, *make_optimizers(loss), updater)
    assert info["nonfinite_skipped"] == 0 and all(torch.isfinite(v) for v in info.values())


if __name__ == "__main__":
    args, unknown = argparse.ArgumentParser().parse_known_args()
    pytest.main([__file__, "--capture", "no", "--exitfirst"] + unknown)


@pytest.mark.parametrize("behaviour", ["uniform", "concentrated"])
def test_energy_learns_a_behaviour_and_stays_at_chance_on_uniform_actions(behaviour):
    """F tells the replayed actions from its negatives (the policy's action, a noisy one, a uniform one: the one it
    scores highest). When the behaviour is itself uniform (random seed data, or a planner still as broad, as in
    examples/compose_with_torchrl.py on cartpole), no F does better than chance and ``loss_energy`` stays at log 2;
    a concentrated behaviour is learnt."""
    from torchrl_mbdpo.trainers.optimization import make_optimizers, update

    loss, target = make_loss(wm_kwargs=dict(mlp_dim=64))
    model_optim, pi_optim = make_optimizers(loss)
    g = torch.Generator().manual_seed(3)
    energies = []
    for i in range(200):
        td = make_batch(seed=i)
        if behaviour == "concentrated":
            td["action"] = (0.5 + 0.05 * torch.randn(td["action"].shape, generator=g)).clamp(-1, 1)
        energies.append(update(loss, td, model_optim, pi_optim, target)["loss_energy"].item())
    late = sum(energies[-50:]) / 50
    if behaviour == "uniform":
        assert abs(late - math.log(2)) < 0.01, late
    else:
        assert late < 0.55, late
