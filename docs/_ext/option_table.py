"""``.. option-table:: OPTIONS`` renders one of prefork_waitress's option tables.

The reference is built from ``prefork_waitress.options`` itself (name, command-line
flags, default, environment variable, help), so it cannot drift from the code.
"""

from typing import Any, Dict, List

from docutils import nodes
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from prefork_waitress import options as table
from prefork_waitress._run.cli import build_parser
from prefork_waitress._run.config import ENV_PREFIX


def _flags(option: table.Option) -> List[str]:
    """The flags as ``prefork-waitress --help`` takes them (checked against the real parser)."""
    if not option.cli:
        return []
    if option.is_flag:
        flags = [option.flag, *option.aliases]
        if option.default is True:
            flags.append("--no-" + option.flag[2:])
    else:
        metavar = option.metavar or option.name.upper()
        flags = [f"{flag} {metavar}" for flag in (option.flag, *option.aliases)]
    known = build_parser().flags
    for flag in flags:
        if flag.split()[0] not in known:
            raise ValueError(f"option {option.name}: the command line has no {flag.split()[0]}")
    return flags


def _default(option: table.Option) -> str:
    return option.default_text or repr(option.default)


def _field(name: str, *body: nodes.Node) -> nodes.field:
    return nodes.field("", nodes.field_name(text=name), nodes.field_body("", nodes.paragraph("", "", *body)))


def _literals(texts: List[str]) -> List[nodes.Node]:
    out: List[nodes.Node] = []
    for text in texts:
        if out:
            out.append(nodes.Text(", "))
        out.append(nodes.literal(text=text))
    return out


class OptionTable(SphinxDirective):
    """One definition per option of ``prefork_waitress.options.<argument>``, in table order."""

    required_arguments = 1

    def run(self) -> List[nodes.Node]:
        name = self.arguments[0]
        if name not in ("OPTIONS", "PROGRAM_OPTIONS"):
            raise self.error(f"option-table: OPTIONS or PROGRAM_OPTIONS, not {name!r}")
        self.env.note_dependency(table.__file__)
        items = nodes.definition_list()
        for option in getattr(table, name):
            fields = nodes.field_list()
            flags = _flags(option)
            fields += _field(
                "Command line",
                *(_literals(flags) if flags else [nodes.Text("none (the Python API only)")]),
            )
            fields += _field("Default", nodes.literal(text=_default(option)))
            fields += _field("Environment", nodes.literal(text=ENV_PREFIX + option.name.upper()))
            if option.repeatable:
                fields += _field("Repeatable", nodes.Text("yes: each use adds one value"))
            term = nodes.term("", "", nodes.literal(text=option.name), ids=[f"option-{option.name.replace('_', '-')}"])
            definition = nodes.definition("", nodes.paragraph(text=option.help + "."))
            definition += fields
            items += nodes.definition_list_item("", term, definition)
        return [items]


def setup(app: Sphinx) -> Dict[str, Any]:
    app.add_directive("option-table", OptionTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
