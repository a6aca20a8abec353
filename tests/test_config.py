"""Options from outside the command line: --config FILE, PREFORK_WAITRESS_*, WEB_CONCURRENCY, --print-config.

Run for real: ``python -m prefork_waitress`` in a subprocess with its own
environment; a master started from a config file serves and runs its hooks.
"""

import re
import textwrap

import pytest
from clitools import ctl, run_cli
from conftest import get, wait_until

LINE = re.compile(r"^(?P<name>\w+) = (?P<value>.*?)\s+# (?P<source>.*)$")


def printed(result):
    """{option: (value text, source)} from --print-config's output."""
    assert result.returncode == 0, result.stderr
    rows = {}
    for line in result.stdout.splitlines():
        match = LINE.match(line)
        assert match, line
        rows[match["name"]] = (match["value"], match["source"])
    return rows


def write(path, text):
    path.write_text(textwrap.dedent(text))
    return path


def test_a_config_file_sets_options_a_worker_class_and_master_hooks(server, tmp_path):
    config = write(
        tmp_path / "site.conf.py",
        """
        import os
        from os.path import join

        from prefork_waitress import Worker

        workers = 2
        base_port = 0
        control_socket = "ctl.sock"
        channel_timeout = 30  # waitress's
        _started = join(os.getcwd(), "ready.txt")


        class SiteWorker(Worker):
            def child_origin(self):
                return "the config file"


        worker_class = SiteWorker


        def when_ready(master):
            with open(_started, "w") as f:
                f.write(" ".join(map(str, master.ports)))
        """,
    )
    s = server("--config", config, "apps:app")
    status = s.status(tmp_path / "ctl.sock")
    ports = [w["port"] for w in status["workers"]]
    assert len(ports) == 2 and all(get(port)[0] == 200 for port in ports)
    ready = wait_until(lambda: (tmp_path / "ready.txt").exists() and (tmp_path / "ready.txt").read_text())
    assert ready.split() == [str(port) for port in ports]
    result = ctl(tmp_path / "ctl.sock", "command", "origin")
    assert result.returncode == 0 and result.stdout.count("the config file") == 2, result.stdout


def test_precedence_cli_then_environment_then_file_then_defaults(tmp_path):
    config = write(
        tmp_path / "c.py",
        """
        workers = 2
        max_requests = 10
        max_rss = 100
        graceful_timeout = 7
        request_timeout = 9
        """,
    )
    env = {
        "PREFORK_WAITRESS_WORKERS": "3",
        "PREFORK_WAITRESS_ARGS": "--workers 9 --max-requests 20 --graceful-timeout 8 apps:app",
        "PREFORK_WAITRESS_MAX_RSS": "200",
        "WEB_CONCURRENCY": "5",
    }
    rows = printed(run_cli("--config", config, "--max-requests", "30", "--print-config", env=env))
    assert rows["workers"] == ("3", "env PREFORK_WAITRESS_WORKERS")  # the variable over ARGS and the file
    assert rows["max_requests"] == ("30", "cli")
    assert rows["graceful_timeout"] == ("8.0", "env PREFORK_WAITRESS_ARGS")  # ARGS over the file
    assert rows["max_rss"] == ("200", "env PREFORK_WAITRESS_MAX_RSS")
    assert rows["request_timeout"] == ("9.0", f"file {config}")
    assert rows["boot_timeout"] == ("60.0", "default")
    assert rows["app"] == ("'apps:app'", "env PREFORK_WAITRESS_ARGS")
    assert rows["config"] == (repr(str(config)), "cli")


def test_web_concurrency_sets_workers_only_when_nothing_else_does(tmp_path):
    alone = printed(run_cli("--print-config", env={"WEB_CONCURRENCY": "5"}))
    assert alone["workers"] == ("5", "env WEB_CONCURRENCY")
    config = write(tmp_path / "c.py", "workers = 2\n")
    under_file = printed(run_cli("--config", config, "--print-config", env={"WEB_CONCURRENCY": "5"}))
    assert under_file["workers"] == ("2", f"file {config}")


def test_the_environment_reaches_a_running_master(server, tmp_path):
    env = {
        "PREFORK_WAITRESS_WORKERS": "2",
        "WEB_CONCURRENCY": "4",
        "PREFORK_WAITRESS_ARGS": "--base-port 0 --control-socket ctl.sock",
        "PREFORK_WAITRESS_CONFIG": str(write(tmp_path / "c.py", "max_requests = 1000\n")),
    }
    s = server("apps:app", env=env)
    assert len(s.status(tmp_path / "ctl.sock")["workers"]) == 2


def test_print_config_lists_every_option_with_the_app_and_given_waitress_options():
    from prefork_waitress.options import OPTIONS, PROGRAM_OPTIONS

    rows = printed(run_cli("--channel-timeout", "30", "--no-gc-freeze", "--print-config", "m:app"))
    names = {o.name for o in OPTIONS + PROGRAM_OPTIONS} - {"print_config"}
    assert names | {"app", "channel_timeout"} == set(rows)
    assert rows["channel_timeout"] == ("30", "cli") and rows["gc_freeze"] == ("False", "cli")
    assert rows["workers"] == ("3", "default")


@pytest.mark.parametrize(
    "args, env, source",
    [
        (["--workers", "0"], {}, "(from cli)"),
        ([], {"PREFORK_WAITRESS_WORKERS": "0"}, "(from env PREFORK_WAITRESS_WORKERS)"),
        ([], {"PREFORK_WAITRESS_ARGS": "--workers 0"}, "(from env PREFORK_WAITRESS_ARGS)"),
        ([], {"WEB_CONCURRENCY": "0"}, "(from env WEB_CONCURRENCY)"),
        (["--config", "{file}"], {}, "(from file {file})"),
    ],
    ids=["cli", "env", "env-args", "web-concurrency", "file"],
)
def test_a_bad_value_names_its_source_the_option_and_what_is_accepted(tmp_path, args, env, source):
    config = write(tmp_path / "bad.py", "workers = 0\n")
    args = [arg.format(file=config) for arg in args]
    result = run_cli(*args, "apps:app", env=env, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, result.stderr
    assert "option workers: must be at least 1 and at most 512, got 0" in errors[0]
    assert source.format(file=config) in errors[0]


def test_a_bad_waitress_option_in_the_environment_names_it():
    result = run_cli("--print-config", env={"PREFORK_WAITRESS_CHANNEL_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert "option channel_timeout" in result.stderr and "(from env PREFORK_WAITRESS_CHANNEL_TIMEOUT)" in result.stderr


@pytest.mark.parametrize(
    "text, message",
    [
        ("workrs = 2\n", "{file}: workrs is neither an option nor a master hook (did you mean workers?)"),
        (
            "def when_redy(master):\n    pass\n",
            "when_redy is neither an option nor a master hook (did you mean when_ready?)",
        ),
        ("def helper():\n    pass\n", "helper is neither an option nor a master hook"),
        ("when_ready = 3\n", "when_ready is a master hook: define it as a function"),
        ("config = 'other.py'\n", "config is an option of the command line only"),
        ("workers = (\n", "{file}, line 1:"),
        ("x = 1\nraise RuntimeError('no database')\n", "{file}, line 2: RuntimeError: no database"),
    ],
    ids=["typo", "hook-typo", "public-helper", "hook-not-function", "config-in-file", "syntax", "raises"],
)
def test_a_config_file_error_names_the_file_and_the_name(tmp_path, text, message):
    config = write(tmp_path / "site.conf.py", text)
    result = run_cli("--config", config, "apps:app", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message.format(file=config) in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_config_file_may_import_and_keep_private_names(tmp_path):
    config = write(
        tmp_path / "ok.py",
        """
        import os
        from os.path import join as _join
        from collections import OrderedDict

        _here = os.path.dirname(__file__)
        pidfile = _join(_here, "m.pid")
        """,
    )
    rows = printed(run_cli("--config", config, "--print-config"))
    assert rows["pidfile"] == (repr(str(tmp_path / "m.pid")), f"file {config}")


def test_a_missing_config_file_is_a_usage_error(tmp_path):
    result = run_cli("--config", tmp_path / "nope.py", "apps:app")
    assert result.returncode == 2 and "option config: no such file" in result.stderr


def test_an_environment_variable_that_is_no_setting_is_named_not_ignored():
    result = run_cli("--print-config", env={"PREFORK_WAITRESS_WORKRS": "2", "PREFORK_WAITRESS_WORKERS": "4"})
    rows = printed(result)
    assert rows["workers"] == ("4", "env PREFORK_WAITRESS_WORKERS")
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert warnings == [
        "prefork-waitress: warning: PREFORK_WAITRESS_WORKRS is not a prefork-waitress setting and is not used "
        "(did you mean PREFORK_WAITRESS_WORKERS?)"
    ]


def test_an_unknown_option_in_prefork_waitress_args_names_the_variable():
    result = run_cli("apps:app", env={"PREFORK_WAITRESS_ARGS": "--frobnicate 3"})
    assert result.returncode == 2
    assert "unknown option --frobnicate" in result.stderr and "PREFORK_WAITRESS_ARGS" in result.stderr


def test_bind_from_a_lower_source_gives_way_to_host_from_a_higher_one(tmp_path):
    config = write(tmp_path / "c.py", "bind = '127.0.0.2:9000'\n")
    rows = printed(run_cli("--config", config, "--host", "127.0.0.3", "--print-config"))
    assert rows["host"] == ("'127.0.0.3'", "cli")
    assert rows["base_port"] == ("9000", f"file {config}, as bind")
