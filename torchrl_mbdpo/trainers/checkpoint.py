"""Self-describing checkpoints: atomic writes, a checksum, the previous good file kept, migrations.

File layout (format 2 and later): ``torch.save({"format_version", "sha256", "payload"})`` where ``payload``
is the ``torch.save`` bytes of the state and ``sha256`` its digest, so truncation and bit rot are detected
before anything is unpickled. Format 3 keeps the target Q heads in the world model (``target_q_params``,
as TD-MPC2 and TorchRL's ``TdMpc2QEnsemble``) and names the optimisers as TorchRL's TD-MPC2 stepper;
older files are migrated on load. ``latest.pt`` is replaced atomically; the file it replaces survives as
``previous.pt``, and :func:`load_latest` falls back to it with a warning.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from pathlib import Path

import torch

from ..config import UserError

FORMAT_VERSION = 3

__all__ = [
    "FORMAT_VERSION",
    "CheckpointError",
    "save_checkpoint",
    "save_run_checkpoint",
    "load_checkpoint",
    "load_latest",
    "check_compatible",
]


class CheckpointError(UserError, RuntimeError):
    """A checkpoint that cannot be used, with what is wrong and how to fix it."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # directories cannot be opened on every platform
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(state: dict, path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: temporary file, fsync, rename. The file it replaces is kept
    as ``previous.pt`` (a hard link made before the rename, so some complete checkpoint exists at every
    instant). A failure (full disk, ...) removes the temporary file and leaves both checkpoints intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    record = {"format_version": FORMAT_VERSION, "sha256": hashlib.sha256(payload).hexdigest(), "payload": payload}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(record, f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            previous = path.with_name("previous.pt")
            link = path.with_name(f".{path.name}.prev.tmp")
            link.unlink(missing_ok=True)
            os.link(path, link)
            os.replace(link, previous)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_run_checkpoint(state: dict, work_dir: str | Path, step: int) -> Path | None:
    """:func:`save_checkpoint` to ``<work_dir>/checkpoints/latest.pt`` for a training run: a failed write (a
    full disk, ...) warns and returns None, so training goes on and the previous checkpoints stay intact."""
    try:
        return save_checkpoint(state, Path(work_dir) / "checkpoints" / "latest.pt")
    except OSError as err:
        warnings.warn(f"Checkpoint at step {step} not written ({err}); the previous one is intact.", stacklevel=3)
        return None


def _target_qs_into_world_model(state: dict) -> dict:
    """Format 2 -> 3: the target Q heads moved from the loss (``target_qvalue_params.*``) into the world model
    (``target_q_params.*``); the stepper's optimisers took TorchRL's names."""
    loss = state.get("loss")
    if isinstance(loss, dict) and "world_model" in state:
        targets = {k[len("target_qvalue_params.") :]: v for k, v in loss.items() if k.startswith("target_qvalue_params.")}
        if targets and not any(k.startswith("target_q_params.") for k in state["world_model"]):
            state["world_model"] = {**state["world_model"], **{f"target_q_params.{k}": v for k, v in targets.items()}}
            state["loss"] = {**loss, **{f"world_model.target_q_params.{k}": v for k, v in targets.items()}}
    optimizers = state.get("optimizers")
    if isinstance(optimizers, dict) and "model_optim" in optimizers:
        renamed = {"model_optim": "optimizer_model", "pi_optim": "optimizer_actor"}
        state["optimizers"] = {renamed.get(k, k): v for k, v in optimizers.items()}
    return state


def _migrate(record: dict, version: int, path) -> dict:
    """Bring an older checkpoint to the current layout (format 1: the state itself, no checksum; format 2:
    the target Qs on the loss)."""
    if version == 1:
        return _target_qs_into_world_model({k: v for k, v in record.items() if k != "format_version"})
    if version == 2:
        return _target_qs_into_world_model(_verified_payload(record, path))
    raise CheckpointError(f"{path}: no migration from checkpoint format {version} to {FORMAT_VERSION}.")


def _verified_payload(record: dict, path, map_location="cpu") -> dict:
    if hashlib.sha256(record["payload"]).hexdigest() != record["sha256"]:
        raise CheckpointError(f"{path} fails its checksum: the file is corrupted.")
    return torch.load(io.BytesIO(record["payload"]), map_location=map_location, weights_only=False)


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load and verify a checkpoint; clear errors for missing, corrupted, foreign or newer files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"No checkpoint at {path}. Pass checkpoint=<work_dir>/checkpoints/latest.pt of a finished or running job.")
    try:
        record = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:
        raise CheckpointError(
            f"{path} could not be read as a checkpoint ({type(err).__name__}: {err}); it may be truncated or corrupted."
        ) from err
    if not isinstance(record, dict) or "format_version" not in record:
        raise CheckpointError(
            f"{path} is not a torchrl_mbdpo checkpoint (no format_version); an official MBDPO/TD-MPC2 file converts with "
            f"mbdpo-import checkpoint={path} out=<new checkpoint>."
        )
    version = record["format_version"]
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {version}, newer than this library's {FORMAT_VERSION}: upgrade torchrl_mbdpo.")
    if version < FORMAT_VERSION:
        return _migrate(record, version, path)
    return _verified_payload(record, path, map_location)


def load_latest(directory: str | Path, map_location="cpu") -> tuple[dict, Path]:
    """``latest.pt`` of a checkpoint directory, or ``previous.pt`` (with a warning) when the latest one
    is missing or damaged."""
    directory = Path(directory)
    latest, previous = directory / "latest.pt", directory / "previous.pt"
    try:
        return load_checkpoint(latest, map_location), latest
    except CheckpointError as err:
        if not previous.is_file():
            raise
        warnings.warn(f"{err} Using the previous checkpoint {previous} instead.", stacklevel=2)
        return load_checkpoint(previous, map_location), previous


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_compatible(saved: dict, requested: dict, what: str, path, shown: int = 8) -> None:
    """Raise a readable error listing the fields (nested ones dotted: ``planner.steps``) where a checkpoint's
    config differs from the requested one (the first ``shown`` of them)."""
    saved, requested = _flat(saved), _flat(requested)
    diffs = [
        f"{k}: checkpoint has {saved.get(k)!r}, requested {requested.get(k)!r}"
        for k in sorted(set(saved) | set(requested))
        if saved.get(k) != requested.get(k)
    ]
    if diffs:
        more = f"; and {len(diffs) - shown} more" if len(diffs) > shown else ""
        raise CheckpointError(
            f"The checkpoint {path} was made with another {what}: {'; '.join(diffs[:shown])}{more}. "
            "Pass the run's own settings again (with resume=true, only steps, eval/checkpoint frequencies, device, threads, "
            "logging and compile settings may change), or use a checkpoint of this config."
        )
