from pathlib import Path

from setuptools import find_packages, setup


def _requirements(name: str) -> list[str]:
    """The requirement lines of ``requirements/<name>`` (comments and ``-r`` lines dropped)."""
    lines = (Path(__file__).parent / "requirements" / name).read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip() and not line.startswith("-")]


setup(
    name="torchrl_mbdpo",
    version="0.2.0",  # the one place of the version: torchrl_mbdpo.__version__ reads it from the installed metadata
    description="Model-Based Diffusion Policy Optimization (MBDPO) and TD-MPC2, built on TorchRL",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["torchrl_mbdpo", "torchrl_mbdpo.*"]),
    package_data={"torchrl_mbdpo": ["envs/custom_tasks/*.xml", "config/*.yaml", "data/official_curves.csv"]},
    python_requires=">=3.10",
    install_requires=[
        # 2.13.0 tested (constraints.txt); older releases lack APIs the compiled update uses. No upper bound, as
        # TorchRL's own (torch>=2.1): a user's newer torch is kept.
        "torch>=2.13",
        # 0.14.1 tested (the default install) and TorchRL's TD-MPC2 stack of 0.15 (the nightly; the drop-in);
        # 0.16 is not released: untested.
        "torchrl>=0.14.1,<0.16",
        # 0.14.3 tested (torchrl 0.14.1's) and the 0.15 nightly (torchrl 0.15's); below 0.16 for the same reason.
        "tensordict>=0.14.3,<0.16",
        *_requirements("common.txt"),
    ],
    extras_require={
        # ruff pinned: a newer release may format differently and fail `make lint`; pytest-xdist: `make test` in parallel
        # build: the sdist and wheel of scripts/wheel_check.sh; sphinx, myst-parser, furo: the documentation (make docs)
        "dev": ["pytest", "pytest-xdist>=3.5", "ruff==0.17.6", "build"],
        "docs": ["sphinx>=7", "myst-parser>=2", "furo"],
        # TorchRL's own TD-MPC2 stack (torchrl >= 0.15), which MBDPO plugs into (trainer=mbdpo): not a pip
        # extra while 0.15 is only a nightly (its distribution name differs from torchrl's, so it cannot
        # replace the pinned 0.14.1 through an extra). `make setup-next` builds that environment
        # (requirements/torchrl-next.txt); once torchrl 0.15 is on the registry this becomes an extra.
        "tensorboard": ["tensorboard"],
        "wandb": ["wandb"],
        # mbdpo-train -m ... hydra/launcher=submitit_slurm: each run of a sweep as a Slurm job
        "slurm": ["hydra-submitit-launcher>=1.2"],
        # ManiSkill3 also needs a Vulkan device: on CPU, Mesa >= 25 lavapipe (scripts/install_maniskill_vulkan.sh)
        "maniskill": ["mani-skill==3.0.1"],
        "myosuite": ["myosuite==3.0.0"],
        # metaworld itself pins mujoco==3.3.0, which conflicts with dm_control: install it with
        # `pip install --no-deps metaworld==3.1.1`. This extra holds its runtime deps that the base lacks.
        "metaworld": ["imageio"],
        # DMO in a learned pixel world model of Push-T (torchrl_mbdpo/dmo): the real env and the diffusion U-Net.
        # gym-pusht pins opencv-python<5 and pymunk<7.
        "pusht": ["gym-pusht==0.1.8", "diffusers==0.42.1"],
    },
    entry_points={
        "console_scripts": [
            "mbdpo-train=torchrl_mbdpo.cli:train_main",
            "mbdpo-eval=torchrl_mbdpo.cli:eval_main",
            "mbdpo-compare=torchrl_mbdpo.cli:compare_main",
            "mbdpo-finetune=torchrl_mbdpo.cli:finetune_main",
            "mbdpo-dataset=torchrl_mbdpo.cli:dataset_main",
            "mbdpo-import=torchrl_mbdpo.cli:import_main",
            "mbdpo-export=torchrl_mbdpo.cli:export_main",
            "mbdpo-dmo=torchrl_mbdpo.cli:dmo_main",
        ]
    },
)
