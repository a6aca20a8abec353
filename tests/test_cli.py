"""The command line, run for real: python -m prefork_waitress [options] MODULE:APP."""

import os
import signal
import socket

import pytest
from clitools import run_cli
from conftest import free_port, free_ports, get, pid_alive, wait_until

from prefork_waitress._run import cli as _cli
from prefork_waitress.options import OPTIONS


def test_parser_has_one_flag_per_option_of_the_table():
    parser = _cli.build_parser()
    flags = {flag for action in parser._actions for flag in action.option_strings}
    for option in OPTIONS:
        assert (option.flag in flags) == option.cli
    assert {"--pid", "--call", "--log-level", "--channel-timeout", "--no-expose-tracebacks"} <= flags


def test_parse_keeps_strings_for_the_option_table_and_names_waitress_options():
    app, options, runner = _cli.parse(
        _cli.build_parser(),
        ["--workers", "4", "--pid", "x.pid", "--preload", "--channel-timeout=30", "--call", "--log-level=debug", "m:f"],
    )
    assert app == "m:f()"
    assert options == {"workers": "4", "pidfile": "x.pid", "preload": "true", "channel_timeout": "30"}
    assert runner == {
        "call": True, "log_level": "DEBUG", "bind": None, "chdir": None, "pythonpath": None,
        "config": None, "print_config": False, "log_format": "text", "check_config": False,
    }  # fmt: skip


def test_a_bool_option_that_defaults_to_true_has_a_no_flag():
    app, options, runner = _cli.parse(_cli.build_parser(), ["--preload", "--no-gc-freeze", "--max-rss", "300", "m:f"])
    assert options == {"preload": "true", "gc_freeze": "false", "max_rss": "300"}
    assert _cli.parse(_cli.build_parser(), ["--gc-freeze", "m:f"])[1] == {"gc_freeze": "true"}


def test_serves_every_worker_and_exits_zero_after_sigterm(server, tmp_path):
    sock, pidfile = tmp_path / "ctl.sock", tmp_path / "master.pid"
    s = server("--workers", 2, "--base-port", 0, "--control-socket", sock, "--pid", pidfile, "apps:app")
    status = s.status(sock)
    assert pidfile.read_text().strip() == str(s.proc.pid)
    assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    for worker in status["workers"]:
        assert get(worker["port"])[1] == f"{worker['pid']} {worker['port']}"
    s.signal(signal.SIGTERM)
    assert s.wait() == 0
    assert not sock.exists() and not pidfile.exists()
    assert not any(pid_alive(w["pid"]) for w in status["workers"])


def test_current_directory_is_importable_and_call_makes_the_app(server, tmp_path):
    (tmp_path / "localapp.py").write_text("from apps import make_app\n")
    sock = tmp_path / "ctl.sock"
    s = server("--workers", 1, "--base-port", 0, "--control-socket", sock, "--call", "localapp:make_app")
    worker = s.status(sock)["workers"][0]
    assert get(worker["port"])[1] == f"made {worker['pid']}"


def test_signals_reload_grow_shrink(server, tmp_path):
    sock = tmp_path / "ctl.sock"
    s = server("--workers", 2, "--base-port", 0, "--control-socket", sock, "apps:app")
    first = s.status(sock)
    s.signal(signal.SIGHUP)
    reloaded = wait_until(
        lambda: (st := s.status(sock)) and all(w["generation"] == 2 for w in st["workers"]) and st,
        message="every slot at generation 2",
    )
    assert {w["pid"] for w in reloaded["workers"]}.isdisjoint(w["pid"] for w in first["workers"])
    s.signal(signal.SIGTTIN)
    grown = wait_until(lambda: len(s.status(sock)["workers"]) == 3 and s.status(sock), message="3 workers")
    assert get(grown["workers"][2]["port"])[0] == 200
    s.signal(signal.SIGTTOU)
    wait_until(lambda: len(s.status(sock)["workers"]) == 2, message="back to 2 workers")


def test_usr1_reopens_the_output_file_in_master_and_workers(server, tmp_path):
    sock, output = tmp_path / "ctl.sock", tmp_path / "out.log"
    s = server("--workers", 1, "--base-port", 0, "--control-socket", sock, "--output", output, "apps:app")
    port = s.status(sock)["workers"][0]["port"]
    get(port, "/print")
    wait_until(lambda: "printed by" in output.read_text(), message="worker output in the file")
    assert "all 1 workers serving" in output.read_text()  # the master logs there too
    os.rename(output, tmp_path / "out.log.1")
    s.signal(signal.SIGUSR1)
    wait_until(lambda: output.exists() and "reopened" in output.read_text(), message="the master reopened")
    # The workers reopen on a command sent after the master's own reopen: until they answer, a worker
    # still writes to the renamed file.
    wait_until(lambda: "every worker reopened its files (1)" in output.read_text(), message="the workers' answer")
    get(port, "/print")
    wait_until(lambda: "printed by" in output.read_text(), message="the worker reopened")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--workers=x", "apps:app"], 2, "option workers: expected a number, got 'x'"),
        (["--workers=0", "apps:app"], 2, "option workers: must be at least 1"),
        (["--bogus=1", "apps:app"], 2, "unknown option --bogus: not a prefork-waitress or waitress option"),
        (["--bogus", "apps:app"], 2, "unknown option --bogus"),
        (["--frobnicate", "3", "apps:app"], 2, "unknown option --frobnicate"),
        (
            ["--worker", "3", "apps:app"],
            2,
            "unknown option --worker: not a prefork-waitress or waitress option (did you mean --workers?)",
        ),
        (["--threads=4", "apps:app"], 2, "option threads: must be 1"),
        (["--channel-timeout=soon", "apps:app"], 2, "option channel_timeout"),
        (["--log-level=loud", "apps:app"], 2, "option log_level"),
        ([], 2, "MODULE:APP"),
        (["apps:nope"], 1, "module 'apps' has no attribute 'nope'"),
        (["no_such_module:app"], 1, "no module named 'no_such_module'"),
        (["apps:GreetCommands.__doc__"], 1, "is not callable"),
        (["--preload", "apps:nope"], 1, "has no attribute 'nope'"),
    ],
)
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, args, code, message):
    result = run_cli("--base-port", 0, *args, cwd=tmp_path)
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("preload", [[], ["--preload"]])
def test_app_raising_at_import_shows_only_its_own_frames(tmp_path, preload):
    (tmp_path / "broken.py").write_text("x = 1\nraise ValueError('broken on purpose')\n")
    result = run_cli("--base-port", 0, *preload, "broken:app", cwd=tmp_path)
    assert result.returncode == 1
    assert "broken.py" in result.stderr and "ValueError: broken on purpose" in result.stderr
    frames = [line for line in result.stderr.splitlines() if line.startswith("  File ")]
    assert frames and not [line for line in frames if "prefork_waitress" in line], result.stderr


def test_busy_port_and_live_pid_file_are_one_line_errors(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        result = run_cli("--workers", 1, "--base-port", busy.getsockname()[1], "apps:app", cwd=tmp_path)
    assert result.returncode == 1 and "address already in use" in result.stderr
    assert "Traceback" not in result.stderr
    pidfile = tmp_path / "live.pid"
    pidfile.write_text(f"{os.getpid()}\n")
    result = run_cli("--base-port", free_port(), "--workers", 1, "--pid", pidfile, "apps:app", cwd=tmp_path)
    assert result.returncode == 1 and "which is running" in result.stderr
    assert "Traceback" not in result.stderr


def test_boot_error_is_reported_and_exits_one(tmp_path):
    result = run_cli("--workers", 1, "--base-port", 0, "--worker-class", "apps:FailingStartWorker", "apps:app")
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1].startswith("prefork-waitress: error: the app could not start")


def test_version_comes_from_the_package():
    import prefork_waitress

    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"prefork-waitress {prefork_waitress.__version__}"


def test_bind_chdir_pythonpath_and_process_names(server, tmp_path):
    site, lib = tmp_path / "site", tmp_path / "lib"
    site.mkdir()
    lib.mkdir()
    (lib / "libapp.py").write_text("from apps import app\n")
    port = free_ports(2)
    s = server(
        "--bind", f"127.0.0.1:{port}", "--workers", 2, "--chdir", site, "--pythonpath", "../lib",
        "--control-socket", "ctl.sock", "--pid", "master.pid", "libapp:app",
    )  # fmt: skip
    status = s.status(site / "ctl.sock")  # relative paths start in the --chdir directory
    assert (site / "master.pid").exists()
    assert [w["port"] for w in status["workers"]] == [port, port + 1]
    assert get(port)[0] == 200
    with open(f"/proc/{s.proc.pid}/comm") as f:
        assert f.read().strip() == "pw-master"
    for worker in status["workers"]:
        with open(f"/proc/{worker['pid']}/comm") as f:
            assert f.read().strip() == f"pw-slot-{worker['id']}"
        with open(f"/proc/{worker['pid']}/cmdline", "rb") as f:
            shown = f.read().rstrip(b"\0").decode()
        assert shown == f"prefork-waitress worker: slot {worker['id']}, port {worker['port']}"


def test_bind_with_host_is_a_usage_error():
    result = run_cli("--bind", "127.0.0.1:8080", "--host", "0.0.0.0", "apps:app")
    assert result.returncode == 2
    assert "give either --bind or --host/--base-port" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bind", "8080", "apps:app"], "option bind: expected HOST:PORT"),
        (["--bind", "127.0.0.1:99999", "apps:app"], "option bind: must be at least 0 and at most 65535"),
        (["--chdir", "/no/such/dir", "apps:app"], "option chdir: no such directory: /no/such/dir"),
    ],
)
def test_bad_program_options_are_usage_errors(args, message):
    result = run_cli(*args)
    assert result.returncode == 2
    assert message in result.stderr


def test_preload_start_says_nothing_was_reloaded_and_a_junk_pid_file_is_named(server, tmp_path):
    sock, pidfile = tmp_path / "ctl.sock", tmp_path / "master.pid"
    pidfile.write_text("not a pid\n")
    s = server("--workers", 1, "--base-port", 0, "--preload", "--control-socket", sock, "--pid", pidfile, "apps:app")
    s.status(sock)
    assert pidfile.read_text().strip() == str(s.proc.pid)
    assert f"pid file {pidfile} does not hold a process id; replacing it" in s.log()
    assert "reloaded modules" not in s.log()
