"""MBDPOTrainer with a multi-process TorchRL collector: the workers act with the weights of the last update."""

import functools

import torch
from torchrl.collectors import MultiSyncCollector
from torchrl.data import LazyTensorStorage, SliceSampler, TensorDictReplayBuffer
from torchrl.envs import ExplorationType, StepCounter

from torchrl_mbdpo import DiffusionActor, MBDPOLoss, MBDPOTrainer, MBDPOWorldModel, PlannerConfig, WorldModelConfig
from torchrl_mbdpo.envs import make_env

H = 3


def _env(seed, primer):
    env = make_env("gym:Pendulum-v1", seed=seed)
    env.append_transform(primer())
    env.append_transform(StepCounter(max_steps=5, step_count_key="short_count"))  # frequent episode starts
    return env


def test_multisync_workers_act_with_the_trained_weights():
    torch.manual_seed(0)
    wm = MBDPOWorldModel(WorldModelConfig.from_size(1, 3, 1, latent_dim=16, mlp_dim=32, enc_dim=32, num_q=2))
    # The score-network planner is deterministic without exploration: at an episode start (zero warm start) a
    # worker's action is a function of its observation and its weights only, so the main process can
    # recompute it (the warm start itself is private and not in the collected data).
    planner = DiffusionActor(wm, PlannerConfig(steps=3, score_source="network"), discount=0.99)
    loss = MBDPOLoss(wm, use_score_network=True, score_num_samples=8, diffusion_steps=3)
    primer = planner.make_tensordict_primer
    collector = MultiSyncCollector(
        [functools.partial(_env, 1, primer), functools.partial(_env, 2, primer)],
        planner,
        frames_per_batch=40,
        total_frames=400,
        init_random_frames=80,
        exploration_type=ExplorationType.DETERMINISTIC,
    )
    buffer = TensorDictReplayBuffer(
        storage=LazyTensorStorage(1000),
        batch_size=16 * H,
        sampler=SliceSampler(slice_len=H, traj_key=("collector", "traj_ids"), truncated_key=None),
    )
    # On CPU the collector shares the policy's memory with its workers; give the learner its own copy, as
    # on a GPU (weights on another device), so the workers see new weights only through UpdateWeights.
    with torch.no_grad():
        for p in list(wm.parameters()) + list(wm.buffers()):
            p.data = p.data.clone()
    trainer = MBDPOTrainer(
        collector=collector, loss_module=loss, planner=planner, replay_buffer=buffer, optim_steps_per_batch=4, progress_bar=False
    )
    initial = {k: v.clone() for k, v in planner.state_dict().items()}
    checked = []

    def check_actions(batch):
        if trainer.collected_frames >= collector.init_random_frames:  # the planner acted (not random actions)
            flat = batch.reshape(-1)
            flat = flat[flat["is_init"].reshape(-1)]
            with torch.no_grad():
                expected, _ = planner.plan(flat["observation"], torch.zeros(len(flat), H, 1), flat["is_init"].reshape(-1), explore=False)
            torch.testing.assert_close(flat["action"], expected, atol=1e-4, rtol=1e-4)
            checked.append(trainer.optimization_stepper.update_count)
        return batch

    trainer.register_op("batch_process", check_actions)
    try:
        trainer.train()
    finally:
        collector.shutdown()
    assert len(checked) >= 5 and checked[-1] > checked[0] > 0  # batches collected after several rounds of updates
    changed = [k for k, v in planner.state_dict().items() if "score_net" in k and not torch.equal(v, initial[k])]
    assert changed  # the weights the workers used moved away from the initial ones
