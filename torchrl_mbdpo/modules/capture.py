"""Checks that a piece of code can be captured in a CUDA graph, runnable without a GPU.

A CUDA graph replays kernels; it cannot replay a host synchronisation (``.item()``, ``bool(tensor)``, a
Python ``if`` on a tensor, ``.tolist()``, a boolean-mask index, ``nonzero``, ``torch.multinomial``'s input
check) nor a copy of host data made on the fly (``torch.tensor([...], device="cuda")``, a CPU tensor mixed
into GPU math, a non-capturable optimiser's CPU step counter). :class:`CaptureAudit` is a
``TorchDispatchMode`` that sees every ATen operation a piece of code runs and fails on the first one that
would break a capture: an operation that reads a value on the host, or one that reads or creates a tensor
on another device than the one expected. Run the code on the ``meta`` device (tensors without storage,
on any machine) inside it and capture-safety is proven without a GPU; on a GPU it checks the real thing.
"""

from __future__ import annotations

import traceback

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["CaptureAudit", "CaptureError", "HOST_SYNC_OPS"]

_aten = torch.ops.aten

# Operations whose result depends on tensor *values* read on the host (or whose output shape does).
HOST_SYNC_OPS = frozenset(
    op
    for op in (
        _aten._local_scalar_dense,  # .item(), bool(), float(), int(), .tolist(), a Python if on a tensor
        _aten.is_nonzero,
        _aten.equal,
        _aten.nonzero,  # boolean-mask indexing, torch.where(cond) with one argument
        _aten.nonzero_static if hasattr(_aten, "nonzero_static") else None,
        _aten.masked_select,
        _aten.multinomial,  # its CUDA kernel checks the distribution on the host (an .item())
        _aten.unique_consecutive,
        _aten._unique2,
        _aten.unique_dim,
        _aten.repeat_interleave,  # the Tensor-repeats overloads: the output size is read on the host
    )
    if op is not None
)
# ``nonzero_static`` has a fixed output size: it is capture-safe.
HOST_SYNC_OPS = HOST_SYNC_OPS - {getattr(_aten, "nonzero_static", None)}


# Indexing ops whose boolean-mask indices are turned into positions (a nonzero) inside the kernel.
_MASK_INDEXING = frozenset((_aten.index, _aten.index_put, _aten.index_put_, _aten._index_put_impl_))


class CaptureError(RuntimeError):
    """An operation that would break a CUDA-graph capture (a host sync, or a tensor on another device)."""


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _user_frames(limit: int = 4) -> str:
    frames = [f for f in traceback.extract_stack()[:-3] if "torchrl_mbdpo" in f.filename or "/test" in f.filename]
    return "".join(traceback.format_list(frames[-limit:]))


class CaptureAudit(TorchDispatchMode):
    """Fail (or record) every operation that would break a CUDA-graph capture of the code run inside.

    Args:
        device: the device every tensor must live on (``"meta"`` for a run without a GPU, ``"cuda"`` on one).
        strict: raise :class:`CaptureError` at the first offence (default); ``False`` records them all in
            :attr:`offences` (a list of strings) and lets the code run on.

    ``repeat_interleave`` with an integer ``repeats`` is allowed (it dispatches to an expand, no sync); only its
    tensor-repeats form reaches the dispatcher as ``repeat_interleave``.
    """

    def __init__(self, device: str | torch.device = "meta", strict: bool = True):
        super().__init__()
        self.device = torch.device(device)
        self.strict = strict
        self.offences: list[str] = []
        self.ops = 0

    def _offend(self, message: str) -> None:
        message = f"{message}\n{_user_frames()}"
        self.offences.append(message)
        if self.strict:
            raise CaptureError(message)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.ops += 1
        if func.overloadpacket in HOST_SYNC_OPS:
            self._offend(f"host synchronisation: {func}")
        if func.overloadpacket in _MASK_INDEXING and len(args) > 1:
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in tree_leaves(args[1])):
                self._offend(f"host synchronisation: {func} with a boolean mask (its size is read on the host)")
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, torch.Tensor) and not _same_device(t.device, self.device):
                self._offend(f"{func} reads a tensor on {t.device} (expected {self.device}), shape {tuple(t.shape)}")
        target = kwargs.get("device")
        if isinstance(target, torch.device) and not _same_device(target, self.device):
            self._offend(f"{func} creates a tensor on {target} (expected {self.device})")
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and not _same_device(t.device, self.device):
                self._offend(f"{func} creates a tensor on {t.device} (expected {self.device}), shape {tuple(t.shape)}")
        return out
