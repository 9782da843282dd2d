"""MBDPO online training, TorchRL sota-implementations style.

    python sota-implementations/mbdpo/mbdpo.py                       # config.yaml (DMControl, paper defaults)
    python sota-implementations/mbdpo/mbdpo.py --config-name config_cpu_small
    python sota-implementations/mbdpo/mbdpo.py --config-name config_metaworld   # or config_myosuite,
                                                                     # config_maniskill, config_pixels
    python sota-implementations/mbdpo/mbdpo.py task=walker-walk steps=100000 seed=2 algo=tdmpc2

The same trainer as the `mbdpo-train` console script; the YAML files here are complete presets.
"""

import hydra
from omegaconf import OmegaConf

from torchrl_mbdpo.trainers.config import register_configs
from torchrl_mbdpo.trainers.trainer import make_trainer

register_configs()


@hydra.main(version_base="1.3", config_path="", config_name="config")
def main(cfg):
    trainer = make_trainer(OmegaConf.to_object(cfg))
    trainer.train()
    print(f"final eval: {trainer.last_eval}")


if __name__ == "__main__":
    main()
