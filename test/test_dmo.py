"""DMO-SAPO: the gradient swap of decoupled backpropagation, the rollout, ``DMOLoss`` and ``EnvGlobalModel``."""

import gymnasium
import pytest
import torch
from torchrl.objectives import SoftUpdate

from torchrl_mbdpo.dmo.decoupled import EnvGlobalModel, GlobalStep, decoupled_rollout
from torchrl_mbdpo.dmo.functional import gradient_swap, sapo_objective, segment_discounts, soft_td_lambda_targets
from torchrl_mbdpo.dmo.loss import DMOLoss
from torchrl_mbdpo.envs import make_env
from torchrl_mbdpo.modules import MBDPOWorldModel, WorldModelConfig

B, S, A, H, GAMMA = 3, 4, 2, 5, 0.9


# --------------------------------------------------------------------------- toy global / local models
class Toy:
    """Known dynamics: global ``s' = A_g s + B_g a + 0.3 sin(s)``, ``r = w.s + u.a + 0.5 sum cos(s)``;
    local ``s' = A_l s + B_l a + 0.2 tanh(s)``, ``r = w_l.s + u_l.a``; identity encoder; value ``v.z``;
    policy ``a = tanh(K z + b)`` (log_prob 0). Everything in float64 so comparisons are tight."""

    def __init__(self, seed=0):
        g = torch.Generator().manual_seed(seed)

        def randn(*shape, scale=0.5):
            return scale * torch.randn(*shape, generator=g, dtype=torch.float64)

        self.A_g, self.B_g, self.A_l, self.B_l = randn(S, S), randn(S, A), randn(S, S), randn(S, A)
        self.w, self.u, self.w_l, self.u_l, self.v = randn(S), randn(A), randn(S), randn(A), randn(S)
        self.s0 = randn(B, S, scale=1.0)
        self.K = randn(A, S).requires_grad_()
        self.b = randn(A).requires_grad_()

    def global_next(self, s, a):
        return s @ self.A_g.T + a @ self.B_g.T + 0.3 * torch.sin(s)

    def global_reward(self, s, a):
        return s @ self.w + a @ self.u + 0.5 * torch.cos(s).sum(-1)

    def local_next(self, z, a):
        return z @ self.A_l.T + a @ self.B_l.T + 0.2 * torch.tanh(z)

    def local_reward(self, z, a):
        return z @ self.w_l + a @ self.u_l

    def policy(self, z):
        return torch.tanh(z @ self.K.T + self.b), torch.zeros(z.shape[0], dtype=z.dtype)

    def global_stepper(self):
        state = {"s": self.s0.clone()}

        def step(action):
            s = state["s"]
            s_next, r = self.global_next(s, action), self.global_reward(s, action)
            state["s"] = s_next
            return s_next, r

        return step

    def rollout(self, decoupled=True, global_step=None):
        return decoupled_rollout(
            self.s0,
            self.policy,
            global_step or self.global_stepper(),
            lambda o: o,
            self.local_next,
            self.local_reward,
            horizon=H,
            decoupled=decoupled,
            obs0=self.s0,
        )

    def objective(self, rewards, z_last):
        """``sum_b [sum_t gamma^t r_t + gamma^H v.z_H]``."""
        discounts = GAMMA ** torch.arange(H, dtype=torch.float64)
        return (discounts[:, None] * rewards).sum() + GAMMA**H * (z_last @ self.v).sum()


def global_trajectory(toy):
    """The global model's own trajectory, differentiable end to end (true BPTT through the global model)."""
    s, states, actions, rewards = toy.s0, [toy.s0], [], []
    for _ in range(H):
        a, _ = toy.policy(s)
        r, s = toy.global_reward(s, a), toy.global_next(s, a)
        states.append(s)
        actions.append(a)
        rewards.append(r)
    return torch.stack(states), torch.stack(actions), torch.stack(rewards)


def local_adjoint_gradient(toy, states, actions):
    """``dJ/dK, dJ/db`` by the chain rule written out, with the LOCAL Jacobians at the GLOBAL states:
    ``lambda_H = gamma^H v``; ``g_a = gamma^t u_l + B_l^T lambda_{t+1}``; ``g_pre = (1 - a_t^2) g_a``;
    ``dK += g_pre s_t^T``, ``db += g_pre``; ``lambda_t = gamma^t w_l + F_z(s_t)^T lambda_{t+1} + K^T g_pre``,
    ``F_z(s) = A_l + 0.2 diag(1 - tanh(s)^2)``."""
    K = toy.K.detach()
    lam = (GAMMA**H * toy.v).expand(B, S)
    dK, db = torch.zeros_like(K), torch.zeros_like(toy.b)
    for t in reversed(range(H)):
        s, a = states[t], actions[t]
        g_a = GAMMA**t * toy.u_l + lam @ toy.B_l
        g_pre = (1 - a.pow(2)) * g_a
        dK += torch.einsum("bi,bj->ij", g_pre, s)
        db += g_pre.sum(0)
        fz_t_lam = lam @ toy.A_l + 0.2 * (1 - torch.tanh(s).pow(2)) * lam
        lam = GAMMA**t * toy.w_l + fz_t_lam + g_pre @ K
    return dK, db


# --------------------------------------------------------------------------- gradient swap
def test_gradient_swap_value_and_gradient():
    g = torch.tensor([1.0, -2.0])
    x = torch.tensor([0.3, 0.7], requires_grad=True)
    out = gradient_swap(g, 3 * x.pow(2))
    assert torch.equal(out, g)
    out.sum().backward()
    assert torch.allclose(x.grad, 6 * x.detach())
    with pytest.raises(ValueError, match="must match"):
        gradient_swap(torch.zeros(2), torch.zeros(2, 1))


def test_decoupled_forward_is_global_and_gradient_is_local_at_global_states():
    toy = Toy()
    out = toy.rollout(decoupled=True)
    states, actions, rewards = global_trajectory(toy)
    # Forward: exactly the global model's values (states, actions, rewards).
    assert torch.equal(out.latents, states.detach())
    assert torch.equal(out.next_latents, states[1:].detach())
    assert torch.equal(out.actions, actions.detach())
    assert torch.equal(out.rewards, rewards.detach())
    assert torch.equal(out.global_rewards, rewards.detach())
    assert torch.equal(out.observations, states[:-1].detach()) and torch.equal(out.next_observations, states[1:].detach())
    assert out.latents.shape == (H + 1, B, S) and out.actions.shape == (H, B, A) and out.log_probs.shape == (H, B)
    assert not out.done.any() and not out.terminated.any()

    # Backward: the local model's Jacobians at the global states (manual chain rule).
    dK, db = torch.autograd.grad(toy.objective(out.rewards, out.latents[-1]), [toy.K, toy.b])
    dK_ref, db_ref = local_adjoint_gradient(toy, states.detach(), actions.detach())
    torch.testing.assert_close(dK, dK_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(db, db_ref, rtol=1e-10, atol=1e-12)

    # ... which is not the global model's own gradient (the test can fail).
    dK_global, db_global = torch.autograd.grad(toy.objective(rewards, states[-1]), [toy.K, toy.b])
    assert not torch.allclose(dK, dK_global, rtol=1e-2) and not torch.allclose(db, db_global, rtol=1e-2)


def test_no_decoupling_ablation_is_local_imagination():
    toy = Toy()
    calls = []

    def step(action):  # still stepped, for the local model's data; its values must not be used
        calls.append(action)
        return toy.global_stepper()(action)

    out = toy.rollout(decoupled=False, global_step=step)
    z, zs, rs = toy.s0, [toy.s0], []
    for _ in range(H):  # pure latent imagination from z_0, differentiable
        a, _ = toy.policy(z)
        rs.append(toy.local_reward(z, a))
        z = toy.local_next(z, a)
        zs.append(z)
    zs, rs = torch.stack(zs), torch.stack(rs)
    torch.testing.assert_close(out.latents, zs, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.rewards, rs, rtol=0, atol=1e-12)
    assert not torch.allclose(out.latents[1:], global_trajectory(toy)[0][1:])
    assert len(calls) == H and out.global_rewards is not None and not out.done.any()
    # Its gradient is the exact gradient of the imagined objective.
    grads = torch.autograd.grad(toy.objective(out.rewards, out.latents[-1]), [toy.K, toy.b])
    refs = torch.autograd.grad(toy.objective(rs, zs[-1]), [toy.K, toy.b])
    for g, ref in zip(grads, refs):
        torch.testing.assert_close(g, ref, rtol=1e-10, atol=1e-12)
    # Without any global model: only o_0 (z_0) comes from outside.
    bare = decoupled_rollout(toy.s0, toy.policy, None, lambda o: o, toy.local_next, toy.local_reward, horizon=H, decoupled=False)
    torch.testing.assert_close(bare.latents, zs, rtol=0, atol=1e-12)
    assert bare.next_observations is None and bare.observations is None and bare.global_rewards is None
    with pytest.raises(ValueError, match="needs a global_step"):
        decoupled_rollout(toy.s0, toy.policy, None, lambda o: o, toy.local_next, toy.local_reward, horizon=H)


def test_episode_end_inside_rollout_restarts_without_gradient():
    toy = Toy()
    base = toy.global_stepper()
    restart = torch.full((B, S), 0.25, dtype=torch.float64)
    t_done = 1

    def step(action):
        step.t += 1
        s_next, r = base(action)
        done = torch.zeros(B, dtype=torch.bool)
        if step.t == t_done:
            done[0] = True
        reset_obs = torch.where(done[:, None], restart, s_next)
        return GlobalStep(s_next, r, done, torch.zeros(B, dtype=torch.bool), reset_obs)

    step.t = -1
    out = toy.rollout(global_step=step)
    assert out.done[t_done, 0] and out.done.sum() == 1
    assert torch.equal(out.latents[t_done + 1, 0], restart[0])  # the new episode starts from the reset state
    assert not torch.equal(out.next_latents[t_done, 0], restart[0])  # the transition keeps its terminal latent
    assert torch.equal(out.observations[t_done + 1, 0], restart[0])
    # The restart does not depend on the previous episode's actions; the terminal latent does.
    restart_grad = torch.autograd.grad(out.latents[t_done + 1, 0].sum(), toy.b, allow_unused=True, retain_graph=True)[0]
    assert restart_grad is None or (restart_grad == 0).all()
    assert torch.autograd.grad(out.next_latents[t_done, 0].sum(), toy.b, retain_graph=True)[0].abs().sum() > 0
    assert torch.autograd.grad(out.latents[t_done + 1, 1].sum(), toy.b)[0].abs().sum() > 0

    def missing_reset(action):
        s_next, r = base(action)
        return GlobalStep(s_next, r, torch.ones(B, dtype=torch.bool))

    with pytest.raises(ValueError, match="reset_obs"):
        toy.rollout(global_step=missing_reset)


# --------------------------------------------------------------------------- pure SAPO math
def test_sapo_objective_segments_and_bootstraps():
    g, alpha = 0.5, 0.1
    r = torch.tensor([[1.0], [2.0], [3.0]])
    ent = torch.tensor([[10.0], [20.0], [30.0]])
    v = torch.tensor([[100.0], [200.0], [300.0]])
    no = torch.zeros(3, 1, dtype=torch.bool)
    done = torch.tensor([[True], [False], [False]])
    soft = r + alpha * ent
    # No episode end: sum gamma^t (r + alpha H) + gamma^H V(z_H).
    expected = soft[0] + g * soft[1] + g**2 * soft[2] + g**3 * v[2]
    torch.testing.assert_close(sapo_objective(r, ent, v, no, no, g, alpha), expected)
    # Truncation after t=0: bootstrap from the terminal latent, then a fresh segment discounted from 1.
    torch.testing.assert_close(segment_discounts(done, g), torch.tensor([[1.0], [1.0], [g]]))
    expected = soft[0] + g * v[0] + soft[1] + g * soft[2] + g**2 * v[2]
    torch.testing.assert_close(sapo_objective(r, ent, v, done, no, g, alpha), expected)
    # Termination after t=0: no bootstrap there.
    expected = soft[0] + soft[1] + g * soft[2] + g**2 * v[2]
    torch.testing.assert_close(sapo_objective(r, ent, v, done, done, g, alpha), expected)


def test_soft_td_lambda_targets():
    g, alpha = 0.9, 0.2
    r, ent, v = torch.randn(4, 2), torch.randn(4, 2), torch.randn(4, 2)
    no = torch.zeros(4, 2, dtype=torch.bool)
    soft = r + alpha * ent
    # lambda = 0: one-step soft targets.
    torch.testing.assert_close(soft_td_lambda_targets(r, ent, v, no, no, g, 0.0, alpha), soft + g * v)
    # lambda = 1: the soft Monte-Carlo return bootstrapped at the end.
    mc_ref = []
    bootstrap = v[-1]
    for t in reversed(range(4)):
        bootstrap = soft[t] + g * bootstrap
        mc_ref.append(bootstrap)
    mc = torch.stack(mc_ref[::-1])
    torch.testing.assert_close(soft_td_lambda_targets(r, ent, v, no, no, g, 1.0, alpha), mc)
    # A termination at t=2 zeroes its bootstrap and cuts the return.
    term = no.clone()
    term[2] = True
    out = soft_td_lambda_targets(r, ent, v, term, term, g, 1.0, alpha)
    torch.testing.assert_close(out[2], soft[2])
    torch.testing.assert_close(out[1], soft[1] + g * soft[2])


# --------------------------------------------------------------------------- DMOLoss
def tiny_world_model(obs_dim=3, action_dim=1):
    cfg = WorldModelConfig(obs_dim=obs_dim, action_dim=action_dim, latent_dim=16, mlp_dim=16, enc_dim=16, num_q=2)
    wm = MBDPOWorldModel(cfg)
    with torch.no_grad():  # a non-zero reward head, so the local reward Jacobian is not identically zero
        wm.reward_head.module.net[-1].weight.normal_(0, 0.1)
    return wm


class ToyGlobal:
    """A deterministic batched global model with the EnvGlobalModel interface (``observation``, ``__call__``)."""

    def __init__(self, batch=4, obs_dim=3):
        self.obs = torch.linspace(-1, 1, batch * obs_dim).reshape(batch, obs_dim)

    @property
    def observation(self):
        return self.obs

    def __call__(self, action):
        nxt = 0.9 * self.obs + 0.1 * torch.sin(self.obs) + 0.2 * action.sum(-1, keepdim=True)
        reward = -(self.obs.pow(2).sum(-1)) - 0.1 * action.pow(2).sum(-1)
        self.obs = nxt
        return nxt, reward


LOSS_KEYS = {"loss_actor", "loss_critic", "loss_alpha", "loss_local_model", "alpha", "entropy"}


@pytest.mark.parametrize("decoupled", [True, False])
def test_dmo_loss_outputs_and_gradient_routing(decoupled):
    loss = DMOLoss(tiny_world_model(), decoupled=decoupled)
    td = loss.rollout(ToyGlobal(), horizon=4)
    assert td.batch_size == (4, 4) and td["latent"].shape == (4, 4, 16) and td["action_log_prob"].shape == (4, 4)
    assert td["next", "reward"].shape == (4, 4, 1) and td["next", "done"].dtype == torch.bool
    out = loss(td)
    assert LOSS_KEYS <= set(out.keys())
    assert all(torch.isfinite(out[k]).all() for k in out.keys())
    assert out["loss_local_model"] > 0 and out["alpha"] == pytest.approx(1.0)
    if decoupled:  # forward values are the global model's
        torch.testing.assert_close(td["next", "reward"], td["next", "global_reward"], rtol=0, atol=0)

    groups = loss.parameter_groups()
    for name, group in [("loss_actor", "actor"), ("loss_critic", "critic"), ("loss_alpha", "alpha"), ("loss_local_model", "local_model")]:
        loss.zero_grad(set_to_none=True)
        out[name].backward(retain_graph=True)
        for other, params in groups.items():
            touched = any(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in params)
            assert touched == (other == group), f"{name} reaches {other}: {touched}"
        # the target critic's weights are buffers: nothing flows into them
        assert all(not p.requires_grad for p in loss.target_critic_network_params.values(True, True))


def test_dmo_actor_step_increases_the_objective():
    # Ablation mode: the forward pass is the local model's, so its gradient is exact and a small step must help.
    torch.manual_seed(1)
    loss = DMOLoss(tiny_world_model(), decoupled=False)

    def actor_loss():
        torch.manual_seed(2)  # same policy noise, same start state
        return loss.actor_loss(loss.rollout(ToyGlobal(), horizon=4))

    before = actor_loss()
    optim = torch.optim.SGD(loss.parameter_groups()["actor"], lr=1e-2)
    before.backward()
    optim.step()
    assert actor_loss() < before


def test_dmo_critic_alpha_and_local_model_steps():
    torch.manual_seed(1)
    loss = DMOLoss(tiny_world_model(), target_entropy=-100.0)
    updater = SoftUpdate(loss, tau=0.5)  # built first: it initialises the target critic to the online one
    td = loss.rollout(ToyGlobal(), horizon=4).detach()  # a fixed rollout
    groups = loss.parameter_groups()
    for name, group, method in [("critic", "critic", loss.critic_loss), ("alpha", "alpha", loss.alpha_loss)]:
        optim = torch.optim.Adam(groups[group], lr=1e-3)
        before = method(td)
        before.backward()
        optim.step()
        assert method(td) < before, name
    # entropy (about 0 nats) is above the target (-100): alpha decreased
    assert loss.alpha < 1.0

    r = loss._time_first(td)
    local_loss = lambda: loss.local_model_loss(r.observation, r.action, r.next_observation, r.global_reward)[0]  # noqa: E731
    optim = torch.optim.Adam(groups["local_model"], lr=1e-3)
    before = local_loss()
    before.backward()
    optim.step()
    assert local_loss() < before

    # SoftUpdate pairs the target critic with the critic: target <- (1 - tau) target + tau online.
    online = loss.critic_network_params.data.clone()
    target_before = loss.target_critic_network_params.data.clone()
    assert sum((online - target_before).abs().sum().values(True, True)) > 0  # the critic step above moved the online critic
    updater.step()
    torch.testing.assert_close(loss.target_critic_network_params.data, 0.5 * (online + target_before))


# --------------------------------------------------------------------------- EnvGlobalModel on a real env
def test_env_global_model_rollout_with_resets():
    episode_length = 3
    env = make_env(lambda: gymnasium.make("Pendulum-v1", max_episode_steps=episode_length), num_envs=2)
    global_model = EnvGlobalModel(env, record=True)
    loss = DMOLoss(tiny_world_model(obs_dim=3, action_dim=1))
    horizon = 5
    td = loss.rollout(global_model, horizon)
    transitions = global_model.pop_transitions()

    assert td.batch_size == (2, horizon) and transitions.batch_size == (2, horizon)
    assert td["observation"].shape == (2, horizon, 3) and td["action"].shape == (2, horizon, 1)
    assert global_model.env_steps == 2 * horizon and global_model.num_calls == horizon
    # rewards and observations are the env's
    torch.testing.assert_close(td["next", "reward"], transitions["next", "reward"], rtol=0, atol=0)
    torch.testing.assert_close(td["next", "observation"], transitions["next", "observation"], rtol=0, atol=0)
    torch.testing.assert_close(td["observation"], transitions["observation"], rtol=0, atol=0)
    torch.testing.assert_close(td["action"], transitions["action"])
    # the episodes end (truncated) at step 3 and restart
    done = td["next", "done"].squeeze(-1)
    assert done[:, episode_length - 1].all() and done.sum() == 2
    assert not td["next", "terminated"].any()
    assert (transitions["step_count"][:, episode_length] == 0).all()
    assert not torch.allclose(td["observation"][:, episode_length], td["next", "observation"][:, episode_length - 1])
    wm = loss.world_model
    with torch.no_grad():
        torch.testing.assert_close(td["latent"], wm.encode_obs(td["observation"]))
        torch.testing.assert_close(td["next", "latent"], wm.encode_obs(td["next", "observation"]))
    assert all(torch.isfinite(v).all() for v in loss(td).values())
    with pytest.raises(ValueError, match="expected actions of shape"):
        global_model(torch.zeros(3, 1))


def test_env_global_model_dmc():
    env = make_env("pendulum-swingup", num_envs=2)
    global_model = EnvGlobalModel(env)
    obs0 = global_model.observation.clone()
    loss = DMOLoss(tiny_world_model(obs_dim=obs0.shape[-1], action_dim=1))
    td = loss.rollout(global_model, 3)
    assert td["next", "observation"].shape == (2, 3, obs0.shape[-1])
    torch.testing.assert_close(td["observation"][:, 0], obs0)
    assert global_model.env_steps == 6 and torch.isfinite(td["next", "reward"]).all()
