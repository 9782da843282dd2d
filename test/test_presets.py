"""Every preset in sota-implementations/mbdpo/ composes into a valid TrainConfig of a known task."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from torchrl_mbdpo.envs import task_spec
from torchrl_mbdpo.trainers.config import TrainConfig, register_configs

PRESETS = Path(__file__).resolve().parent.parent / "sota-implementations" / "mbdpo"
EXPECTED = {
    "config": ("cheetah-run", "state"),
    "config_cpu_small": ("cartpole-swingup", "state"),
    "config_metaworld": ("mw-assembly", "state"),
    "config_myosuite": ("myo-key-turn", "state"),
    "config_maniskill": ("pick-cube", "state"),
    "config_pixels": ("walker-walk", "rgb"),
}


def test_every_preset_is_listed():
    assert {p.stem for p in PRESETS.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_preset_composes_into_a_train_config(name):
    register_configs()
    with initialize_config_dir(config_dir=str(PRESETS), version_base="1.3"):
        cfg = OmegaConf.to_object(compose(config_name=name))
    assert isinstance(cfg, TrainConfig)
    assert (cfg.task, cfg.obs) == EXPECTED[name]
    assert task_spec(cfg.task).name == cfg.task
