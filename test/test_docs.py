"""The generated configuration reference documents every setting: each field of each command's schema carries the
comment that becomes its meaning (docs/reference/configuration.md renders them with the config-reference directive)."""

import importlib

import pytest

from torchrl_mbdpo.cli import COMMANDS
from torchrl_mbdpo.config import schema_fields


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_setting_of_every_command_has_a_meaning(command):
    module, name = COMMANDS[command].schema.split(":")
    rows = schema_fields(getattr(importlib.import_module(module), name))
    assert rows and not [r["key"] for r in rows if not r["comment"]]


def test_the_configuration_reference_names_every_command():
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "reference" / "configuration.md").read_text()
    assert all(f"{{config-reference}} {command}\n" in page for command in COMMANDS)
