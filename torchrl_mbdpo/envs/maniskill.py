"""ManiSkill tasks under the paper's ManiSkill2 names, run on ManiSkill3 (``mani-skill==3.0.1``).

MBDPO and TD-MPC2 report five ManiSkill2 (``mani_skill2==0.5.3``) tasks. ManiSkill2 cannot create any
env on a CPU-only machine: its SAPIEN 2 renderer needs the Vulkan extension
``VK_KHR_external_semaphore_fd``, which Mesa's CPU driver (lavapipe) does not provide. ManiSkill3 runs
on lavapipe from Mesa >= 25, so each task maps to its ManiSkill3 successor:

=============  ==========================  ================  =============================================
MBDPO name     ManiSkill3 id               control mode      why this one
=============  ==========================  ================  =============================================
lift-cube      ``MBDPOLiftCube-v1``        pd_ee_delta_pos   ManiSkill3 has no LiftCube; ManiSkill2's
               (maniskill_lift_cube.py)                      LiftCube-v0 was PickCube with the goal 0.2 m
                                                             above the cube and success = lifted 0.2 m, so
                                                             this is PickCube-v1 with that goal and that
                                                             success test (LiftPegUpright-v1 rotates a peg;
                                                             PushCube/PullCube never lift).
pick-cube      ``PickCube-v1``             pd_ee_delta_pos   the same task (cube to a random 3-D goal).
stack-cube     ``StackCube-v1``            pd_ee_delta_pos   the same task (red cube on the green one).
pick-ycb       ``PickSingleYCB-v1``        pd_ee_delta_pose  the same task; needs the ``ycb`` assets.
turn-faucet    ``TurnFaucet-v1``           pd_ee_delta_pose  the same task (robot ``panda``, as in
                                                             ManiSkill2); needs ``partnet_mobility_faucet``.
=============  ==========================  ================  =============================================

Control modes are TD-MPC2's ManiSkill2 choices, and every task here supports them. Observations are
ManiSkill's flat ``"state"`` vector (float32). The reward is ManiSkill3's default mode,
``normalized_dense`` (the dense reward divided by its maximum, so 1 on success), as ManiSkill2 0.5's
default that TD-MPC2 used; TurnFaucet-v1 only has ``sparse`` (1 on success). Physics runs on PhysX CPU, one env per instance.

Episodes: 100 agent steps with action repeat 2 (rewards summed), ``make_env``'s StepCounter truncating
at 100; the ManiSkill env has no time limit of its own. ``success`` is ``info["success"]`` after the
last repeated sub-step.

Termination: ManiSkill3 3.0.1 returns ``terminated = info["success"]`` (or ``success | fail`` for tasks
with a failure test) from every ``step``; ManiSkill2 0.5 did the same, and MBDPO's ManiSkill2 wrapper
marks ``terminated = done`` and stops repeating the action there. The env is kept as ManiSkill defines
it, so these tasks are ``episodic``: the episode ends at the first success (``terminated``), the world
model learns a termination head, and success at the last step equals "succeeded within 100 steps".

ManiSkill needs a Vulkan device (on CPU: Mesa >= 25 lavapipe, from bookworm-backports on Debian 12)
and ``mani_skill`` itself; without them the tasks stay listed and ``make`` raises
:class:`SuiteUnavailableError` with the install commands. Asset-based tasks raise it too, with the
download command, before ManiSkill could ask on stdin whether to download them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import Bounded, Categorical, Composite, Unbounded
from torchrl.envs import EnvBase

from .factory import TaskSpec
from .suite import Suite, SuiteUnavailableError, register_suite

MANISKILL_EPISODE_LENGTH = 100  # agent steps
MANISKILL_ACTION_REPEAT = 2

VULKAN_INSTALL_HINT = (
    "ManiSkill3 needs a Vulkan device; on a CPU-only Debian 12 machine that is Mesa >= 25 lavapipe from "
    "bookworm-backports (as root):\n"
    "  awk -v RS= 'NR==1' /etc/apt/sources.list.d/debian.sources "
    "| sed 's/^Suites:.*/Suites: bookworm-backports/' > /etc/apt/sources.list.d/backports.sources\n"
    "  apt-get update && apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1"
)


@dataclass(frozen=True)
class ManiSkillTask:
    """How one MBDPO task name is built in ManiSkill3."""

    env_id: str
    control_mode: str
    robot: str = "panda"


MANISKILL_TASKS = {
    "lift-cube": ManiSkillTask("MBDPOLiftCube-v1", "pd_ee_delta_pos"),
    "pick-cube": ManiSkillTask("PickCube-v1", "pd_ee_delta_pos"),
    "stack-cube": ManiSkillTask("StackCube-v1", "pd_ee_delta_pos"),
    "pick-ycb": ManiSkillTask("PickSingleYCB-v1", "pd_ee_delta_pose"),
    "turn-faucet": ManiSkillTask("TurnFaucet-v1", "pd_ee_delta_pose"),
}


def check_maniskill_available() -> None:
    """Raise :class:`SuiteUnavailableError`, which says how to install them, if ``mani_skill`` or a Vulkan
    device is missing."""
    try:
        import mani_skill.envs  # noqa: F401  (registers ManiSkill's tasks)
        import sapien
    except ImportError as err:
        raise SuiteUnavailableError(
            f"ManiSkill tasks need ManiSkill3 ({err}). Install it with: pip install -e '.[maniskill]'\n{VULKAN_INSTALL_HINT}"
        ) from err
    try:
        devices = sapien.render.get_device_summary()
    except RuntimeError as err:  # "failed to find a rendering device"
        raise SuiteUnavailableError(f"ManiSkill3 found no Vulkan device ({err}).\n{VULKAN_INSTALL_HINT}") from err
    if "Supported: 1" not in devices:
        raise SuiteUnavailableError(
            f"ManiSkill3 found no supported Vulkan device (older Mesa lavapipe is listed but unusable):\n{devices}\n{VULKAN_INSTALL_HINT}"
        )


def _check_assets(task: str, env_id: str) -> None:
    """Fail with the download command instead of letting ManiSkill ask on stdin (and exit on "n")."""
    from mani_skill import ASSET_DIR
    from mani_skill.utils import assets
    from mani_skill.utils.registration import REGISTERED_ENVS

    missing = []
    for asset_id in REGISTERED_ENVS[env_id].asset_download_ids:
        sources = assets.expand_data_group_into_individual_data_source_ids(asset_id) if asset_id in assets.DATA_GROUPS else [asset_id]
        if not all(assets.is_data_source_downloaded(source) for source in sources):
            missing.append(asset_id)
    if missing:
        commands = "\n".join(f"  python -m mani_skill.utils.download_asset {asset_id}" for asset_id in missing)
        raise SuiteUnavailableError(
            f"ManiSkill task {task!r} ({env_id}) needs the asset(s) {', '.join(missing)}, which are not in {ASSET_DIR} "
            f"(set MS_ASSET_DIR to use another folder). Download them (network needed) with:\n{commands}"
        )


class ManiSkillEnv(EnvBase):
    """One ManiSkill3 CPU env (``num_envs=1``, built by ``make_maniskill_env``) as an unbatched torchrl env.

    Each action is repeated ``action_repeat`` times (rewards summed), stopping early when ManiSkill
    terminates. Every reset passes ManiSkill an episode seed drawn from a generator seeded by
    ``set_seed``, so episodes are reproducible and ManiSkill's initial-state sampling runs under its
    own torch seed instead of drawing from (and shifting) the global torch RNG.
    """

    def __init__(self, make_maniskill_env: Callable[[], Any], *, action_repeat: int, seed: int = 0, device="cpu"):
        super().__init__(device=device, batch_size=torch.Size([]))
        self._make_maniskill_env = make_maniskill_env
        self._env = maniskill_env = make_maniskill_env()
        self.action_repeat = action_repeat
        self._episode_seeds = np.random.default_rng(seed)
        obs_shape = maniskill_env.single_observation_space.shape
        action_space = maniskill_env.single_action_space
        flag = Categorical(2, shape=(1,), dtype=torch.bool, device=self.device)
        self.observation_spec = Composite(
            observation=Unbounded(obs_shape, dtype=torch.float32, device=self.device),
            success=flag.clone(),
            device=self.device,
        )
        self.action_spec = Bounded(
            torch.as_tensor(action_space.low),
            torch.as_tensor(action_space.high),
            action_space.shape,
            dtype=torch.float32,
            device=self.device,
        )
        self.reward_spec = Unbounded((1,), dtype=torch.float32, device=self.device)
        self.full_done_spec = Composite(done=flag.clone(), terminated=flag.clone(), truncated=flag.clone(), device=self.device)

    def _set_seed(self, seed: int | None) -> None:
        self._episode_seeds = np.random.default_rng(seed)

    def _reset(self, tensordict=None, **kwargs) -> TensorDict:
        if self._env is None:  # closed: rebuild (see close)
            self._env = self._make_maniskill_env()
            self.is_closed = False
        obs, info = self._env.reset(seed=int(self._episode_seeds.integers(2**31)))
        not_done = torch.zeros(1, dtype=torch.bool, device=self.device)
        return TensorDict(
            observation=obs[0].to(self.device),
            success=info["success"].view(1).to(self.device),
            done=not_done,
            terminated=not_done.clone(),
            truncated=not_done.clone(),
            batch_size=[],
            device=self.device,
        )

    def _step(self, tensordict: TensorDict) -> TensorDict:
        action = tensordict["action"].unsqueeze(0).cpu()  # ManiSkill is batched over its (single) env
        reward = torch.zeros(1)
        for _ in range(self.action_repeat):
            obs, step_reward, terminated, truncated, info = self._env.step(action)
            reward += step_reward
            if (terminated | truncated).any():
                break
        terminated = terminated.view(1).to(self.device)
        return TensorDict(
            observation=obs[0].to(self.device),
            reward=reward.to(self.device),
            success=info["success"].view(1).to(self.device),
            done=terminated.clone(),
            terminated=terminated,
            truncated=torch.zeros_like(terminated),
            batch_size=[],
            device=self.device,
        )

    def close(self, *, raise_if_closed: bool = True) -> None:
        """Free the simulator; a later ``reset`` builds a new one.

        torchrl's Collector closes its env once it has collected ``total_frames``, and the trainer still
        resets the training envs for its final checkpoint; DMControl and Gymnasium envs keep working after
        ``close``, and so does this one.
        """
        if self._env is not None:
            self._env.close()
            self._env = None
        super().close(raise_if_closed=raise_if_closed)


class ManiSkillSuite(Suite):
    """The paper's five ManiSkill2 tasks on ManiSkill3 (see the module docstring for the mapping)."""

    name = "ManiSkill"
    install_hint = f"pip install -e '.[maniskill]'\n{VULKAN_INSTALL_HINT}"

    def tasks(self) -> list[str]:
        return list(MANISKILL_TASKS)

    def task_spec(self, task: str) -> TaskSpec:
        if task not in MANISKILL_TASKS:
            raise self.unknown(task)
        return TaskSpec(task, MANISKILL_EPISODE_LENGTH, MANISKILL_ACTION_REPEAT, episodic=True, reports_success=True)

    def make(self, task: str, *, seed: int, device="cpu") -> ManiSkillEnv:
        if task not in MANISKILL_TASKS:
            raise self.unknown(task)
        check_maniskill_available()
        from mani_skill.utils.registration import REGISTERED_ENVS

        from . import maniskill_lift_cube  # noqa: F401  (registers lift-cube's env id)

        spec = MANISKILL_TASKS[task]
        _check_assets(task, spec.env_id)
        # The registry's EnvSpec builds the bare env: gym.make would add ManiSkill's own time limit.
        make_maniskill_env = partial(
            REGISTERED_ENVS[spec.env_id].make,
            num_envs=1,
            obs_mode="state",
            control_mode=spec.control_mode,
            robot_uids=spec.robot,
            sim_backend="physx_cpu",
            render_backend="sapien_cpu",
        )
        return ManiSkillEnv(make_maniskill_env, action_repeat=MANISKILL_ACTION_REPEAT, seed=seed, device=device)


register_suite(ManiSkillSuite())
