"""The paper's alignment diagnostics (cross TD error, action drift; MBDPO Figs. 3, 21, 22).

MBDPO's claim is that its search and its value function stay aligned, while TD-MPC2's MPPI drifts
away from the policy prior whose actions the value function is trained on. Both measures are
computed at every evaluation from the evaluation episodes the planner just played (deterministic,
so the executed action is the planner's choice) and one replay batch: a few hundred transitions,
little next to the evaluation episodes themselves.
"""

from __future__ import annotations

import torch
from tensordict import TensorDictBase

from ..modules.functional import squash_log_std

__all__ = ["td_error", "action_drift"]


@torch.no_grad()
def td_error(loss, transitions: TensorDictBase) -> float:
    """Mean absolute one-step TD error ``|Q(z, a) - y|`` over flat transitions ``[N]`` (``observation``,
    ``action``, ``("next", ...)`` reward/observation/terminated).

    ``z = enc(o)``; ``Q`` is the mean of every online Q head (no dropout); ``y = r + gamma (1 - term)
    min(Qtgt_i, Qtgt_j)(z', a' ~ pi(z'))`` is the loss's own TD target (``loss.td_targets``). On replay
    transitions it is the error the value loss minimises; on the planner's transitions (``a`` chosen by
    the planner) it is the **cross TD error**: how well Q predicts the returns of the actions search
    actually takes.
    """
    wm = loss.latent_model
    was_training = wm.training
    wm.eval()
    try:
        target = loss.td_targets(transitions.reshape(-1, 1)).reshape(-1, 1)  # one-step slices
        task = transitions.get("task").reshape(-1) if wm.cfg.multitask else None
        z = wm.encode_obs(transitions.get("observation"), task)
        all_heads = torch.arange(wm.cfg.num_q, device=z.device)
        q = wm.q_value(z, transitions.get("action"), task, reduce="avg", pair=all_heads)
        return (q - target).abs().mean().item()
    finally:
        wm.train(was_training)


@torch.no_grad()
def action_drift(world_model, observations: torch.Tensor, actions: torch.Tensor, task=None) -> dict[str, float]:
    """How far the planner's actions ``a`` lie from the policy prior ``pi(.|z)`` at the states it acted in.

    The prior is Gaussian in pre-tanh space, ``u ~ N(mu(z), sigma(z)^2)``, ``a = tanh(u)``. Returns:

    - ``action_drift_l2``: ``sqrt(mean_d (a_d - tanh(mu_d))^2)``, the RMS distance to the prior's mean
      action, averaged over states;
    - ``action_drift_logratio``: ``mean_d 0.5 (((atanh(a_d) - mu_d) / sigma_d)^2 - 1)``, averaged over
      states: per action dim, how much less likely the planner's action is under the prior than a
      typical sample of the prior itself (``E_pi[log pi] - log pi(a)``); 0 when the planner acts like
      the prior, large when search leaves the region the value function is trained on.
    """
    wm = world_model
    z = wm.encode_obs(observations, task)
    mu, raw_log_std = wm.policy.module(z, *wm.task_args(task)).chunk(2, dim=-1)
    sigma = squash_log_std(raw_log_std, wm.cfg.log_std_min, wm.cfg.log_std_max).exp()
    a = actions.clamp(-1 + 1e-6, 1 - 1e-6)
    mask = wm.action_mask(task)
    dims = torch.full_like(a[..., :1], a.shape[-1]) if mask is None else mask.sum(-1, keepdim=True)
    mask = torch.ones_like(a) if mask is None else mask
    l2 = (((a - torch.tanh(mu)) ** 2 * mask).sum(-1, keepdim=True) / dims).sqrt()
    logratio = ((0.5 * (((torch.atanh(a) - mu) / sigma) ** 2 - 1)) * mask).sum(-1, keepdim=True) / dims
    return {"action_drift_l2": l2.mean().item(), "action_drift_logratio": logratio.mean().item()}
