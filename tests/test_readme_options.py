"""The documentation's hand-written option lists agree with the one option table: names, defaults and flags.

The ``Master(...)`` block is in docs/concepts.rst ("The master"), the command line's ``Options: ...``
paragraph in docs/guides/operations.rst ("Command line"); docs/reference/options.rst is generated from
the table itself, so only these two can drift.
"""

import ast
import os
import re

from prefork_waitress._run.cli import build_parser
from prefork_waitress.options import OPTIONS, PROGRAM_OPTIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MASTER_PAGE = os.path.join(ROOT, "docs", "concepts.rst")
COMMAND_LINE_PAGE = os.path.join(ROOT, "docs", "guides", "operations.rst")
ARGUMENT = re.compile(r"^\s+(?P<name>\w+)=(?P<default>.*?),\s*(#.*)?$")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def master_block():
    """{name: default} from the ``Master(...)`` block of docs/concepts.rst (the API's option list)."""
    text = read(MASTER_PAGE)
    start = text.index("    Master(\n        app,")
    end = text.index(").start()", start)
    found = {}
    for line in text[start:end].splitlines()[2:-1]:  # after "Master(" and "app,", up to ")"
        match = ARGUMENT.match(line)
        if match:
            found[match["name"]] = ast.literal_eval(match["default"])
        else:
            assert line.strip().startswith("**waitress_options"), (
                f"docs/concepts.rst's Master block: cannot read {line!r}"
            )
    return found


def cli_paragraph():
    """The flags named in the ``Options: ...`` paragraph of docs/guides/operations.rst's command line."""
    text = read(COMMAND_LINE_PAGE)
    start = text.index("\nOptions: ``--workers``")
    end = text.index("\n\n", start)
    return set(re.findall(r"``(--[a-z][a-z-]*)", text[start:end]))


def test_docs_master_block_has_every_option_with_its_default():
    documented = master_block()
    assert list(documented) == [option.name for option in OPTIONS], (
        "docs/concepts.rst's Master(...) block: names or order"
    )
    for option in OPTIONS:
        assert documented[option.name] == option.default, f"docs/concepts.rst's default of {option.name}"


def test_docs_command_line_paragraph_names_every_flag_and_only_real_ones():
    named = cli_paragraph()
    for option in OPTIONS + PROGRAM_OPTIONS:
        if option.cli:
            assert option.flag in named, f"docs/guides/operations.rst's command line options lack {option.flag}"
    assert named <= build_parser().flags, (
        f"docs/guides/operations.rst names flags that do not exist: {named - build_parser().flags}"
    )
