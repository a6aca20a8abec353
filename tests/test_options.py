"""The one option table: conversion and clear errors, for Python values and ini strings."""

import os

import pytest

from prefork_waitress import Master, Worker, make_settings


def test_defaults_and_string_conversion():
    settings = make_settings(workers="4", base_port="9000", preload="yes", graceful_timeout="2.5")
    assert (settings.workers, settings.base_port, settings.preload, settings.graceful_timeout) == (4, 9000, True, 2.5)
    assert make_settings().workers == 3 and make_settings().base_port == 8080


@pytest.mark.parametrize(
    "options, message",
    [
        ({"workers": 0}, "option workers: must be at least 1"),
        ({"workers": "many"}, "option workers: expected a number, got 'many'"),
        ({"workers": True}, "option workers: expected a number"),
        ({"base_port": 70000}, "option base_port: must be at least 0 and at most 65535"),
        ({"base_port": 65535, "workers": 2}, "runs past port 65535"),
        ({"graceful_timeout": 0}, "option graceful_timeout: must be a positive number of seconds"),
        ({"preload": "maybe"}, "option preload: expected true or false, got 'maybe'"),
        ({"threads": 4}, "option threads: must be 1"),
        ({"port": 80}, "option port: set by prefork_waitress itself"),
        ({"no_such_option": 1}, "unknown option 'no_such_option'"),
        ({"channel_timeout": "soon"}, "invalid literal"),
        ({"cpu_affinity": "sometimes"}, "option cpu_affinity"),
        ({"worker_class": "builtins:dict"}, "option worker_class: expected a subclass of prefork_waitress.Worker"),
        ({"max_rss": -1}, "option max_rss: must be at least 0"),
        ({"max_rss": "lots"}, "option max_rss: expected a number, got 'lots'"),
        ({"gc_freeze": "perhaps"}, "option gc_freeze: expected true or false"),
    ],
)
def test_bad_options_name_the_option(options, message):
    with pytest.raises(ValueError) as info:
        make_settings(**options)
    assert message in str(info.value)


def test_waitress_options_pass_through_converted():
    settings = make_settings(channel_timeout="30", threads="1", ident="me")
    assert settings.waitress == {"channel_timeout": 30, "ident": "me"}


def test_cpu_affinity_names_cpus_this_process_cannot_use():
    missing = max(os.sched_getaffinity(0)) + 1
    with pytest.raises(ValueError, match=rf"option cpu_affinity: CPUs \[{missing}\] are not available"):
        make_settings(cpu_affinity=f"0,{missing}")


def test_cpu_affinity_forms():
    assert make_settings(cpu_affinity="auto").cpu_affinity is True
    assert make_settings(cpu_affinity="off").cpu_affinity is False
    assert make_settings(cpu_affinity="0, 1").cpu_affinity == (0, 1)
    assert make_settings(cpu_affinity=[1]).cpu_affinity == (1,)


def test_master_rejects_a_non_app_and_bad_options_before_doing_anything():
    with pytest.raises(TypeError, match="WSGI callable"):
        Master(42)
    with pytest.raises(ValueError, match="option workers"):
        Master("tests.apps:app", workers=-1)
    assert Master("x:y", worker_class=Worker).settings.worker_class is Worker
