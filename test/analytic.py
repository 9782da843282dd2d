"""An analytic world model with the tensor API of ``MBDPOWorldModel``, for planner tests.

Point mass in ``R^A``: ``z' = z + a``, reward ``-|z' - goal|^2``, no energy, terminal value 0. From
``z`` with ``|goal - z|_inf <= 1`` the best sequence is ``a_0 = goal - z`` then zeros, with return 0.
"""
from types import SimpleNamespace

import torch

from torchrl_mbdpo.modules.functional import PolicySample


class PointMassModel(torch.nn.Module):
    def __init__(self, goal, horizon=3):
        super().__init__()
        self.register_buffer("goal", torch.as_tensor(goal, dtype=torch.float32))
        A = self.goal.numel()
        self.cfg = SimpleNamespace(horizon=horizon, action_dim=A, multitask=False)
        self.done_head = None
        self.energy_norm = torch.nn.Identity()
        self.calls = 0

    def encode_obs(self, obs, task=None):
        return obs

    @staticmethod
    def _align(z, a):
        # As the world model's heads: a latent (*B, L) broadcasts over candidates (*B, N, A).
        return z.unsqueeze(-2) if z.ndim < a.ndim else z

    def next(self, z, a, task=None):
        self.calls += 1
        return self._align(z, a) + a

    def reward(self, z, a, task=None):
        return -((self._align(z, a) + a - self.goal) ** 2).sum(-1, keepdim=True)

    def decode_reward(self, r):
        return r

    def energy_logit(self, z, a, task=None):
        return torch.zeros(*a.shape[:-1], 1)

    def q_value(self, z, a, task=None, reduce="avg"):
        return torch.zeros(*z.shape[:-1], 1)

    def pi(self, z, task=None, eps=None):
        a = torch.rand_like(z) * 2 - 1
        return PolicySample(a, a, torch.zeros(*z.shape[:-1], 1), torch.zeros(*z.shape[:-1], 1))

    def action_mask(self, task):
        return None

    def score(self, z, x, tau, task=None):
        return torch.zeros_like(x)

    def score_fn(self, z, num_taus, task=None):
        return lambda x, tau: self.score(z, x, torch.full((), tau), task)
