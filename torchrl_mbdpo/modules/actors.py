"""Planning actors as TorchRL TensorDict policies: ``DiffusionActor`` (MBDPO's model-based diffusion
sampler) and ``MPPIActor`` (TD-MPC2's MPPI), interchangeable on the same world model. ``MBDPOPlanner``
(:mod:`.planners`) is the diffusion sampler on TorchRL's own TD-MPC2 components."""

from __future__ import annotations

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from tensordict.nn.probabilistic import InteractionType, interaction_type
from tensordict.utils import NestedKey
from torchrl.data import Unbounded
from torchrl.envs import TensorDictPrimer

from .compile import CompileOptions, compiled, cuda_graph
from .energy import EnergyNormalizer
from .functional import warm_start_mean
from .layers import autocast_precision, eval_mode
from .mppi import MPPIConfig, mppi_sample
from .planning import PlannerConfig, mc_diffusion_sample, policy_rollout, score_network_sample, world_model_value
from .torchrl_components import next_key

__all__ = ["DiffusionActor", "MPPIActor"]


class _LatentPlanningActor(TensorDictModuleBase):
    """What both planners share: TensorDict plumbing, the warm start carried in the TensorDict, env
    grouping on CPU, precision and exploration. Subclasses implement :meth:`_plan_latents`.

    The warm start lives in the TensorDict, not in the module: the actor reads ``plan_key`` (its previous
    ``(H, A)`` plan per env; a private key, ``_`` first, as TorchRL's ``TdMpc2Planner``) and ``is_init_key``
    (episode start, from ``InitTracker``) and writes ``action_key`` and ``("next", plan_key)``, so it survives
    collector resets and works with ``SerialEnv``/``ParallelEnv``. Build envs with
    ``make_env(..., policy=actor)`` or append :meth:`make_tensordict_primer` and ``InitTracker``.
    Exploration follows TorchRL's interaction type: ``RANDOM`` (collectors' default) explores,
    ``DETERMINISTIC`` (evaluation) does not.
    """

    def __init__(
        self,
        world_model,
        planner,
        discount,
        observation_key,
        max_batch_rows,
        precision,
        *,
        action_key: NestedKey = "action",
        is_init_key: NestedKey = "is_init",
        plan_key: NestedKey = "_mbdpo_plan",
    ):
        super().__init__()
        autocast_precision(precision, "cpu")  # validates
        leaf = plan_key[-1] if isinstance(plan_key, tuple) else plan_key
        if not isinstance(leaf, str) or not leaf.startswith("_"):
            raise ValueError(
                f"The warm-start key must be private (its last part starts with '_'), got {plan_key!r}: "
                "a public key would be stored in replay buffers with every step."
            )
        self.precision = precision
        self.max_batch_rows = max_batch_rows
        # The tensor-level model planned with (an MBDPOWorldModel, or TorchRLComponents in MBDPOPlanner).
        self.latent_model = world_model
        self.planner = planner
        self.register_buffer("discount", torch.as_tensor(discount, dtype=torch.float32))
        self.observation_key, self.action_key, self.is_init_key, self.plan_key = observation_key, action_key, is_init_key, plan_key
        self.multitask = world_model.cfg.multitask
        self.in_keys = [observation_key, plan_key, is_init_key] + (["task"] if self.multitask else [])
        self.out_keys = [action_key, next_key(plan_key)]
        self.compile_options: CompileOptions | None = None
        self._compiled: dict = {}

    def compile_planner(
        self,
        mode: str | None = None,
        backend: str = "inductor",
        *,
        cudagraphs: bool = False,
        options: CompileOptions | None = None,
        **kwargs,
    ):
        """Plan through ``torch.compile`` from now on (returns ``self``): ``actor.compile_planner()`` (Inductor),
        ``actor.compile_planner("max-autotune-no-cudagraphs")`` (the official code's mode),
        ``actor.compile_planner("reduce-overhead")`` (CUDA graphs through Inductor's cudagraph trees) or
        ``actor.compile_planner(cudagraphs=True)`` (CUDA graphs through tensordict's ``CudaGraphModule``, one
        per env count and exploration flag).

        One group of envs (see :meth:`plan`) is one graph with no break and no host synchronisation: encoder,
        warm start, every denoising (or MPPI) iteration unrolled, exploration noise. Exploring and greedy plans
        are compiled apart (``plan(..., explore=...)``), as is each env count (``dynamic=False``); weight updates
        do not recompile. Same plans as eager for the same random draws (with Inductor, up to its own RNG:
        ``torch._inductor.config.fallback_random = True`` makes the draws eager's). ``compile_report()`` of
        :mod:`torchrl_mbdpo.modules.compile` holds the first call's time. ``actor.compile_options = None`` plans eagerly again.
        """
        if options is None:
            options = CompileOptions(mode=mode, backend=backend, cudagraphs=cudagraphs, **kwargs)
        self.compile_options = options
        self._compiled = {}
        schedule = getattr(self.planner, "schedule", None)
        if schedule is not None:
            schedule()  # cache the schedule's floats now: a cache miss inside the trace would break the graph
        return self

    @property
    def world_model(self):
        return self.latent_model

    @property
    def plan_shape(self) -> tuple[int, int]:
        return (self.planner.horizon, self.latent_model.cfg.action_dim)

    def make_tensordict_primer(self) -> TensorDictPrimer:
        """Primer adding the zero-initialised warm-start entry to an env (found by TorchRL's
        ``get_primers_from_module`` / ``auto_register_policy_transforms``)."""
        return TensorDictPrimer({self.plan_key: Unbounded(self.plan_shape)}, default_value=0.0, expand_specs=True)

    def _rows_per_env(self) -> int:
        return self.planner.num_samples

    def _discount_of(self, task):
        return self.discount if self.discount.ndim == 0 else self.discount[task.long()].reshape(-1, 1, 1)

    @torch.no_grad()
    def plan(self, obs: torch.Tensor, prev_plan: torch.Tensor, is_init: torch.Tensor, task=None, explore: bool = True):
        """Plan for a flat batch: ``obs (B, D)``, ``prev_plan (B, H, A)``, ``is_init (B,)`` ->
        ``(action (B, A), plan (B, H, A))``. On CPU, large env batches are planned in groups of
        ``max_batch_rows // rows_per_env`` envs (default 2048 rows, i.e. 4 envs of 512 samples: smaller pieces
        run faster per env than one large batch, see the README's benchmarks); accelerators get one batch."""
        max_rows = self.max_batch_rows or (2048 if obs.device.type == "cpu" else 1 << 62)
        group = max(1, max_rows // self._rows_per_env())
        if obs.shape[0] > group:
            parts = [
                self.plan(
                    obs[i : i + group],
                    prev_plan[i : i + group],
                    is_init[i : i + group],
                    None if task is None else task[i : i + group],
                    explore,
                )
                for i in range(0, obs.shape[0], group)
            ]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        if self.compile_options is not None:
            return self._plan_compiled(obs, prev_plan, is_init, task, explore)
        return self._plan_group(obs, prev_plan, is_init, task, explore)

    def _plan_group(self, obs, prev_plan, is_init, task, explore: bool):
        """One group of envs, planned at once (the unit that is compiled)."""
        wm = self.latent_model
        with autocast_precision(self.precision, obs.device):
            z0 = wm.encode_obs(obs, task)
            task = None if task is None else task.reshape(-1)
            mean0 = warm_start_mean(prev_plan, is_init)
            action, plan = self._plan_latents(z0, mean0, task, wm.action_mask(task), explore)
        return action.clamp(-1, 1).to(prev_plan.dtype), plan.to(prev_plan.dtype)

    # Two functions, so that the exploring and the greedy planner are two code objects with a compile cache each.
    def _plan_exploring(self, obs, prev_plan, is_init, task=None):
        return self._plan_group(obs, prev_plan, is_init, task, True)

    def _plan_greedy(self, obs, prev_plan, is_init, task=None):
        return self._plan_group(obs, prev_plan, is_init, task, False)

    def _plan_compiled(self, obs, prev_plan, is_init, task, explore: bool):
        options = self.compile_options
        schedule = getattr(self.planner, "schedule", None)
        if schedule is not None:
            schedule()  # the planner config may have changed since compile_planner (a new entry, computed eagerly)
        fn_key = bool(explore)
        fn = self._compiled.get(fn_key)
        if fn is None:
            raw = self._plan_exploring if explore else self._plan_greedy
            fn = self._compiled[fn_key] = compiled(raw, f"{type(self).__name__}.plan(explore={bool(explore)})", options)
        args = (obs, prev_plan, is_init) if task is None else (obs, prev_plan, is_init, task)
        if options.cudagraphs:
            key = (fn_key, tuple(obs.shape), task is None, obs.device)
            captured = self._compiled.get(key)
            if captured is None:
                captured = self._compiled[key] = cuda_graph(fn, options)
            return captured(*args)
        if options.uses_cudagraph_trees:
            torch.compiler.cudagraph_mark_step_begin()
            action, plan = fn(*args)
            return action.clone(), plan.clone()  # cudagraph trees overwrite their outputs at the next replay
        return fn(*args)

    def _plan_latents(self, z0, mean0, task, mask, explore):
        raise NotImplementedError

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        batch_shape = tensordict.batch_size
        flat = tensordict.reshape(-1) if len(batch_shape) != 1 else tensordict
        obs = flat.get(self.observation_key)
        B = obs.shape[0]
        prev_plan = flat.get(self.plan_key, None)
        if prev_plan is None:
            prev_plan = torch.zeros(B, *self.plan_shape, device=obs.device)
        is_init = flat.get(self.is_init_key, None)
        if is_init is None:
            is_init = torch.zeros(B, dtype=torch.bool, device=obs.device)
        task = flat.get("task") if self.multitask else None
        explore = interaction_type() not in (InteractionType.DETERMINISTIC, InteractionType.MODE, InteractionType.MEAN)
        with eval_mode(self.latent_model):
            action, plan = self.plan(obs, prev_plan, is_init, task, explore=explore)
        tensordict.set(self.action_key, action.reshape(*batch_shape, -1))
        tensordict.set(next_key(self.plan_key), plan.reshape(*batch_shape, *self.plan_shape))
        return tensordict


class DiffusionActor(_LatentPlanningActor):
    """Plans one action per environment with MBDPO's model-based diffusion sampler (arXiv 2605.26282 §3).

    Works on any batch of environments at once; ``plan`` carries the previous clean plan ``x0``.
    Exploration (``RANDOM``) adds ``action_noise`` Gaussian noise to the executed action.

    Args:
        world_model: an :class:`~torchrl_mbdpo.modules.MBDPOWorldModel`.
        planner: a :class:`PlannerConfig` (defaults: the official settings).
        discount: the task's discount (float), or a per-task tensor indexed by ``task``.
        energy_norm: the running energy normaliser (by default the world model's own).
        max_batch_rows: candidates rolled out at once on CPU (see :meth:`plan`).
        precision: ``"fp32"`` or ``"bf16"`` (planning under ``torch.autocast``; plans are returned in
            the dtype of the warm-start entry, float32).
        action_key, is_init_key, plan_key: TensorDict keys (defaults ``"action"``, ``"is_init"``,
            ``"_mbdpo_plan"``).
    """

    def __init__(
        self,
        world_model,
        planner: PlannerConfig | None = None,
        discount: float | torch.Tensor = 0.99,
        energy_norm: EnergyNormalizer | None = None,
        observation_key="observation",
        max_batch_rows: int | None = None,
        precision: str = "fp32",
        **keys,
    ):
        planner = planner or PlannerConfig()
        if planner.horizon != world_model.cfg.horizon and planner.score_source == "network":
            raise ValueError(
                f"The score network was built for horizon {world_model.cfg.horizon}; planner.horizon={planner.horizon} does not match."
            )
        super().__init__(world_model, planner, discount, observation_key, max_batch_rows, precision, **keys)
        self.energy_norm = energy_norm if energy_norm is not None else world_model.energy_norm
        planner.schedule()  # computed (on the CPU) and cached now, not inside the first plan

    def _rows_per_env(self) -> int:
        return self.planner.num_samples if self.planner.score_source == "mc" else 1

    def _plan_latents(self, z0, mean0, task, mask, explore):
        wm, cfg = self.latent_model, self.planner
        if cfg.score_source == "network":
            num_taus = len(cfg.schedule()[1])  # the schedule's length: steps, and at least 2
            plan = score_network_sample(mean0, wm.score_fn(z0, num_taus, task), cfg, mask)
        else:
            discount = self._discount_of(task)

            def value_fn(candidates):  # (B, N, H, A) -> (B, N); every candidate of env b starts at z0[b]
                return world_model_value(wm, z0, candidates, task, discount, cfg.energy_eta, self.energy_norm).squeeze(-1)

            def policy_fn(num):
                return policy_rollout(wm, z0, num, cfg.horizon, task)

            plan = mc_diffusion_sample(mean0, value_fn, policy_fn if cfg.num_pi_trajs else None, cfg, mask)
        action = plan[:, 0]
        if explore and cfg.action_noise:
            noise = cfg.action_noise * torch.randn_like(action)
            action = action + (noise if mask is None else noise * mask)
        return action, plan


class MPPIActor(_LatentPlanningActor):
    """TD-MPC2's MPPI planner on the same world model (the baseline MBDPO is compared with).

    Same keys and warm start as :class:`DiffusionActor`, so the two are swapped by changing the class;
    the warm-start entry (``_tdmpc2_prev_mean``, TorchRL's name) carries the previous MPPI *mean*, as TD-MPC2.
    The return has no energy term. Exploration (``RANDOM``) adds noise with the std of the elites at the first step.

    Args:
        world_model: an :class:`~torchrl_mbdpo.modules.MBDPOWorldModel`.
        planner: an :class:`~torchrl_mbdpo.modules.mppi.MPPIConfig` (defaults: TD-MPC2's).
        discount, observation_key, max_batch_rows, precision: as :class:`DiffusionActor`.
    """

    def __init__(
        self,
        world_model,
        planner: MPPIConfig | None = None,
        discount: float | torch.Tensor = 0.99,
        observation_key="observation",
        max_batch_rows: int | None = None,
        precision: str = "fp32",
        *,
        plan_key: NestedKey = "_tdmpc2_prev_mean",
        **keys,
    ):
        super().__init__(
            world_model, planner or MPPIConfig(), discount, observation_key, max_batch_rows, precision, plan_key=plan_key, **keys
        )

    def _plan_latents(self, z0, mean0, task, mask, explore):
        wm, cfg = self.latent_model, self.planner
        discount = self._discount_of(task)

        def value_fn(candidates):
            return world_model_value(wm, z0, candidates, task, discount, 0.0, None).squeeze(-1)

        pi_actions = policy_rollout(wm, z0, cfg.num_pi_trajs, cfg.horizon, task) if cfg.num_pi_trajs else None
        plan, mean, std = mppi_sample(mean0, value_fn, pi_actions, cfg, mask)
        action = plan[:, 0]
        if explore:
            action = action + std[:, 0] * torch.randn_like(action)  # std is already zero on masked dims
        return action, mean
