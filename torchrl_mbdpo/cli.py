"""The console scripts: a table of commands and one error path.

Each command is its Hydra config (``torchrl_mbdpo/config/<config>.yaml``, which names the command's schema), the
schema (a dataclass with ``validate()``) and the function that runs it (it returns the exit code). For every
command the same path: the command line's keys are checked against the schema (the nearest valid name for an
unknown one, ``+key`` additions included) and composed; Hydra composes the settings (``-m`` sweeps, launchers);
``validate()`` checks every rule before anything is written; signals are caught from then on (a run stops with a
checkpoint and exits 128+signal, :mod:`torchrl_mbdpo.trainers.run_control`).

Errors: what the user asked for and cannot run (:class:`~torchrl_mbdpo.config.UserError`) is one line on stderr,
``error: <the problem and the fix>``, exit 2, nothing written; a setting that is legal but almost surely a mistake
is a ``warning:`` line up front; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
import warnings
from typing import NamedTuple

from ._rendering import choose_mujoco_gl
from .config import UserError

__all__ = ["COMMANDS", "Command", "ScriptArgumentParser", "main"]

_T, _D = "torchrl_mbdpo.trainers", "torchrl_mbdpo.dmo"


class Command(NamedTuple):
    config: str  # torchrl_mbdpo/config/<config>.yaml
    schema: str  # "module:Class": the settings
    run: str  # "module:function": function(settings) -> exit code


COMMANDS = {
    "mbdpo-train": Command("train", f"{_T}.config:TrainConfig", f"{_T}.commands:train"),
    "mbdpo-eval": Command("eval", f"{_T}.config:EvalConfig", f"{_T}.commands:evaluate"),
    "mbdpo-compare": Command("compare", f"{_T}.config:CompareConfig", f"{_T}.commands:compare"),
    "mbdpo-finetune": Command("finetune", f"{_T}.finetune:FinetuneConfig", f"{_T}.commands:finetune"),
    "mbdpo-dataset": Command("dataset", f"{_T}.config:DatasetConfig", f"{_T}.commands:dataset"),
    "mbdpo-import": Command("import", f"{_T}.config:ImportConfig", f"{_T}.commands:import_checkpoint"),
    "mbdpo-export": Command("export", f"{_T}.config:ExportConfig", f"{_T}.commands:export_checkpoint"),
    "mbdpo-dmo train": Command("dmo_train", f"{_D}.config:DMOTrainConfig", f"{_D}.commands:train"),
    "mbdpo-dmo dataset": Command("dmo_dataset", f"{_D}.config:PlayDataConfig", f"{_D}.commands:dataset"),
    "mbdpo-dmo world_model": Command("dmo_world_model", f"{_D}.config:WorldModelTrainConfig", f"{_D}.commands:world_model"),
    "mbdpo-dmo reward": Command("dmo_reward", f"{_D}.config:RewardTrainConfig", f"{_D}.commands:reward"),
    "mbdpo-dmo policy": Command("dmo_policy", f"{_D}.config:PixelDMOConfig", f"{_D}.commands:policy"),
    "mbdpo-dmo ppo": Command("dmo_ppo", f"{_D}.config:PPOConfig", f"{_D}.commands:ppo"),
    "mbdpo-dmo compare": Command("dmo_compare", f"{_D}.config:PixelCompareConfig", f"{_D}.commands:compare"),
}
# Settings that moved to another command: (command, setting prefix) -> where to go instead.
_DMO_TRAIN = "DMO-SAPO trains with `mbdpo-dmo train task=...`, its dmo.* settings without the prefix (horizon=16 decoupled=false ...)"
MOVED = {("mbdpo-train", "algo=dmo"): _DMO_TRAIN, ("mbdpo-train", "dmo."): _DMO_TRAIN}
# Commands whose first word picks what they do: `mbdpo-dmo world_model ...` (a command of the table) and
# `mbdpo-dataset check ...` (a value of the setting named here).
SUBCOMMANDS = {
    "mbdpo-dmo": (None, sorted(k.split(" ", 1)[1] for k in COMMANDS if k.startswith("mbdpo-dmo "))),
    "mbdpo-dataset": ("action", ["check", "export", "generate"]),
}


def _load(path: str):
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


def _fail(err: Exception) -> None:
    message = " ".join(str(err).split())  # one line, whatever the message
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(2)


class ScriptArgumentParser(argparse.ArgumentParser):
    """``argparse`` for the baseline scripts (``sota-implementations/ppo``, ``sac``) with the commands' error path: a bad
    argument is one line on stderr, ``<script>: error: <the problem and the fix>``, exit 2 (no usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {' '.join(message.split())}\n")

    def check_run(self, args, positive: tuple[str, ...], eval_csv) -> None:
        """The checks every baseline run makes before it writes: the ``positive`` integer arguments are >= 1,
        ``args.task`` is a known task, and ``eval_csv`` (the run's log) does not exist yet."""
        from .envs.factory import task_spec

        for name in positive:
            if getattr(args, name) < 1:
                self.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}: pass a positive integer.")
        try:
            task_spec(args.task)
        except ValueError as err:
            self.error(str(err))
        if eval_csv.exists():
            self.error(f"{eval_csv} exists: pass another --work-dir, or remove it.")


@contextlib.contextmanager
def _warnings_as_lines():
    """This library's warnings as one ``warning: ...`` line each on stderr (others as Python prints them)."""
    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserWarning) and "torchrl_mbdpo" in str(filename):
            print(f"warning: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        yield
    finally:
        warnings.showwarning = show


def _register() -> None:
    from .dmo.config import register_dmo_configs
    from .trainers.config import register_configs

    register_configs()
    register_dmo_configs()


def _hydra_error(err: Exception) -> UserError:
    cause = err.__cause__ or err.__context__
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    detail = str(cause).strip().splitlines()[0] if cause is not None and str(cause).strip() else ""
    return UserError(f"{first}: {detail}" if detail and detail not in first else first)


def _plain_settings(argv: list[str], schema: type) -> list[str]:
    """``+key=value`` of a key the schema has is ``key=value`` (Hydra's ``+`` adds a key that is not there)."""
    from .config import schema_keys

    valid = set(schema_keys(schema))
    known = lambda a: a.startswith("+") and "=" in a and a.split("=", 1)[0].lstrip("+") in valid  # noqa: E731
    return [a.lstrip("+") if known(a) else a for a in argv]


def _check_command_line(name: str, command: Command, schema: type, argv: list[str], config_dir: str | None) -> None:
    """The command line's keys are settings of the schema, and its values compose (before Hydra runs anything)."""
    from hydra import compose, initialize_config_dir, initialize_config_module
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from .config import schema_keys, unknown_key_error

    overrides = [a for a in argv if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as err:  # Hydra's OverrideParseException: a malformed key=value
        raise _hydra_error(err) from None
    valid = schema_keys(schema)

    def check(key: str, value) -> None:
        if key not in valid:
            raise unknown_key_error(key, valid, name)
        if isinstance(value, dict):  # a dict-style value: planner={steps:3,num_samples:64}
            for sub, sub_value in value.items():
                check(f"{key}.{sub}", sub_value)

    for override in parsed:
        key = override.key_or_group
        if key.startswith("hydra") or "/" in key:  # Hydra's own settings and config groups
            continue
        check(key, None if override.is_sweep_override() else override.value())
    if len(overrides) < len(argv) or any(o.is_sweep_override() or o.key_or_group.startswith("hydra") for o in parsed):
        return  # Hydra's own modes (--help, -m sweeps, launchers) compose per job
    try:
        config = (
            initialize_config_dir(config_dir, version_base="1.3")
            if config_dir
            else initialize_config_module("torchrl_mbdpo.config", version_base="1.3")
        )
        with config:
            compose(command.config, overrides=overrides)
    except Exception as err:  # a value of the wrong type, a key inside a dict-style value, ...
        raise _hydra_error(err) from None


def main(name: str, argv: list[str] | None = None, *, config_dir: str | None = None, config_name: str | None = None) -> None:
    """Run the console command ``name`` (``mbdpo-train``, ``mbdpo-dmo``, ...) with ``argv`` (default: ``sys.argv[1:]``).

    ``config_dir`` / ``config_name``: the command's YAML from another folder (the presets of
    ``sota-implementations/mbdpo``, composed on the same schema); ``--config-name`` on the command line picks another."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if name in SUBCOMMANDS:
        setting, choices = SUBCOMMANDS[name]
        word = argv[0] if argv and "=" not in argv[0] and not argv[0].startswith("-") else None
        if (word is not None or setting is None) and word not in choices:
            _fail(UserError(f"usage: {name} {{{'|'.join(choices)}}} key=value ...  (got {word!r})"))
        if setting is None:
            name = f"{name} {argv.pop(0)}"
        elif word is not None:
            argv[0] = f"{setting}={word}"
    for (command_name, prefix), where in MOVED.items():
        if name == command_name and any(a.lstrip("+").startswith(prefix) for a in argv):
            _fail(UserError(f"{name} {prefix}...: moved. {where}."))
    if not sys.stderr.isatty():  # progress bars in log files: one line every few seconds, not ten per second
        os.environ.setdefault("TQDM_MININTERVAL", "5")
    choose_mujoco_gl()  # before MuJoCo is imported (torchrl's envs import it)
    command = COMMANDS[name]
    if config_name is not None:
        command = Command(config_name, command.schema, command.run)
    if config_dir is not None and "--config-name" in argv:  # a preset picked on the command line
        at = argv.index("--config-name")
        command = Command(argv[at + 1], command.schema, command.run)
        del argv[at : at + 2]
    schema = _load(command.schema)
    argv = _plain_settings(argv, schema)
    _register()
    try:
        _check_command_line(name, command, schema, argv, config_dir)
    except UserError as err:
        _fail(err)
    if name == "mbdpo-train":
        from .trainers.commands import mark_sweep

        argv = mark_sweep(argv)
    sys.argv = [name, *argv]

    def job(cfg) -> None:
        from omegaconf import OmegaConf

        from .config import check_keys
        from .trainers.run_control import SIGNALS

        with SIGNALS.catching(), _warnings_as_lines():
            try:
                check_keys(cfg, schema, name)
                settings = OmegaConf.to_object(cfg)
                settings.validate()
                code = _load(command.run)(settings)
            except UserError as err:
                _fail(err)
        if code:
            sys.exit(code)

    import hydra

    hydra.main(config_path=config_dir or "config", config_name=command.config, version_base="1.3")(job)()


def train_main():
    """``mbdpo-train key=value ...``; ``mbdpo-train -m seed=1,2,3 task=a,b`` sweeps them (Hydra multirun, joblib
    launcher: in parallel here; ``hydra/launcher=submitit_slurm`` on a Slurm cluster), each run in its own work dir."""
    main("mbdpo-train")


def eval_main():
    main("mbdpo-eval")


def compare_main():
    main("mbdpo-compare")


def finetune_main():
    main("mbdpo-finetune")


def dataset_main():
    """``mbdpo-dataset check data_dir=<dir>`` / ``generate out=<dir> tasks=[...]`` / ``export out=<dir> checkpoints=[...]``."""
    main("mbdpo-dataset")


def import_main():
    """``mbdpo-import checkpoint=<official .pt> out=<our checkpoint>``."""
    main("mbdpo-import")


def export_main():
    """``mbdpo-export checkpoint=<our checkpoint> out=<official .pt> [format=mbdpo|tdmpc2]``."""
    main("mbdpo-export")


def dmo_main():
    """``mbdpo-dmo train key=value ...``: DMO-SAPO on a task (the simulator, or a learned MLP, as the global model);
    ``mbdpo-dmo {dataset|world_model|reward|policy|ppo|compare} key=value ...``: DMO in a learned pixel world model."""
    main("mbdpo-dmo")
