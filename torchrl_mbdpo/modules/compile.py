"""``torch.compile`` and CUDA-graph plumbing shared by the compiled planner and the compiled update.

:class:`CompileOptions` holds the settings (``TrainConfig.compile_mode`` maps onto ``mode``);
:func:`compiled` wraps a function with ``torch.compile`` and reports how long its first call (tracing and
code generation included) took, once, to the ``torchrl_mbdpo`` logger and to :func:`compile_report`;
:func:`cuda_graph` captures a function with tensordict's ``CudaGraphModule`` (a CUDA graph: the launch cost
of hundreds of small kernels paid once). Off CUDA, ``CudaGraphModule`` runs the function as it is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable

import torch

__all__ = ["CompileOptions", "compiled", "cuda_graph", "compile_report", "COMPILE_MODES"]

logger = logging.getLogger("torchrl_mbdpo")

# torch.compile's modes; "max-autotune-no-cudagraphs" is the official MBDPO code's.
COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")

_REPORT: dict[str, float] = {}


def compile_report() -> dict[str, float]:
    """``{name: seconds}`` of the first call of every compiled function so far (compile time plus one run)."""
    return dict(_REPORT)


@dataclass
class CompileOptions:
    """How the planner and the update are compiled.

    Args:
        mode: ``torch.compile``'s mode (``None``/``"default"``, ``"reduce-overhead"`` for CUDA graphs through
            Inductor's cudagraph trees, ``"max-autotune-no-cudagraphs"`` as the official MBDPO code, ...).
        backend: ``torch.compile``'s backend (``"inductor"``; ``"aot_eager"`` or ``"eager"`` trace only; ``None``: no
            ``torch.compile`` at all, e.g. to capture the eager code with ``cudagraphs=True``).
        fullgraph: fail on a graph break instead of splitting the graph (the hot paths have none).
        dynamic: ``False`` (default) specialises on shapes: one graph per batch size, no symbolic shapes.
        cudagraphs: also capture with tensordict's ``CudaGraphModule`` (CUDA only; static input buffers,
            outputs cloned). ``warmup`` calls run uncaptured first.
    """

    mode: str | None = None
    backend: str = "inductor"
    fullgraph: bool = True
    dynamic: bool = False
    cudagraphs: bool = False
    warmup: int = 2

    def __post_init__(self):
        if self.mode not in COMPILE_MODES:
            raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {self.mode!r}")
        if self.mode == "default":
            self.mode = None
        if self.cudagraphs and self.mode in ("reduce-overhead", "max-autotune"):
            raise ValueError(
                f"cudagraphs=True captures with CudaGraphModule; mode={self.mode!r} would capture a second time "
                "(Inductor's cudagraph trees): use mode=None or 'max-autotune-no-cudagraphs' with it."
            )

    @property
    def uses_cudagraph_trees(self) -> bool:
        return self.mode in ("reduce-overhead", "max-autotune")


class _Timed:
    """Times the first call of ``fn`` (compilation happens there) and reports it once."""

    def __init__(self, fn: Callable, name: str):
        self.fn, self.name, self.seconds = fn, name, None

    def __call__(self, *args, **kwargs):
        if self.seconds is not None:
            return self.fn(*args, **kwargs)
        start = time.perf_counter()
        out = self.fn(*args, **kwargs)
        self.seconds = time.perf_counter() - start
        _REPORT[self.name] = self.seconds
        logger.info("torch.compile: %s compiled and ran in %.1f s", self.name, self.seconds)
        return out


def compiled(fn: Callable, name: str, options: CompileOptions) -> Callable:
    """``torch.compile(fn)`` with ``options``; the first call's duration is reported under ``name``. With
    ``options.backend=None``, ``fn`` itself (not compiled; its first call is still timed)."""
    if options.backend is None:
        return _Timed(fn, name)
    kwargs = dict(backend=options.backend, fullgraph=options.fullgraph, dynamic=options.dynamic)
    if options.mode is not None:
        kwargs["mode"] = options.mode
    return _Timed(torch.compile(fn, **kwargs), name)


def cuda_graph(fn: Callable, options: CompileOptions, tensordict_io: bool = False):
    """``CudaGraphModule(fn)``: ``fn`` takes and returns tensors (or, ``tensordict_io``, a TensorDict)."""
    from tensordict.nn import CudaGraphModule

    if tensordict_io:
        return CudaGraphModule(fn, warmup=options.warmup, in_keys=[], out_keys=[])
    return CudaGraphModule(fn, warmup=options.warmup)
