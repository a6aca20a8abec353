"""The wire between master and worker: typed messages over a real Pipe, dispatched by type."""

import logging
import multiprocessing

import pytest
from virtual_loop import VirtualLoop

from prefork_waitress._core.commands import CommandChannel
from prefork_waitress._core.dispatch import MessageTable
from prefork_waitress._core.pool import WorkerPool
from prefork_waitress._wire import messages
from prefork_waitress._wire.messages import (
    BootFailed,
    Command,
    Draining,
    Modules,
    Ready,
    Recycle,
    ReforkOrder,
    Reply,
    Retire,
    Warm,
)
from prefork_waitress.options import make_settings

pytestmark = pytest.mark.timeout(20)

SENT = [
    Ready(1234, 1700000000.5),
    BootFailed("ImportError: no module named 'app'", "Traceback ...\n"),
    Reply(7, True, {"rss": 1}),
    Reply(8, False, ("ValueError", "bad", "Traceback ...\n")),
    Draining(),
    Recycle(1000, "served 1000 requests"),
    Warm(50),
    Modules({"app": "/srv/app.py"}, ["/srv/templates/index.html"]),
    Command(9, messages.REFORK, (ReforkOrder(2, 8002, 3, (1,), 0),), {}),
    Retire(),
]


def _send_all(conn):
    for message in SENT:
        conn.send(message)
    conn.close()


def test_every_message_crosses_a_real_pipe_from_a_forked_process_as_its_own_type():
    context = multiprocessing.get_context("fork")
    ours, theirs = context.Pipe(duplex=True)
    child = context.Process(target=_send_all, args=(theirs,))
    child.start()
    theirs.close()
    try:
        received = []
        for _ in SENT:
            assert ours.poll(10), f"the forked process sent only {len(received)} of {len(SENT)} messages"
            received.append(ours.recv())
    finally:
        child.join(10)
        ours.close()
    assert child.exitcode == 0
    assert received == SENT
    assert [type(m) for m in received] == [type(m) for m in SENT]  # equal tuples of another type would pass above
    assert received[0].started_at == 1700000000.5 and received[5].why == "served 1000 requests"
    assert received[8].args[0].port == 8002


class _Slot:
    id = 3


class _Worker:
    slot = _Slot()


def test_the_table_dispatches_by_type_and_defers_what_makes_the_master_act(caplog):
    loop = VirtualLoop()
    table = MessageTable(loop.call_soon)
    seen = []
    table.handle(Reply, lambda worker, reply: seen.append(("reply", reply.seq)))
    table.handle(Warm, lambda worker, warm: seen.append(("warm", warm.served)), deferred=True)
    worker = _Worker()

    table.dispatch(worker, Warm(50))
    table.dispatch(worker, Reply(7, True, None))
    assert seen == [("reply", 7)]  # a fact is recorded where it is read; the deferred one waits for the loop
    loop.run_soon()
    assert seen == [("reply", 7), ("warm", 50)]

    with caplog.at_level(logging.WARNING, logger="prefork_waitress"):
        table.dispatch(worker, ("warm", 50))  # the old positional form is no message any more
        table.dispatch(worker, Draining())  # a type with no handler
    loop.run_soon()
    assert seen == [("reply", 7), ("warm", 50)]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "worker 3 sent an unknown message 'tuple'; ignored",
        "worker 3 sent an unknown message 'Draining'; ignored",
    ]


def test_a_pool_needs_the_workers_entry_point_from_the_master():
    loop = VirtualLoop()
    with pytest.raises(TypeError, match="child_main"):
        WorkerPool(make_settings(base_port=0), loop, CommandChannel(loop), lambda: {}, lambda: [])
