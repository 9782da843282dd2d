"""DMO: first-order policy optimisation through coupled global and local world models (Amigo et al., "Coupled
Local and Global World Models for Efficient First Order RL" and "First Order Model-Based RL through Decoupled
Backpropagation"), in one package. The MBDPO core imports nothing from here; this package builds on the core's
world model, envs, run lifecycle and config mechanism.

The parts, from the equations up:

- :mod:`.functional`: DMO's equations (the gradient swap, SAPO's actor objective, soft TD(lambda), the
  temperature loss; EDM / DIAMOND and the Bradley-Terry loss of the pixel world model);
- :mod:`.decoupled`: decoupled backpropagation, the global model's forward pass with the local latent model's
  Jacobians (``decoupled_rollout``, ``EnvGlobalModel``);
- :mod:`.loss`: ``DMOLoss``, the TorchRL ``LossModule`` (actor, critic, temperature, local model);
- :mod:`.learned_model_env`: a learned observation-space MLP as a batched TorchRL env (``forward_model=learned``);
- :mod:`.trainer`: ``mbdpo-dmo train``, DMO-SAPO on a task with the simulator (or that MLP) as the global model;
- :mod:`.config`: every ``mbdpo-dmo`` command's settings; :mod:`.commands`: what each command does.

Policy learning inside a learned pixel world model of Push-T, with no simulator in the loop (the DMO paper's
setting):

- :mod:`.play_data`: a play dataset of image episodes of the real Push-T env (random and noisy scripted
  pushing), written into a TorchRL memory-mapped storage on disk, and its loader;
- :mod:`.diffusion`: the global world model, a DIAMOND-style EDM diffusion model of the next frame given the
  last ``k`` frames and actions, on a small U-Net (diffusers' ``UNet2DModel``);
- :mod:`.diffusion_env`: that model as a batched TorchRL model-based env (``ModelBasedEnvBase``);
- :mod:`.world_model_training`: its offline training (``mbdpo-dmo world_model``): progress, held-out loss
  curve, checkpoints and resume, a picture of real vs predicted frames;
- :mod:`.open_loop`: its held-out open-loop errors at 10 and 20 steps (changed pixels, agent and block positions
  decoded from the frames), each against copying the first frame;
- :mod:`.reward`: the model env's reward, a Bradley-Terry contrastive energy ``f(o_t | o_start, o_goal)``
  learned from the frames alone, or (ablation) the real env's reward regressed from frames (``mbdpo-dmo reward``);
- :mod:`.offline_run`: what those two offline trainings share (checkpoints, resume, signals, loss curve);
- :mod:`.policy_run`: what the two policy trainings below share (their inputs, evaluation on the real env,
  checkpoints, resume, signals, the loop of iterations);
- :mod:`.policy_training`: DMO-SAPO inside the world model (``mbdpo-dmo policy``): forward through the diffusion
  env, gradients from the local pixel latent model (``forward=local``: the "No Diffusion" ablation), evaluated
  on the real Push-T env;
- :mod:`.ppo`: the PPO baseline (``mbdpo-dmo ppo``: TorchRL's ``ClipPPOLoss`` + ``GAE`` on image observations,
  collected by a TorchRL ``Collector`` in the same diffusion env);
- :mod:`.compare`: ``mbdpo-dmo compare``: DMO, No Diffusion and PPO over seeds, a CSV and a plot of the real-env
  success rate and final coverage against world-model samples and wall time.

The same pipeline over Push-T's *state* (``obs=state``; the setting a CPU affords, the pixel one being the GPU-scale
setting): :mod:`.state_model` (the state features, the EDM next-state world model, the state reward network, the goal
state); every other piece above (data, env, reward training, DMO, No Diffusion, PPO, comparison) takes either.

Submodules are imported on use: importing this package does not import diffusers or gym-pusht.
"""

__all__ = [
    "functional",
    "decoupled",
    "loss",
    "learned_model_env",
    "trainer",
    "config",
    "commands",
    "play_data",
    "diffusion",
    "state_model",
    "diffusion_env",
    "world_model_training",
    "open_loop",
    "reward",
    "offline_run",
    "policy_run",
    "policy_training",
    "ppo",
    "compare",
]
