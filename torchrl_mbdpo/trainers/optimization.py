"""The optimisation step of MBDPO and TD-MPC2 training, beside the trainers that run it (as TorchRL keeps its
``TdMpc2OptimizationStepper`` in its trainers package, and its losses hold losses only).

- :func:`make_optimizers`: the official optimisers (model and policy prior);
- :class:`UpdateStep` / :func:`update`: one official update (model step, policy-prior step, Polyak target update)
  with the non-finite guard; :class:`CompiledUpdate`: the same, compiled (and CUDA-graph captured);
- :class:`MBDPOOptimizationStepper`: that update as a ``torchrl.trainers.OptimizationStepper``, with the
  constructor of TorchRL's ``TdMpc2OptimizationStepper``.
"""

from __future__ import annotations

import inspect

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import SoftUpdate
from torchrl.trainers import OptimizationStepper

from ..modules.compile import CompileOptions, compiled, cuda_graph
from ..modules.layers import autocast_precision
from ..objectives.mbdpo import MBDPOLoss

__all__ = ["make_optimizers", "UpdateStep", "CompiledUpdate", "update", "MBDPOOptimizationStepper"]


def make_optimizers(
    loss: MBDPOLoss,
    lr: float = 3e-4,
    enc_lr_scale: float = 0.3,
    capturable: bool = False,
    actor_eps: float = 1e-5,
    weight_decay: float = 0.0,
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """The official optimisers (TD-MPC2's, arXiv 2310.16828 §4; the official ``tdmpc2.py`` agent).

    ``model_optim``: Adam over every model parameter except the policy prior's: the encoder at
    ``lr * enc_lr_scale``, the rest (dynamics, reward, termination, F, score net, Qs, task embedding)
    at ``lr``. ``pi_optim``: ``Adam(eps=actor_eps)`` over the policy prior. ``weight_decay`` and
    ``capturable`` as TorchRL's TD-MPC2 trainer factory offers them (both off in the official code).
    """
    model = loss.latent_model
    encoder = list(model.encoder.parameters())
    policy = list(model.policy.parameters())
    excluded = {id(p) for p in encoder + policy}
    rest = [p for p in model.parameters() if id(p) not in excluded]
    model_optim = torch.optim.Adam(
        [{"params": encoder, "lr": lr * enc_lr_scale}, {"params": rest}], lr=lr, weight_decay=weight_decay, capturable=capturable
    )
    pi_optim = torch.optim.Adam(policy, lr=lr, eps=actor_eps, weight_decay=weight_decay, capturable=capturable)
    return model_optim, pi_optim


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


_ZERO_STATE_OPTIMIZERS = (torch.optim.Adam, torch.optim.AdamW)


def _init_zero_state(optimizer: torch.optim.Optimizer) -> bool:
    """Create the missing state of an Adam/AdamW optimiser as its first ``step`` would (zero moments, step 0: the
    same numbers as no state at all), so that a guarded step can snapshot and restore it. Returns False for
    an optimiser whose state is missing and not known to start at zero (the caller then takes a host-read branch)."""
    missing = [p for p in _optimizer_params(optimizer) if not optimizer.state.get(p)]
    if not missing:
        return True
    if type(optimizer) not in _ZERO_STATE_OPTIMIZERS:
        return False
    for group in optimizer.param_groups:
        on_device = group.get("capturable", False) or group.get("fused", False)
        for p in group["params"]:
            if optimizer.state.get(p):
                continue
            state = optimizer.state[p]
            # As torch's Adam._init_group: a float32 step, on the parameter's device when capturable or fused.
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu")
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            if group.get("amsgrad", False):
                state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
    return True


def _state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Every tensor an optimiser step writes: the parameters and their state."""
    params = _optimizer_params(optimizer)
    return params + [v for p in params for v in optimizer.state.get(p, {}).values() if isinstance(v, torch.Tensor)]


def _optimizer_step(optimizer: torch.optim.Optimizer) -> None:
    """``optimizer.step()``; under ``torch.compile``, the undecorated step under ``no_grad``: torch's wrapper
    calls ``torch._dynamo.graph_break()`` first (to keep AOTAutograd off a training graph, which this no-grad
    piece is not), and the compiled update must be one graph."""
    if torch.compiler.is_compiling():
        with torch.no_grad():
            inspect.unwrap(type(optimizer).step)(optimizer)
    else:
        optimizer.step()


def _keep_where(ok: torch.Tensor, tensors: list[torch.Tensor], saved: list[torch.Tensor]) -> None:
    """``t <- where(ok, t, saved)`` for every tensor, in place: a skipped step without a host read."""
    with torch.no_grad():
        for t, old in zip(tensors, saved):
            t.copy_(torch.where(ok, t, old))


def _target_tensors(loss: MBDPOLoss, target_updater) -> list[torch.Tensor]:
    targets = getattr(target_updater, "_targets", None)
    source = targets if isinstance(targets, TensorDictBase) else loss.target_qvalue_params
    return [t.data if isinstance(t, torch.nn.Parameter) else t for t in source.values(include_nested=True, leaves_only=True)]


class UpdateStep:
    """One official update step (spec §2.1 end, §2.4), the body of :func:`update`, cut where the two backward
    passes run: ``model_forward`` -> backward -> ``model_step`` -> ``actor_forward`` -> backward -> ``actor_step``.
    Each piece between two backward passes runs with no host synchronisation when ``sync_free`` (so that
    :class:`~torchrl_mbdpo.objectives.CompiledUpdate` compiles each as one graph and a CUDA graph can capture
    the whole step).

    The non-finite guard: a non-finite loss or gradient norm skips the step. With ``sync_free=False`` (the
    default on CPU, where reading a flag costs nothing, and with non-capturable optimisers, whose step counters
    live on the host anyway) a Python ``if`` on the flag skips the optimiser step, as before; with
    ``sync_free=True`` (default off the CPU with capturable optimisers) the step runs and ``torch.where`` puts back the
    previous parameters, optimiser moments and step counts, target weights and running statistics (the
    values are the branch's, bit for bit; only the flag ``nonfinite_skipped`` says whether it skipped, as a
    tensor that nothing here reads).
    """

    def __init__(
        self,
        loss: MBDPOLoss,
        model_optim: torch.optim.Optimizer,
        pi_optim: torch.optim.Optimizer,
        target_updater=None,
        grad_clip_norm: float = 20.0,
        precision: str = "fp32",
        grad_sync=None,
        sync_free: bool | None = None,
    ):
        autocast_precision(precision, "cpu")  # validates
        self.loss, self.model_optim, self.pi_optim, self.target_updater = loss, model_optim, pi_optim, target_updater
        self.grad_clip_norm, self.precision, self.grad_sync, self.sync_free = float(grad_clip_norm), precision, grad_sync, sync_free
        self.model_params, self.pi_params = _optimizer_params(model_optim), _optimizer_params(pi_optim)
        # The four pieces run between the two backward passes (CompiledUpdate swaps in compiled ones).
        self.pieces = self.eager_pieces = dict(
            model_forward=self.model_forward, model_step=self.model_step, actor_forward=self.actor_forward, actor_step=self.actor_step
        )

    # ------------------------------------------------------------------ the pieces
    def running_stats(self) -> list[torch.Tensor]:
        return [self.loss.energy_norm.mean, self.loss.energy_norm.std, self.loss.scale.value]

    def model_forward(self, batch: TensorDictBase, device: torch.device):
        """Snapshot of the running statistics, then the world-model loss: ``(loss, metadata as a dict, saved_stats)``."""
        saved_stats = [b.clone() for b in self.running_stats()]
        with autocast_precision(self.precision, device):
            model_loss, metadata = self.loss.model_loss(batch)
        return model_loss, dict(metadata.items()), saved_stats

    def _guarded_step(self, optimizer, params, loss_value, ok, sync_free):
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip_norm)
        ok = ok & torch.isfinite(loss_value.detach()) & torch.isfinite(grad_norm)
        if sync_free:
            tensors = _state_tensors(optimizer)
            saved = [t.detach().clone() for t in tensors]
            _optimizer_step(optimizer)
            _keep_where(ok, tensors, saved)
        elif bool(ok):
            optimizer.step()
        return grad_norm, ok

    def model_step(self, model_loss: torch.Tensor, sync_free: bool):
        """Clip, check, step the model optimiser (skipped on a non-finite loss or norm): ``(grad_norm, ok)``."""
        ok = torch.ones((), dtype=torch.bool, device=model_loss.device)
        return self._guarded_step(self.model_optim, self.model_params, model_loss, ok, sync_free)

    def actor_forward(self, metadata: dict, device: torch.device):
        with autocast_precision(self.precision, device):
            # After the model step, as the official code: Q is the updated one.
            return self.loss.actor_loss_from_latents(metadata["actor_latents"], metadata.get("task", None))

    def actor_step(self, actor_loss: torch.Tensor, model_ok: torch.Tensor, saved_stats, sync_free: bool):
        """Policy step (skipped unless the model step and this one are finite), the target update (skipped with
        the model step) and the restore of the running statistics after a skip: ``(grad_norm, ok)``."""
        grad_norm, ok = self._guarded_step(self.pi_optim, self.pi_params, actor_loss, model_ok, sync_free)
        if self.target_updater is not None:
            if sync_free:
                targets = _target_tensors(self.loss, self.target_updater)
                saved = [t.clone() for t in targets]
                self.target_updater.step()
                _keep_where(model_ok, targets, saved)
            elif bool(model_ok):
                self.target_updater.step()
        if sync_free:
            _keep_where(ok, self.running_stats(), saved_stats)
        elif not bool(ok):
            with torch.no_grad():
                for buffer, old in zip(self.running_stats(), saved_stats):
                    buffer.copy_(old)
        return grad_norm, ok

    @staticmethod
    def metrics(loss: MBDPOLoss, model_loss, model_metadata, actor_loss, actor_metadata, model_grad_norm, actor_grad_norm, ok):
        model_metadata = TensorDict(model_metadata, batch_size=[])
        info = model_metadata.exclude("actor_latents", "task", *MBDPOLoss._COEFS).update(loss.weighted_terms(model_metadata))
        info.update(dict(actor_metadata.items()))
        info.update(
            loss_model=model_loss,
            loss_actor=actor_loss,
            model_grad_norm=model_grad_norm,
            actor_grad_norm=actor_grad_norm,
            nonfinite_skipped=(~ok).float(),
        )
        return info.detach()

    # ------------------------------------------------------------------ the step
    def _state_on_device(self) -> bool:
        """Whether the optimisers keep their step counters on the parameters' device (capturable or fused Adam):
        otherwise a sync-free restore copies device values into host tensors, a sync for every parameter."""
        return all(g.get("capturable", False) or g.get("fused", False) for o in (self.model_optim, self.pi_optim) for g in o.param_groups)

    def resolve_sync_free(self, device: torch.device) -> bool:
        # Default: sync-free off the CPU where the optimiser state lives on the device; else one host read per step.
        sync_free = (device.type != "cpu" and self._state_on_device()) if self.sync_free is None else self.sync_free
        if sync_free and not (_init_zero_state(self.model_optim) and _init_zero_state(self.pi_optim)):
            return False  # an optimiser without a known fresh state: this step reads the flag on the host
        return sync_free

    def __call__(self, batch: TensorDictBase) -> TensorDictBase:
        return self.run(batch)

    def run(self, batch: TensorDictBase) -> TensorDictBase:
        model = self.loss.latent_model
        device = _device_of(batch, model)
        sync_free = self.resolve_sync_free(device)
        # The compiled pieces assume a sync-free step; a step that must read its flag runs the eager ones.
        pieces = self.pieces if sync_free else self.eager_pieces
        model.train()
        try:
            model_loss, model_metadata, saved_stats = pieces["model_forward"](batch, device)
            model_loss.backward()
            if self.grad_sync is not None:
                self.grad_sync(self.model_params)
            model_grad_norm, model_ok = pieces["model_step"](model_loss, sync_free)
            self.model_optim.zero_grad(set_to_none=True)  # out of the compiled pieces: Dynamo does not trace it
            actor_loss, actor_metadata = pieces["actor_forward"](model_metadata, device)
            actor_loss.backward()
            if self.grad_sync is not None:
                self.grad_sync(self.pi_params)
            actor_grad_norm, ok = pieces["actor_step"](actor_loss, model_ok, saved_stats, sync_free)
            self.pi_optim.zero_grad(set_to_none=True)
        finally:
            model.eval()
        return self.metrics(self.loss, model_loss, model_metadata, actor_loss, actor_metadata, model_grad_norm, actor_grad_norm, ok)


class CompiledUpdate(UpdateStep):
    """:func:`update` compiled: ``CompiledUpdate(loss, model_optim, pi_optim, target_updater, grad_clip_norm,
    precision, grad_sync, mode=..., backend=..., cudagraphs=...)``, then ``info = step(batch)`` once per update
    (the same numbers as :func:`update` for the same random draws, bf16 included).

    The four pieces of :class:`UpdateStep` between the two backward passes are each compiled with
    ``torch.compile(fullgraph=True)`` (one graph each, no break; the backward passes run AOTAutograd's compiled
    backward graphs), the non-finite guard is the sync-free one, and with ``cudagraphs=True`` (CUDA) the whole
    step (both backward passes and the optimiser steps included) is captured by tensordict's
    ``CudaGraphModule``: build the optimisers with ``make_optimizers(loss, capturable=True)`` for it. The
    returned ``info`` holds tensors on the update's device; ``info["nonfinite_skipped"]`` (1. for a skipped
    step) is not read here. Shapes are static (``dynamic=False``): keep the batch size fixed. Off the CPU, Adam
    optimisers built with ``capturable=False`` are switched to ``capturable=True`` at the first call.

    Keyword Args: see :class:`~torchrl_mbdpo.modules.compile.CompileOptions` (or pass ``options=``).
    """

    def __init__(
        self,
        loss: MBDPOLoss,
        model_optim,
        pi_optim,
        target_updater=None,
        grad_clip_norm: float = 20.0,
        precision: str = "fp32",
        grad_sync=None,
        *,
        options: CompileOptions | None = None,
        **compile_kwargs,
    ):
        super().__init__(loss, model_optim, pi_optim, target_updater, grad_clip_norm, precision, grad_sync, sync_free=True)
        self.options = options if options is not None else CompileOptions(**compile_kwargs)
        if self.options.cudagraphs and grad_sync is not None:
            raise ValueError("cudagraphs=True cannot capture grad_sync (collective communication between processes).")
        self.pieces = {name: compiled(fn, f"update.{name}", self.options) for name, fn in self.eager_pieces.items()}
        self._captured = None

    def __call__(self, batch: TensorDictBase) -> TensorDictBase:
        if not self.options.cudagraphs:
            return self.run(batch)
        if self._captured is None:
            self._captured = cuda_graph(self.run, self.options, tensordict_io=True)
        return self._captured(batch)

    def run(self, batch: TensorDictBase) -> TensorDictBase:
        device = _device_of(batch, self.loss.latent_model)
        if device.type != "cpu" and not self._state_on_device():
            _make_capturable(self.model_optim)
            _make_capturable(self.pi_optim)
        return super().run(batch)


def _make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """Switch an Adam to ``capturable=True`` in place: its step counters move to the parameters' device (the
    same float32 values; a state dict loads into either form)."""
    for group in optimizer.param_groups:
        if group.get("capturable", False) or group.get("fused", False):
            continue
        group["capturable"] = True
        for p in group["params"]:
            step = optimizer.state.get(p, {}).get("step")
            if isinstance(step, torch.Tensor):
                optimizer.state[p]["step"] = step.to(device=p.device, dtype=torch.float32)


def update(
    loss: MBDPOLoss,
    batch: TensorDictBase,
    model_optim: torch.optim.Optimizer,
    pi_optim: torch.optim.Optimizer,
    target_updater=None,
    grad_clip_norm: float = 20.0,
    precision: str = "fp32",
    grad_sync=None,
    sync_free: bool | None = None,
) -> TensorDictBase:
    """One official update step (spec §2.1 end, §2.4): model step, policy step on the detached latents,
    Polyak update of the target Qs (by ``target_updater``, a ``SoftUpdate``; pass ``None`` where a
    trainer hook steps it). The model is in train mode throughout and left in eval mode.
    ``precision="bf16"`` computes the losses under ``torch.autocast`` (bfloat16 matmuls, float32 weights).
    ``grad_sync(params)``, if given, runs after each backward pass, before clipping (data-parallel training
    averages the gradients over processes there).

    A non-finite loss or gradient skips the update: the parameters, optimiser moments, running statistics and
    target network keep their last values. ``sync_free`` (default: True off the CPU with capturable optimisers,
    ``make_optimizers(loss, capturable=True)``) skips it without reading anything on the host (see
    :class:`UpdateStep`); otherwise the flag is read once per optimiser (free on the CPU).

    Returns detached scalars, under TorchRL's ``TdMpc2OptimizationStepper`` names where it has them: every
    weighted ``loss_*`` term, ``loss_model`` (their sum), ``loss_actor``, the metrics, ``model_grad_norm``,
    ``actor_grad_norm`` and ``nonfinite_skipped`` (1. when a non-finite loss or gradient made it skip a step,
    a tensor on the update's device: reading it is the caller's host sync).
    """
    return UpdateStep(loss, model_optim, pi_optim, target_updater, grad_clip_norm, precision, grad_sync, sync_free)(batch)


def _device_of(batch: TensorDictBase, model) -> torch.device:
    """The device the update runs on: the batch's, or, for a TensorDict built without ``device=``, the model's
    (``batch.device`` is then None, and autocast must not fall back to CPU on a GPU run)."""
    if batch.device is not None:
        return batch.device
    return next(model.parameters()).device


class MBDPOOptimizationStepper(OptimizationStepper):
    """One MBDPO update (world-model step, policy-prior step, Polyak target update; :func:`update`), with
    the constructor of TorchRL's ``TdMpc2OptimizationStepper``: ``(loss_module, optimizer_model,
    optimizer_actor, *, target_tau=0.01, zero_grad_set_to_none=True)``, plus ``precision`` (``fp32``/``bf16``)
    and ``grad_sync`` (data-parallel gradient averaging). Gradients are clipped to the trainer's
    ``clip_norm`` (20, the official value). Counts the updates skipped because of a non-finite loss or
    gradient; its metrics are TorchRL's (``loss_model``, ``loss_actor``, ``model_grad_norm``,
    ``actor_grad_norm``, ...) plus MBDPO's terms (``loss_energy``, ``loss_score``, ...)."""

    def __init__(
        self,
        loss_module: MBDPOLoss,
        optimizer_model,
        optimizer_actor,
        *,
        target_tau: float = 0.01,
        zero_grad_set_to_none: bool = True,
        precision: str = "fp32",
        grad_sync=None,
        compile_options=None,
    ):
        if not 0 <= target_tau <= 1:
            raise ValueError(f"target_tau must be in [0, 1], got {target_tau!r}.")
        model_ids = {id(p) for group in optimizer_model.param_groups for p in group["params"]}
        if any(id(p) in model_ids for group in optimizer_actor.param_groups for p in group["params"]):
            raise ValueError("optimizer_model and optimizer_actor must not share parameters.")
        self.loss_module, self.optimizer_model, self.optimizer_actor = loss_module, optimizer_model, optimizer_actor
        self.target_tau, self.precision, self.grad_sync = float(target_tau), precision, grad_sync
        self.target_updater = SoftUpdate(loss_module, tau=target_tau)
        self.compile_options = compile_options  # CompileOptions: the update runs as a CompiledUpdate
        self._compiled = None
        self.update_count = 0
        # Kept as tensors on the update's device and read only when asked (``skipped_in_a_row``), so that a
        # compiled or captured update is not synchronised with the host after every step.
        self._skipped_total = self._in_a_row = None

    @property
    def skipped_total(self) -> int:
        return 0 if self._skipped_total is None else int(self._skipped_total.item())

    @property
    def skipped_in_a_row(self) -> int:
        return 0 if self._in_a_row is None else int(self._in_a_row.item())

    def step(self, trainer, sub_batch):
        clip_norm = getattr(trainer, "clip_norm", None)
        clip_norm = 20.0 if clip_norm is None else clip_norm
        if self.compile_options is not None:
            if self._compiled is None:
                self._compiled = CompiledUpdate(
                    self.loss_module,
                    self.optimizer_model,
                    self.optimizer_actor,
                    self.target_updater,
                    clip_norm,
                    self.precision,
                    self.grad_sync,
                    options=self.compile_options,
                )
            metrics = self._compiled(sub_batch)
        else:
            metrics = update(
                self.loss_module,
                sub_batch,
                self.optimizer_model,
                self.optimizer_actor,
                self.target_updater,
                clip_norm,
                self.precision,
                self.grad_sync,
            )
        self.update_count += 1
        skipped = metrics["nonfinite_skipped"].detach().clone()
        if self._in_a_row is None:
            self._skipped_total, self._in_a_row = torch.zeros_like(skipped), torch.zeros_like(skipped)
        self._skipped_total += skipped
        self._in_a_row = skipped * (self._in_a_row + 1)
        return metrics

    def _model_params(self) -> list:
        return [p for group in self.optimizer_model.param_groups for p in group["params"]]

    def state_dict(self):
        # Gradients left on model parameters by the policy step (multi-task: the task embedding, which the
        # policy loss reaches but the actor optimiser does not hold) join the next model step, as in the
        # official code; a checkpoint keeps them so a resumed run makes that step too.
        leftover = {i: p.grad.clone() for i, p in enumerate(self._model_params()) if p.grad is not None}
        return {
            "update_count": self.update_count,
            "optimizer_model": self.optimizer_model.state_dict(),
            "optimizer_actor": self.optimizer_actor.state_dict(),
            "skipped_total": self.skipped_total,
            "skipped_in_a_row": self.skipped_in_a_row,
            "leftover_grads": leftover,
        }

    def load_state_dict(self, state_dict):
        self.optimizer_model.load_state_dict(state_dict["optimizer_model"])
        self.optimizer_actor.load_state_dict(state_dict["optimizer_actor"])
        leftover = state_dict.get("leftover_grads", {})
        for i, p in enumerate(self._model_params()):
            p.grad = leftover[i].to(p.device).clone() if i in leftover else None
        self.update_count = state_dict.get("update_count", 0)
        device = next(self.loss_module.parameters()).device
        self._skipped_total = torch.tensor(float(state_dict["skipped_total"]), device=device)
        self._in_a_row = torch.tensor(float(state_dict["skipped_in_a_row"]), device=device)
