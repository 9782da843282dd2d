"""DMOLoss receives its actor and critic networks (as TorchRL's SACLoss does) and leaves rollouts to
``dmo_rollout`` (or to any code that builds the ``[B, H]`` TensorDict under its keys)."""

import pytest
import torch
from tensordict.nn import TensorDictModule

from torchrl_mbdpo.dmo.loss import DMOLoss, dmo_rollout

from helpers import ACTION_DIM, OBS_DIM, make_world_model


class _Global:
    """A global model of fixed dynamics: ``o' = o + 0.1``, reward 1 (a ``(next_obs, reward)`` step)."""

    def __init__(self, batch):
        self.observation = torch.zeros(batch, OBS_DIM)

    def __call__(self, action):
        self.observation = self.observation + 0.1
        return self.observation, torch.ones(action.shape[0])


def test_dmo_loss_uses_the_networks_it_receives():
    wm = make_world_model()
    L = wm.cfg.latent_dim
    actor = TensorDictModule(torch.nn.Linear(L, 2 * ACTION_DIM), in_keys=["latent"], out_keys=["policy_params"])
    critic = TensorDictModule(torch.nn.Linear(L, 1), in_keys=["latent"], out_keys=["state_value"])
    with torch.no_grad():
        actor.module.weight.zero_()
        actor.module.bias.zero_()
    loss = DMOLoss(wm, actor, critic)
    assert loss.actor_network is actor
    assert set(map(id, loss.parameter_groups()["actor"])) == {id(p) for p in actor.parameters()}
    action, _ = loss.policy(torch.randn(4, L), deterministic=True)
    assert torch.equal(action, torch.zeros(4, ACTION_DIM)), "tanh of the given actor's zero mean"
    z = torch.randn(3, L)
    torch.testing.assert_close(loss.value(z), critic.module(z).squeeze(-1))
    torch.testing.assert_close(loss.value(z, target=True), loss.value(z))  # the target starts as a copy


def test_dmo_loss_network_errors():
    wm = make_world_model()
    L = wm.cfg.latent_dim
    with pytest.raises(ValueError, match=r"actor_network maps a latent \(32,\) to \(4,\)"):
        DMOLoss(wm, TensorDictModule(torch.nn.Linear(L, 3), in_keys=["latent"], out_keys=["policy_params"]))
    with pytest.raises(TypeError, match="critic_network must be a TensorDictModule"):
        DMOLoss(wm, critic_network=torch.nn.Linear(L, 1))


def test_dmo_rollout_is_the_loss_rollout():
    loss = DMOLoss(make_world_model())
    torch.manual_seed(0)
    a = dmo_rollout(loss, _Global(4), horizon=3)
    torch.manual_seed(0)
    b = loss.rollout(_Global(4), horizon=3)
    assert a.shape == (4, 3)
    for key in a.keys(True, True):
        torch.testing.assert_close(a[key], b[key])
    torch.testing.assert_close(a["next", "reward"].detach(), torch.ones(4, 3, 1))
    assert torch.isfinite(loss(a)["loss_actor"])
