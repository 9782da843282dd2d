"""MBDPO online training, TorchRL sota-implementations style.

    python sota-implementations/mbdpo/mbdpo.py                       # config.yaml (DMControl, paper defaults)
    python sota-implementations/mbdpo/mbdpo.py --config-name config_cpu_small
    python sota-implementations/mbdpo/mbdpo.py --config-name config_metaworld   # or config_myosuite,
                                                                     # config_maniskill, config_pixels
    python sota-implementations/mbdpo/mbdpo.py task=walker-walk steps=100000 seed=2 algo=tdmpc2

The YAML files here are complete presets of ``mbdpo-train``'s settings (the same schema); this script runs them
exactly as ``mbdpo-train`` runs its command line: the settings checked before anything is written (one line and
exit 2 for a mistake), a checkpoint on SIGTERM (exit 143), the final evaluation's line at the end.
"""

from pathlib import Path

from torchrl_mbdpo.cli import main

if __name__ == "__main__":
    main("mbdpo-train", config_dir=str(Path(__file__).resolve().parent), config_name="config")
