"""Building blocks of the TD-MPC2 world model (arXiv 2310.16828 §3.1; official ``MBDPO/common/layers.py``)."""

from __future__ import annotations

import contextlib
import copy

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import nn

__all__ = [
    "eval_mode",
    "reference_kernels",
    "using_reference_kernels",
    "autocast_precision",
    "SimNorm",
    "Mish",
    "NormedLinear",
    "mlp",
    "ShiftAug",
    "PixelEncoder",
    "Ensemble",
    "TaskConditioned",
    "weight_init",
    "zero_last_layer",
]

_REFERENCE = False


@contextlib.contextmanager
def reference_kernels(enabled: bool = True):
    """Run the straightforward formulations (``F.mish``, softmax over the last dim in ``SimNorm``, no
    shared first layer in ``TaskConditioned``): the readable specification that the fast paths are
    tested and benchmarked against."""
    global _REFERENCE
    previous, _REFERENCE = _REFERENCE, enabled
    try:
        yield
    finally:
        _REFERENCE = previous


def using_reference_kernels() -> bool:
    """Whether :func:`reference_kernels` is active (for fast paths outside this module)."""
    return _REFERENCE


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """Temporarily switch ``module`` to eval mode (no dropout), restoring its previous mode after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


PRECISIONS = ("fp32", "bf16")


def autocast_precision(precision: str, device: torch.device | str):
    """Context of the ``precision`` option: ``"fp32"`` (nothing changes) or ``"bf16"`` (``torch.autocast``
    to bfloat16: matmuls in bf16, parameters and optimiser state stay float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    device_type = torch.device(device).type
    if precision == "fp32" and not torch.amp.is_autocast_available(device_type):
        device_type = "cpu"  # a disabled context on a device without autocast (the meta device of the capture tests)
    return torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16")


class SimNorm(nn.Module):
    """Simplicial normalisation: softmax over consecutive groups of ``dim`` features.

    Same result as ``softmax(x.unflatten(-1, (-1, dim)), -1)``; the softmax runs over a transposed view
    because PyTorch's CPU softmax over a last dim of 8 does not vectorise (numbers in the README's benchmarks).
    Below ``FAST_MIN_NUMEL`` elements the plain softmax wins (the two extra copies cost more there).
    """

    FAST_MIN_NUMEL = 1024

    def __init__(self, dim: int = 8):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _REFERENCE or x.numel() < self.FAST_MIN_NUMEL:
            return torch.softmax(x.unflatten(-1, (-1, self.dim)), dim=-1).view(x.shape)
        groups = x.unflatten(-1, (-1, self.dim)).transpose(-1, -2)
        return torch.softmax(groups, dim=-2).transpose(-1, -2).reshape(x.shape)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Mish(nn.Module):
    """``x * tanh(softplus(x))``, as ``nn.Mish``. Without autograd (planning) it is computed as
    ``x - 2x / ((1 + e^x)^2 + 1)``: one exponential instead of three transcendental functions, faster
    on CPU (README, benchmarks), equal within 2e-6. With autograd it is ``F.mish``, whose fused backward beats the
    composite one, and so it is below ``FAST_MIN_NUMEL`` elements, where the five calls of the composite
    cost more than they save (one environment's score-network step). Above ``CHUNK_NUMEL`` elements the
    composite runs on row blocks of that size, written into one output: its four passes then stay in the
    CPU's cache (one pass over a few MB falls off a cliff there, slower than ``F.mish``), with the same values
    bit for bit. No parameters, so checkpoints are unchanged."""

    FAST_MIN_NUMEL = 4096
    CHUNK_NUMEL = 131072

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if _REFERENCE or torch.is_grad_enabled() or x.numel() < self.FAST_MIN_NUMEL:
            return F.mish(x)
        if (
            x.numel() > 2 * self.CHUNK_NUMEL
            and x.device.type == "cpu"
            and x.is_contiguous()
            and not torch.compiler.is_compiling()
            and not torch._C._functorch.is_batchedtensor(x)
        ):
            flat = x.reshape(-1, x.shape[-1])
            out = torch.empty_like(flat)
            rows = max(1, self.CHUNK_NUMEL // x.shape[-1])
            for block, block_out in zip(flat.split(rows), out.split(rows)):
                self._composite(block, block_out)
            return out.view(x.shape)
        return self._composite(x)

    @staticmethod
    def _composite(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        # Clamping at 20 changes nothing in float32: there the result is already x.
        q = x.clamp(max=20.0).exp_().add_(1.0)
        # mul_, not square_: vmap has no rule for it
        if out is None:
            return torch.addcdiv(x, x, q.mul_(q).add_(1.0), value=-2.0)
        return torch.addcdiv(x, x, q.mul_(q).add_(1.0), value=-2.0, out=out)


class NormedLinear(nn.Sequential):
    """Linear -> (Dropout) -> LayerNorm -> activation (Mish by default)."""

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0, act: nn.Module | None = None):
        layers = [nn.Linear(in_features, out_features)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers += [nn.LayerNorm(out_features), act if act is not None else Mish()]
        super().__init__(*layers)


def mlp(in_dim: int, hidden: list[int], out_dim: int, act: nn.Module | None = None, dropout: float = 0.0) -> nn.Sequential:
    """TD-MPC2's MLP: NormedLinear hidden layers (dropout on the first only), then a plain Linear,
    or a NormedLinear with activation ``act`` (e.g. SimNorm) when ``act`` is given."""
    dims = [in_dim] + list(hidden)
    layers = [NormedLinear(dims[i], dims[i + 1], dropout=dropout * (i == 0)) for i in range(len(dims) - 1)]
    layers.append(NormedLinear(dims[-1], out_dim, act=act) if act is not None else nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


class ShiftAug(nn.Module):
    """Random shift augmentation (DrQ, as TD-MPC2): pad ``pad`` pixels by replication, then crop each
    image back to its size at a random integer offset. Applied at training *and* inference, as the
    official code."""

    def __init__(self, pad: int = 3):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        padded = F.pad(x, (self.pad,) * 4, mode="replicate")
        dy, dx = torch.randint(0, 2 * self.pad + 1, (2, n, 1), device=x.device)
        rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]  # (n, 1, h, 1)
        cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]  # (n, 1, 1, w)
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        channels = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        return padded[batch, channels, rows, cols]


class PixelEncoder(nn.Module):
    """TD-MPC2's image encoder: uint8 ``(*B, C, 64, 64)`` -> ShiftAug -> ``/255 - 0.5`` -> 4 convs (32
    channels, kernels 7/5/3/3, strides 2/2/2/1, ReLU) -> flatten (512) -> SimNorm. The official code
    requires ``latent_dim == 512``; other latent sizes get a NormedLinear projection with SimNorm."""

    def __init__(self, in_channels: int, latent_dim: int, simnorm_dim: int = 8, channels: int = 32, image_size: int = 64):
        super().__init__()
        if image_size != 64:
            raise ValueError(f"PixelEncoder expects 64x64 images, got {image_size}x{image_size}")
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, channels, 7, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 5, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=2),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, stride=1),
            nn.Flatten(),
        )
        conv_out = channels * 4 * 4
        self.head = SimNorm(simnorm_dim) if conv_out == latent_dim else NormedLinear(conv_out, latent_dim, act=SimNorm(simnorm_dim))
        self.shift = ShiftAug()

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        images = obs.reshape(-1, *obs.shape[-3:]).float()
        z = self.head(self.convs(self.shift(images) / 255.0 - 0.5))
        return z.reshape(*obs.shape[:-3], -1)


class Ensemble(nn.Module):
    """Vectorised ensemble: the members' parameters are stacked in one ``TensorDictParams`` and called
    through ``torch.vmap`` (each member draws its own dropout mask), never a Python loop over heads.

    ``forward(*inputs, params=None)`` returns ``(num_members, *batch, out)``. Passing ``params``
    (same layout as ``self.params``, e.g. target or detached copies, or a selection of heads) evaluates
    those weights instead.

    The members are called as ``torch.func.functional_call`` of a weightless skeleton (meta tensors) on a
    flat ``{name: stacked tensor}`` dict read off ``params``: the call traces as one graph under
    ``torch.compile`` (``TensorDict.to_module`` inside ``vmap`` does not), and the storage (one
    ``TensorDictParams``, as TorchRL's ``TdMpc2QEnsemble``, updated in place by ``SoftUpdate``) is unchanged.
    """

    def __init__(self, modules: list[nn.Module]):
        super().__init__()
        self.params = TensorDict.from_modules(*modules, as_module=True)
        with self.params[0].data.to("meta").to_module(modules[0]):
            skeleton = copy.deepcopy(modules[0])
        # Kept out of the module tree: it only provides the call structure (meta tensors, no state).
        self.__dict__["_skeleton"] = skeleton
        # (key in ``params``, name in ``skeleton.named_parameters()``) of every stacked tensor.
        self._names = tuple(
            (key, key if isinstance(key, str) else ".".join(key)) for key in self.params.keys(include_nested=True, leaves_only=True)
        )
        self.num_members = len(modules)
        self._repr = str(modules[0])

    def flat_params(self, params: TensorDict | None = None) -> dict[str, torch.Tensor]:
        """``{dotted name: stacked tensor}`` of ``params`` (default: the online weights)."""
        params = self.params if params is None else params
        return {name: params.get(key) for key, name in self._names}

    def _call(self, flat, *inputs):
        return torch.func.functional_call(self._skeleton, flat, inputs)

    def forward(self, *inputs: torch.Tensor, params: TensorDict | dict | None = None) -> torch.Tensor:
        flat = params if isinstance(params, dict) else self.flat_params(params)
        in_dims = (0,) + (None,) * len(inputs)
        return torch.vmap(self._call, in_dims, randomness="different")(flat, *inputs)

    def train(self, mode: bool = True):
        super().train(mode)
        self._skeleton.train(mode)
        return self

    def extra_repr(self) -> str:
        return f"members={self.num_members}, member={self._repr}"


class TaskConditioned(nn.Module):
    """Concatenates its inputs (plus the task embedding, when multi-task) and applies ``net``.

    Called as ``module(*inputs)`` in single-task mode and ``module(*inputs, task)`` in multi-task mode,
    so it maps directly onto a ``TensorDictModule`` whose ``in_keys`` end with ``"task"``.

    Shared latent: with ``module(z, a)`` where ``z`` is ``(*B, L)`` and ``a`` is ``(*B, N, A)`` (``N``
    candidates per latent, as in the planner's first step), the result equals that of ``z`` expanded to
    ``(*B, N, L)``, but ``z``'s share of the first layer is computed once per latent, not per candidate.
    """

    def __init__(self, net: nn.Module, task_emb: nn.Embedding | None = None):
        super().__init__()
        self.net = net
        self.__dict__["task_emb"] = task_emb  # shared, owned by the world model

    def forward(self, *inputs: torch.Tensor, **kwargs) -> torch.Tensor:
        inputs = list(inputs)
        if self.task_emb is not None:
            task = inputs.pop()
            if task.ndim and task.shape[-1] == 1:  # a trailing singleton dim, as stored in TensorDicts
                task = task.squeeze(-1)
            emb = self.task_emb(task.long())
            inputs.append(emb.expand(*inputs[0].shape[:-1], emb.shape[-1]))
        if len(inputs) > 1 and inputs[0].ndim == inputs[1].ndim - 1:
            if not _REFERENCE and isinstance(self.net, nn.Sequential) and isinstance(self.net[0], NormedLinear):
                return self._forward_shared_first(inputs)
            inputs = [x.unsqueeze(-2).expand(*inputs[1].shape[:-1], -1) if x.ndim < inputs[1].ndim else x for x in inputs]
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=-1)
        return self.net(x, **kwargs)

    def _forward_shared_first(self, inputs):
        # Linear(cat(z, a, e)) = W_z z + W_a a + W_e e + b: the terms of the shared inputs (every one
        # but ``a``) are computed per latent and broadcast over the N candidates.
        first_block = list(self.net[0])
        first = first_block[0]
        columns = list(first.weight.split([x.shape[-1] for x in inputs], dim=1))
        w_varying = columns.pop(1)
        shared = [x for i, x in enumerate(inputs) if i != 1]
        x, w_shared = (shared[0], columns[0]) if len(shared) == 1 else (torch.cat(shared, -1), torch.cat(columns, 1))
        h = F.linear(x, w_shared, first.bias).unsqueeze(-2) + F.linear(inputs[1], w_varying)
        for layer in first_block[1:] + list(self.net)[1:]:
            h = layer(h)
        return h


def weight_init(m: nn.Module) -> None:
    """TD-MPC2 init: truncated normal (std 0.02) weights, zero biases, embeddings ~ U(-0.02, 0.02)."""
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Embedding):
        nn.init.uniform_(m.weight, -0.02, 0.02)


def zero_last_layer(net: nn.Sequential) -> None:
    """Zero the output weights so a head starts by predicting a uniform distribution / zero logit."""
    last = net[-1]
    last = last[0] if isinstance(last, nn.Sequential) else last
    nn.init.zeros_(last.weight)
