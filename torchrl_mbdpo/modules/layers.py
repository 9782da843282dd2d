"""Building blocks of the TD-MPC2 world model (spec §1.1)."""
from __future__ import annotations

import contextlib
import copy

import torch
from tensordict import TensorDict
from torch import nn

__all__ = ["eval_mode", "SimNorm", "NormedLinear", "mlp", "Ensemble", "TaskConditioned", "weight_init", "zero_last_layer"]


@contextlib.contextmanager
def eval_mode(module: nn.Module):
    """Temporarily switch ``module`` to eval mode (no dropout), restoring its previous mode after."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class SimNorm(nn.Module):
    """Simplicial normalisation: softmax over consecutive groups of ``dim`` features."""

    def __init__(self, dim: int = 8):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        return torch.softmax(x.unflatten(-1, (-1, self.dim)), dim=-1).view(shape)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class NormedLinear(nn.Sequential):
    """Linear -> (Dropout) -> LayerNorm -> activation (Mish by default)."""

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0, act: nn.Module | None = None):
        layers = [nn.Linear(in_features, out_features)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        layers += [nn.LayerNorm(out_features), act if act is not None else nn.Mish()]
        super().__init__(*layers)


def mlp(in_dim: int, hidden: list[int], out_dim: int, act: nn.Module | None = None, dropout: float = 0.0) -> nn.Sequential:
    """TD-MPC2's MLP: NormedLinear hidden layers (dropout on the first only), then a plain Linear,
    or a NormedLinear with activation ``act`` (e.g. SimNorm) when ``act`` is given."""
    dims = [in_dim] + list(hidden)
    layers = [NormedLinear(dims[i], dims[i + 1], dropout=dropout * (i == 0)) for i in range(len(dims) - 1)]
    layers.append(NormedLinear(dims[-1], out_dim, act=act) if act is not None else nn.Linear(dims[-1], out_dim))
    return nn.Sequential(*layers)


class Ensemble(nn.Module):
    """Vectorised ensemble: the members' parameters are stacked in one ``TensorDictParams`` and called
    through ``torch.vmap`` (each member draws its own dropout mask), never a Python loop over heads.

    ``forward(*inputs, params=None)`` returns ``(num_members, *batch, out)``. Passing ``params``
    (same layout as ``self.params``, e.g. target or detached copies) evaluates those weights instead.
    """

    def __init__(self, modules: list[nn.Module]):
        super().__init__()
        self.params = TensorDict.from_modules(*modules, as_module=True)
        with self.params[0].data.to("meta").to_module(modules[0]):
            skeleton = copy.deepcopy(modules[0])
        # Kept out of the module tree: it only provides the call structure (meta tensors, no state).
        self.__dict__["_skeleton"] = skeleton
        self.num_members = len(modules)
        self._repr = str(modules[0])

    def _call(self, params, *inputs):
        with params.to_module(self._skeleton):
            return self._skeleton(*inputs)

    def forward(self, *inputs: torch.Tensor, params: TensorDict | None = None) -> torch.Tensor:
        params = self.params if params is None else params
        in_dims = (0,) + (None,) * len(inputs)
        return torch.vmap(self._call, in_dims, randomness="different")(params, *inputs)

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
    """

    def __init__(self, net: nn.Module, task_emb: nn.Embedding | None = None):
        super().__init__()
        self.net = net
        self.__dict__["task_emb"] = task_emb  # shared, owned by the world model

    def forward(self, *inputs: torch.Tensor, **kwargs) -> torch.Tensor:
        if self.task_emb is not None:
            *inputs, task = inputs
            if task.ndim and task.shape[-1] == 1:  # a trailing singleton dim, as stored in TensorDicts
                task = task.squeeze(-1)
            emb = self.task_emb(task.long())
            inputs.append(emb.expand(*inputs[0].shape[:-1], emb.shape[-1]))
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=-1)
        return self.net(x, **kwargs)


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
