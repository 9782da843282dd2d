"""ManiSkill2's ``LiftCube-v0`` rebuilt on ManiSkill3's ``PickCube-v1`` (ManiSkill3 has no lift task for a cube).

Imported only when a ManiSkill env is built: it imports ``mani_skill`` and registers ``LIFT_CUBE_ID``
with ManiSkill's registry.

ManiSkill2 defined LiftCube as PickCube whose goal is 0.2 m straight above the cube's initial position,
successful once the cube is at least 0.2 m above its resting height (whatever its x-y position) and
the robot is static. This subclass does the same on ManiSkill3: the cube is spawned as in
PickCube-v1, the goal is moved above it, and ``evaluate`` replaces "cube within 2.5 cm of the goal"
by "cube lifted by 0.2 m". The dense reward stays PickCube-v1's (reach, grasp, move towards the goal,
stay static, 5 on success), which with the goal above the cube rewards lifting it.
"""

import torch
from mani_skill.envs.tasks.tabletop.pick_cube import PickCubeEnv
from mani_skill.utils.registration import register_env
from mani_skill.utils.structs.pose import Pose

LIFT_CUBE_ID = "MBDPOLiftCube-v1"
LIFT_HEIGHT = 0.2  # metres above the resting cube, as ManiSkill2's LiftCube-v0 goal_height


@register_env(LIFT_CUBE_ID, max_episode_steps=50)
class LiftCubeEnv(PickCubeEnv):
    """Grasp the red cube and lift it 0.2 m (the green goal marks the height) with the Panda robot."""

    def _initialize_episode(self, env_idx: torch.Tensor, options: dict):
        super()._initialize_episode(env_idx, options)
        lift = torch.tensor([0.0, 0.0, LIFT_HEIGHT], device=self.device)
        self.goal_site.set_pose(Pose.create_from_pq(self.cube.pose.p[env_idx] + lift))

    def evaluate(self):
        info = super().evaluate()
        is_obj_lifted = self.cube.pose.p[:, 2] >= self.cube_half_size + LIFT_HEIGHT
        info["is_obj_placed"] = is_obj_lifted  # the dense reward's "static at the goal" term reads this key
        info["success"] = is_obj_lifted & info["is_robot_static"]
        return info
