"""Push-T (``gym-pusht`` 0.1.8, a pymunk simulation) as a TorchRL env: the real task of DMO's pixel world-model
experiments (Amigo et al., "Coupled Local and Global World Models for Efficient First Order RL").

A blue disc (the agent, moved by a PD controller towards the commanded position) pushes a grey T-shaped
block onto a green goal pose. :func:`make_pusht_env` builds it with

- ``"pixels"``: the rendered frame, uint8 ``(3, H, W)`` (channels first, ``image_size`` x ``image_size``,
  gym-pusht renders at any size; 64 and 96 are the usual ones);
- ``"state"``: float32 ``(5,)`` ``[agent_x, agent_y, block_x, block_y, block_angle]`` in the simulator's
  units (positions in [0, 512], angle in [0, 2 pi)), gym-pusht's own ``obs_type="state"`` vector;
- ``"action"``: ``Bounded`` [-1, 1] ``(2,)``, rescaled (``ActionScaling``) to the commanded agent position in
  [0, 512]^2: ``position = 256 (a + 1)``;
- ``("next", "reward")``: gym-pusht's reward, the block's coverage of the goal divided by 0.95, clipped to 1;
- ``("next", "success")``: gym-pusht's own success test (``info["is_success"]``: coverage > 95 %), which
  also ends the episode (``terminated``); ``("next", "coverage")`` is the coverage itself;
- ``truncated`` after ``max_episode_steps`` steps (default 300, gym-pusht's registered limit),
  ``step_count``, ``is_init`` and ``episode_reward``.

``pixels=False`` leaves the renderer out (``"state"`` only, about 10x faster). The task is also registered as
the suite task ``pusht`` of :func:`~torchrl_mbdpo.envs.make_env` (state observations), so the state-based
algorithms of this library run on it too.
"""

from __future__ import annotations

import numpy as np
import torch
from torchrl.data import Categorical, Unbounded
from torchrl.envs import (
    ActionScaling,
    CatFrames,
    Compose,
    GymWrapper,
    InitTracker,
    PermuteTransform,
    RenameTransform,
    RewardSum,
    StepCounter,
    TransformedEnv,
    default_info_dict_reader,
    set_gym_backend,
)

from .factory import TaskSpec
from .suite import Suite, SuiteUnavailableError, register_suite

__all__ = [
    "PUSHT_EPISODE_LENGTH",
    "PUSHT_GOAL",
    "PUSHT_INSTALL_HINT",
    "PushTSuite",
    "make_pusht_env",
    "pusht_goal_frame",
    "pusht_dense_reward",
    "action_to_position",
    "position_to_action",
]

PUSHT_EPISODE_LENGTH = 300  # gym-pusht registers gym_pusht/PushT-v0 with max_episode_steps=300
PUSHT_GOAL = (256.0, 256.0, np.pi / 4)  # the goal pose of the block (x, y, angle), fixed in gym-pusht
PUSHT_INSTALL_HINT = "pip install -c constraints.txt -e '.[pusht]'  (gym-pusht==0.1.8, with pymunk and pygame)"
WORKSPACE = 512.0  # gym-pusht's coordinates: [0, 512]^2


def action_to_position(action):
    """The commanded agent position in [0, 512]^2 of a [-1, 1] action (what ``ActionScaling`` does)."""
    return (action + 1.0) * (WORKSPACE / 2)


def position_to_action(position):
    """The [-1, 1] action that commands the agent to ``position`` (in [0, 512]^2)."""
    return position / (WORKSPACE / 2) - 1.0


def _import_pusht():
    try:
        import gym_pusht.envs  # noqa: F401  (pymunk, pygame, shapely, opencv)
    except ImportError as err:
        raise SuiteUnavailableError(
            f"Push-T needs gym-pusht, which could not be imported ({err}). Install it with: {PUSHT_INSTALL_HINT}"
        ) from err
    return gym_pusht.envs


def _gym_env(image_size: int, pixels: bool):
    """gym-pusht's env with a ``{"pixels", "state"}`` (or ``{"state"}``) observation and ``info["success"]``."""
    import gymnasium

    envs = _import_pusht()

    class PushTPixelsState(gymnasium.Wrapper):
        """gym-pusht's ``PushTEnv`` observed as ``{"pixels": HWC uint8, "state": (5,) float32}`` with a boolean
        ``info["success"]`` of shape (1,) (its ``is_success``) and ``info["coverage"]``; no time limit."""

        def __init__(self):
            inner = envs.PushTEnv(
                obs_type="pixels_agent_pos" if pixels else "state",
                render_mode="rgb_array",
                observation_width=image_size,
                observation_height=image_size,
            )
            super().__init__(inner)
            spaces = {"state": gymnasium.spaces.Box(0.0, WORKSPACE, (5,), np.float32)}
            if pixels:
                spaces["pixels"] = gymnasium.spaces.Box(0, 255, (image_size, image_size, 3), np.uint8)
            self.observation_space = gymnasium.spaces.Dict(spaces)

        def _observation(self, obs):
            inner = self.env.unwrapped
            state = np.array([*inner.agent.position, *inner.block.position, inner.block.angle % (2 * np.pi)], np.float32)
            return {"state": state, "pixels": obs["pixels"]} if pixels else {"state": state}

        def reset(self, *, seed=None, options=None):
            obs, _ = self.env.reset(seed=seed, options=options)
            return self._observation(obs), {"success": np.zeros(1, bool), "coverage": np.zeros(1, np.float32)}

        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(np.asarray(action, np.float64))
            info = {"success": np.array([bool(info["is_success"])]), "coverage": np.array([info["coverage"]], np.float32)}
            return self._observation(obs), float(reward), bool(terminated), bool(truncated), info

    return PushTPixelsState()


def _base_env(*, image_size: int, pixels: bool, coverage: bool = True, device="cpu") -> GymWrapper:
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8 pixels, got {image_size}.")
    with set_gym_backend("gymnasium"):
        env = GymWrapper(_gym_env(image_size, pixels), device=device)
    keys, specs = ["success"], [Categorical(2, shape=(1,), dtype=torch.bool, device=device)]
    if coverage:
        keys.append("coverage")
        specs.append(Unbounded((1,), dtype=torch.float32, device=device))
    return env.set_info_dict_reader(default_info_dict_reader(keys, spec=specs))


def make_pusht_env(
    *,
    image_size: int = 64,
    pixels: bool = True,
    seed: int = 0,
    max_episode_steps: int = PUSHT_EPISODE_LENGTH,
    observation_frames: int | None = None,
    device="cpu",
) -> TransformedEnv:
    """The seeded Push-T TorchRL env of the module docstring; ``observation_frames=n`` adds ``"observation"``, the last
    ``n`` frames stacked on the channel axis (uint8 ``(3 n, H, W)``, the first frame repeated after a reset: TorchRL's
    ``CatFrames``), what the library's pixel encoder reads."""
    if max_episode_steps < 1:
        raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps}.")
    base = _base_env(image_size=image_size, pixels=pixels, device=device)
    # GymWrapper names the "state" entry of a Dict observation "observation": back to "state"
    transforms = [RenameTransform(["observation"], ["state"])]
    if pixels:
        transforms.append(PermuteTransform((-1, -3, -2), in_keys=["pixels"]))  # HWC -> CHW
    if observation_frames is not None:
        if not pixels:
            raise ValueError("observation_frames stacks rendered frames: it needs pixels=True.")
        transforms.append(CatFrames(N=int(observation_frames), dim=-3, in_keys=["pixels"], out_keys=["observation"]))
    transforms += [ActionScaling(), StepCounter(max_steps=max_episode_steps), InitTracker(), RewardSum()]
    env = TransformedEnv(base, Compose(*transforms))
    env.set_seed(seed)
    env.task_spec = TaskSpec("pusht", max_episode_steps, action_repeat=1, episodic=True, reports_success=True)
    env.image_size = image_size if pixels else None
    return env


def pusht_goal_frame(image_size: int = 64, agent: tuple[float, float] = (256.0, 460.0)) -> torch.Tensor:
    """The frame of the solved task: the block on its goal pose, the agent at ``agent`` (below it, out of the
    way), rendered as :func:`make_pusht_env` renders (uint8 ``(3, H, W)``). The goal image of a goal-conditioned
    reward."""
    env = make_pusht_env(image_size=image_size, seed=0)
    env.reset()
    inner = env.base_env._env.unwrapped
    inner.agent.position = agent
    inner.block.angle = PUSHT_GOAL[2]  # the angle first: the T turns about its centre of mass
    inner.block.position = PUSHT_GOAL[:2]
    for body in (inner.agent, inner.block):  # pymunk draws the shapes' cached world coordinates
        inner.space.reindex_shapes_for_body(body)
    frame = torch.as_tensor(np.ascontiguousarray(inner._render())).permute(2, 0, 1).contiguous()
    env.close()
    return frame


def pusht_dense_reward(state: torch.Tensor, agent_weight: float = 0.5) -> torch.Tensor:
    """A dense progress reward of Push-T states ``(..., 5)`` -> ``(..., 1)``, zero on the solved pose with the agent on
    the block: ``-(|b - g| / 256 + |angle(b) - angle(g)| / pi) - agent_weight |a - b| / 256`` for the agent ``a``, the
    block ``b`` and the goal ``g`` (:data:`PUSHT_GOAL`; the angle error wrapped to [0, pi]).

    gym-pusht's own reward (coverage) is zero until the block overlaps the goal, which a policy starting from play
    data rarely sees; this is the usual shaping of pushing tasks (the block's distance to its goal, and the pusher's
    to the block, as in robotics' push benchmarks). A reward the learned scorer can regress from the dataset's
    recorded states (``mbdpo-dmo reward kind=dense``); the evaluation still measures gym-pusht's coverage."""
    state = torch.as_tensor(state).float()
    agent, block, angle = state[..., 0:2], state[..., 2:4], state[..., 4:5]
    goal = torch.tensor(PUSHT_GOAL[:2], dtype=state.dtype)
    turn = torch.remainder(angle - PUSHT_GOAL[2] + np.pi, 2 * np.pi) - np.pi
    block_error = (block - goal).norm(dim=-1, keepdim=True) / (WORKSPACE / 2) + turn.abs() / np.pi
    return -block_error - agent_weight * (agent - block).norm(dim=-1, keepdim=True) / (WORKSPACE / 2)


class PushTSuite(Suite):
    """``pusht`` for :func:`~torchrl_mbdpo.envs.make_env`: the state observation (``"state"`` becomes the flat
    ``"observation"``), success from gym-pusht's test, terminating on success, 300 steps."""

    name = "Push-T"
    install_hint = PUSHT_INSTALL_HINT

    def tasks(self) -> list[str]:
        return ["pusht"]

    def task_spec(self, task: str) -> TaskSpec:
        if task not in self.tasks():
            raise self.unknown(task)
        return TaskSpec(task, PUSHT_EPISODE_LENGTH, action_repeat=1, episodic=True, reports_success=True)

    def make(self, task: str, *, seed: int, device="cpu"):
        if task not in self.tasks():
            raise self.unknown(task)
        # make_env's suites report ``success`` only: every other observation key becomes part of "observation"
        return _base_env(image_size=96, pixels=False, coverage=False, device=device)


register_suite(PushTSuite())
