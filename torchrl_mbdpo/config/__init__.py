"""The configuration mechanism every command shares.

Each command's settings are one dataclass schema, registered in Hydra's ConfigStore (its YAML in this folder
names it) and composed from that YAML and the command line. A schema lives beside what it configures
(:mod:`torchrl_mbdpo.trainers.config`, and the ``config`` module of each algorithm's package) and has one ``validate()`` method:
every field and every cross-field rule, checked before anything is written. What they share lives here:

- :class:`UserError`: what the user asked for cannot run as asked. Its message is one line, the problem and
  the fix; the command line prints it and exits 2 (every error of this library about inputs derives from it);
- :func:`check_keys`: every key of a composed config (``+key`` additions included) is a field of the schema,
  else the nearest valid name;
- :func:`config_warning`: a setting that is legal but almost surely a mistake, said up front;
- small rules used by many schemas (:func:`require`, :func:`at_least`, :func:`one_of`, :func:`device_available`,
  :func:`work_dir_usable`, :func:`existing_path`).
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
import warnings
from pathlib import Path
from typing import Any, Iterable, Mapping

__all__ = [
    "UserError",
    "ConfigWarning",
    "config_warning",
    "schema_keys",
    "check_keys",
    "nearest",
    "require",
    "at_least",
    "one_of",
    "device_available",
    "work_dir_usable",
    "existing_path",
    "schema_fields",
]


class UserError(ValueError):
    """What the user asked for cannot run as asked: a one-line message naming the problem and the fix."""


class ConfigWarning(UserWarning):
    """A setting that is legal but almost surely a mistake (for example: no update will happen)."""


def config_warning(message: str) -> None:
    """Say ``message`` up front (once per message; the command line prints it as ``warning: ...``)."""
    warnings.warn(message, ConfigWarning, stacklevel=2)


# ------------------------------------------------------------------------------------------ keys
def _field_type(schema: type, name: str) -> Any:
    hints = typing.get_type_hints(schema)
    return hints.get(name)


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass a field holds (``Optional[X]`` included), or None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def schema_keys(schema: type, prefix: str = "") -> list[str]:
    """Every dotted setting of a dataclass schema (``planner.num_samples``), nested groups included."""
    keys = []
    for f in dataclasses.fields(schema):
        key = f"{prefix}{f.name}"
        keys.append(key)
        nested = _dataclass_of(_field_type(schema, f.name))
        if nested is not None:
            keys.extend(schema_keys(nested, key + "."))
    return keys


def nearest(key: str, valid: Iterable[str]) -> str | None:
    """The valid name closest to ``key`` (dotted paths compared whole, then by their last part)."""
    valid = list(valid)
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return close[0]
    last = key.rsplit(".", 1)[-1]
    by_last = {v.rsplit(".", 1)[-1]: v for v in valid}
    close = difflib.get_close_matches(last, list(by_last), n=1, cutoff=0.75)
    return by_last[close[0]] if close else None


def unknown_key_error(key: str, valid: Iterable[str], command: str) -> UserError:
    guess = nearest(key, valid)
    hint = f" Did you mean {guess}?" if guess else ""
    return UserError(f"{command}: unknown setting {key!r}.{hint} (`{command} --cfg job` lists every setting.)")


def check_keys(config: Mapping, schema: type, command: str, prefix: str = "") -> None:
    """Raise :class:`UserError` for the first key of ``config`` (a composed DictConfig or dict) that is not a
    setting of ``schema``: a typo, a ``+key`` addition, a key inside a group."""
    valid = schema_keys(schema)
    names = {f.name: f for f in dataclasses.fields(schema)}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise unknown_key_error(dotted, [prefix + v for v in valid], command)
        nested = _dataclass_of(_field_type(schema, key))
        if nested is not None and isinstance(value, Mapping):
            check_keys(value, nested, command, dotted + ".")


# ------------------------------------------------------------------------------------------ rules
def require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def at_least(cfg: Any, low: float, *names: str, prefix: str = "") -> None:
    """``cfg.<name> >= low`` for each name (``None`` values are defaults and pass)."""
    for name in names:
        value = getattr(cfg, name)
        if value is not None and value < low:
            raise UserError(f"{prefix}{name} must be >= {low}, got {value}.")


def one_of(cfg: Any, name: str, choices: Iterable, prefix: str = "") -> None:
    value, choices = getattr(cfg, name), list(choices)
    if value not in choices:
        guess = nearest(str(value), [str(c) for c in choices])
        hint = f" (did you mean {guess}?)" if guess else ""
        raise UserError(f"{prefix}{name} must be one of {', '.join(map(str, choices))}; got {value!r}{hint}.")


def device_available(device: str, name: str = "device") -> None:
    """``device`` names a torch device this machine has."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise UserError(f"{name}={device!r} is not a torch device; use cpu, cuda or cuda:<index>.") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{name}={device}: this machine has no CUDA GPU (torch {torch.__version__}); pass {name}=cpu.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"{name}={device}: there are only {torch.cuda.device_count()} CUDA device(s); pass {name}=cuda:0.")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise UserError(f"{name}={device}: MPS is not available here; pass {name}=cpu.")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"{name}={device}: unsupported device type {dev.type!r}; use cpu or cuda.")


def work_dir_usable(path: str | None, name: str = "work_dir") -> None:
    """``path`` is a folder or does not exist yet, and no parent of it is a file."""
    if path is None:
        return
    p = Path(path)
    for part in (p, *p.parents):
        if part.exists() and not part.is_dir():
            what = f"{name}={path}" if part == p else f"{name}={path}: {part}"
            raise UserError(f"{what} is a file, not a folder; pass another {name}=.")


def existing_path(path: str | None, name: str, what: str, *, folder: bool = False) -> None:
    """``path`` names an existing file (or folder); the message says what it should be."""
    if not path:
        raise UserError(f"this command needs {name}=<path>: {what}.")
    p = Path(path)
    if not p.exists():
        raise UserError(f"{name}={path}: nothing there. Pass {what}.")
    if folder and not p.is_dir():
        raise UserError(f"{name}={path} is a file; pass a folder: {what}.")
    if not folder and p.is_dir():
        raise UserError(f"{name}={path} is a folder; pass a file: {what}.")


# ------------------------------------------------------------------------------------------ reference
def _comments(schema: type) -> dict[str, str]:
    """The comment of each field of a dataclass (its bases' included): the ``# ...`` on the field's line, else the
    ``# ...`` lines just above it (the comment is the field's documentation)."""
    schema = getattr(schema, "__overrides_of__", schema)  # overrides_of(...): the fields of the schema they override
    comments = {}
    for cls in reversed([c for c in schema.__mro__ if dataclasses.is_dataclass(c)]):
        comments.update({k: v for k, v in _own_comments(cls).items() if v})
    return comments


def _own_comments(schema: type) -> dict[str, str]:
    import inspect
    import io
    import tokenize

    try:
        source = inspect.getsource(schema)
    except (OSError, TypeError):
        return {}
    comments, above, field, depth = {}, [], None, 0
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        elif tok.type == tokenize.NAME and depth == 0 and tok.start[1] == 4 and field is None:
            field = tok.string
            if above:
                comments[field] = " ".join(above)
        elif tok.type == tokenize.COMMENT:
            text = tok.string.lstrip("#").strip()
            if field is not None:
                comments[field] = text if field not in comments or not above else f"{comments[field]} {text}"
            elif tok.start[1] == 4:
                above.append(text)
        elif tok.type == tokenize.NEWLINE:
            field, above = None, []
        elif tok.type == tokenize.NL and field is None and not above:
            pass
    return comments


def _type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def schema_fields(schema: type, prefix: str = "") -> list[dict]:
    """Every setting of a schema, nested groups included: ``{"key", "type", "default", "comment"}`` each, the comment
    read from the field's source (for the generated configuration reference)."""
    hints, comments = typing.get_type_hints(schema), _comments(schema)
    rows = []
    for f in dataclasses.fields(schema):
        nested = _dataclass_of(hints.get(f.name))
        if nested is not None:
            rows.extend(schema_fields(nested, f"{prefix}{f.name}."))
            continue
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        rows.append(
            {"key": prefix + f.name, "type": _type_name(hints.get(f.name)), "default": default, "comment": comments.get(f.name, "")}
        )
    return rows
