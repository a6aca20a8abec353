"""README's option lists agree with the one option table: names, defaults and command-line flags."""

import ast
import os
import re

from prefork_waitress._run.cli import build_parser
from prefork_waitress.options import OPTIONS, PROGRAM_OPTIONS

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.rst")
ARGUMENT = re.compile(r"^\s+(?P<name>\w+)=(?P<default>.*?),\s*(#.*)?$")


def readme():
    with open(README, encoding="utf-8") as f:
        return f.read()


def master_block():
    """{name: default} from README's ``Master(...)`` block (the API's option list)."""
    text = readme()
    start = text.index("    Master(\n        app,")
    end = text.index(").start()", start)
    found = {}
    for line in text[start:end].splitlines()[2:-1]:  # after "Master(" and "app,", up to ")"
        match = ARGUMENT.match(line)
        if match:
            found[match["name"]] = ast.literal_eval(match["default"])
        else:
            assert line.strip().startswith("**waitress_options"), f"README's Master block: cannot read {line!r}"
    return found


def cli_paragraph():
    """The flags named in README's ``Options: ...`` paragraph of the command line."""
    text = readme()
    start = text.index("\nOptions: ``--workers``")
    end = text.index("\n\n", start)
    return set(re.findall(r"``(--[a-z][a-z-]*)", text[start:end]))


def test_readme_master_block_has_every_option_with_its_default():
    documented = master_block()
    assert list(documented) == [option.name for option in OPTIONS], "README's Master(...) block: names or order"
    for option in OPTIONS:
        assert documented[option.name] == option.default, f"README's default of {option.name}"


def test_readme_command_line_paragraph_names_every_flag_and_only_real_ones():
    named = cli_paragraph()
    for option in OPTIONS + PROGRAM_OPTIONS:
        if option.cli:
            assert option.flag in named, f"README's command line options lack {option.flag}"
    assert named <= build_parser().flags, f"README names flags that do not exist: {named - build_parser().flags}"
