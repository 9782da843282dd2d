"""``{config-reference} <command>`` (in MyST; ``.. config-reference::`` in RST): a table of every setting of a
command's schema, with its type, default and the comment beside it in the source (``torchrl_mbdpo.config.
schema_fields``), so the reference cannot drift from the code. Built as docutils nodes, so no text of a comment
is read as markup."""

import importlib

from docutils import nodes
from docutils.parsers.rst import Directive

WIDTHS = (22, 12, 14, 52)


def _entry(text: str, literal: bool = False) -> nodes.entry:
    inner = nodes.literal(text=text) if literal else nodes.Text(text)
    return nodes.entry("", nodes.paragraph("", "", inner))


def _row(cells) -> nodes.row:
    return nodes.row("", *cells)


class ConfigReference(Directive):
    required_arguments = 1
    final_argument_whitespace = True

    def run(self):
        from torchrl_mbdpo.cli import COMMANDS
        from torchrl_mbdpo.config import schema_fields

        module, cls = COMMANDS[self.arguments[0]].schema.split(":")
        schema = getattr(importlib.import_module(module), cls)
        table = nodes.table(classes=["config-reference"])
        group = nodes.tgroup(cols=len(WIDTHS))
        table += group
        group.extend(nodes.colspec(colwidth=w) for w in WIDTHS)
        group += nodes.thead("", _row(_entry(h) for h in ("setting", "type", "default", "meaning")))
        body = nodes.tbody()
        for r in schema_fields(schema):
            body += _row([_entry(r["key"], True), _entry(r["type"]), _entry(repr(r["default"]), True), _entry(r["comment"])])
        group += body
        return [table]


def setup(app):
    app.add_directive("config-reference", ConfigReference)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
