"""MBDPO's and TD-MPC2's training objective (TorchRL ``LossModule``s): losses only. The
training step (``make_optimizers``, ``UpdateStep``, ``CompiledUpdate``, ``update``) lives in
:mod:`torchrl_mbdpo.trainers.optimization`; those names still resolve here.

The equations they use live in :mod:`torchrl_mbdpo.modules.functional`; the ones a loss is made of are
re-exported here for convenience.
"""

from ..modules.functional import (
    binary_contrastive_loss,
    consistency_loss,
    contrastive_pairs,
    ema_moments,
    mc_score_target,
    negative_candidates,
    percentile,
    policy_loss,
    rho_weighted_ce,
    rho_weights,
    score_candidates,
    select_hard_negatives,
    td_target,
    termination_loss,
    value_loss,
)
from ..modules.scale import RunningScale
from .mbdpo import MBDPOLoss, TDMPC2Loss

__all__ = [
    "MBDPOLoss",
    "TDMPC2Loss",
    "RunningScale",
    "binary_contrastive_loss",
    "consistency_loss",
    "contrastive_pairs",
    "ema_moments",
    "mc_score_target",
    "negative_candidates",
    "percentile",
    "policy_loss",
    "rho_weighted_ce",
    "rho_weights",
    "score_candidates",
    "select_hard_negatives",
    "td_target",
    "termination_loss",
    "value_loss",
]


def __getattr__(name):
    from . import mbdpo

    return getattr(mbdpo, name)  # the training step's names, moved to torchrl_mbdpo.trainers.optimization
