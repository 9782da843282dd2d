"""TorchRL's TD-MPC2 recipe (pytorch/rl sota-implementations/tdmpc2_trainer/train.py) with MBDPO's config
entries registered: ``python train.py`` trains MBDPO (``trainer@trainer: mbdpo`` in config/config.yaml),
``python train.py trainer=tdmpc2`` TorchRL's own TD-MPC2 on the same components. Needs torchrl >= 0.15
(the torchrl-next install: ``make setup-next``)."""

from __future__ import annotations

import random
import sys

import hydra
import numpy as np
import torch

from torchrl_mbdpo._torchrl_next import require_tdmpc2

try:
    require_tdmpc2("sota-implementations/mbdpo_trainer/train.py (TorchRL's own TD-MPC2 recipe)")
except ImportError as err:  # the default install: say which install this recipe needs, in one line
    print(f"error: {err}", file=sys.stderr)
    sys.exit(2)

from torchrl.trainers.algorithms.configs import instantiate_trainer  # noqa: E402

import torchrl_mbdpo.trainers.torchrl_configs  # noqa: E402, F401  (trainer/mbdpo, loss/mbdpo, model/mbdpo_planner, ...)


def _set_seed(seed: int) -> None:
    """Seed the random generators used while the models are built."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


@hydra.main(config_path="config", config_name="config", version_base="1.3")
def main(cfg):
    """Instantiate and run the configured trainer (MBDPO or TorchRL's TD-MPC2)."""
    _set_seed(int(cfg.trainer.seed))
    trainer = instantiate_trainer(cfg)
    with trainer.stop_on_signal():
        trainer.train()


if __name__ == "__main__":
    main()
