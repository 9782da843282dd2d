"""Self-describing checkpoints, written atomically."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

FORMAT_VERSION = 1

__all__ = ["FORMAT_VERSION", "CheckpointError", "save_checkpoint", "load_checkpoint", "check_compatible"]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used, with what is wrong and how to fix it."""


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` (plus the format version) to ``path`` via a temporary file, fsync and rename, so a
    crash or a full disk mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a checkpoint written by :func:`save_checkpoint`; clear errors for missing, foreign or newer files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}. Pass checkpoint=<work_dir>/checkpoints/latest.pt of a finished or running job.")
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise CheckpointError(f"{path} could not be read as a checkpoint ({type(err).__name__}: {err}); it may be truncated or corrupted.") from err
    if not isinstance(state, dict) or "format_version" not in state:
        raise CheckpointError(f"{path} is not a torchrl_mbdpo checkpoint (no format_version); official MBDPO/TD-MPC2 files are not supported here.")
    if state["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {state['format_version']}, newer than this library's {FORMAT_VERSION}: upgrade torchrl_mbdpo."
        )
    return state


def check_compatible(saved: dict, requested: dict, what: str, path) -> None:
    """Raise a readable error listing every field where a checkpoint's config differs from the requested one."""
    diffs = [f"{k}: checkpoint has {saved.get(k)!r}, requested {requested.get(k)!r}" for k in sorted(set(saved) | set(requested)) if saved.get(k) != requested.get(k)]
    if diffs:
        raise CheckpointError(
            f"The checkpoint {path} was made with another {what}:\n  " + "\n  ".join(diffs)
            + "\nDrop the conflicting overrides (or pass the checkpoint's values), or use a checkpoint of this config."
        )
