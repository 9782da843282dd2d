from setuptools import find_packages, setup

setup(
    name="torchrl_mbdpo",
    version="0.1.0",
    description="Model-Based Diffusion Policy Optimization (MBDPO) and TD-MPC2, built on TorchRL",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    packages=find_packages(include=["torchrl_mbdpo", "torchrl_mbdpo.*"]),
    package_data={"torchrl_mbdpo": ["envs/custom_tasks/*.xml", "config/*.yaml", "data/official_curves.csv"]},
    python_requires=">=3.10",
    install_requires=[
        "torch==2.13.0",
        "torchrl==0.14.1",
        "tensordict==0.14.3",
        "mujoco==3.17.0",
        "dm-control==1.0.50",
        "hydra-core>=1.3",
        "hydra-joblib-launcher>=1.2",  # mbdpo-train -m ...: the runs of a sweep in parallel
        "tqdm",
        "matplotlib",
        "gymnasium",
        "imageio",  # evaluation videos (save_video): MP4 through imageio-ffmpeg's bundled ffmpeg
        "imageio-ffmpeg",
    ],
    extras_require={
        "dev": ["pytest", "ruff"],
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
