"""PostgreSQL round trips that give the event loop back while they wait for the server.

The batch writers run their SQL on the event loop (storage/batch.py: in a thread, every round trip
had the thread take the GIL back from the busy loop). With a blocking driver the loop then stood
still for each round trip: under PostgreSQL postback load 60% of a worker's main-thread samples were
psycopg waiting for an answer (py-spy --idle), while requests queued unread.

`run_cooperatively` runs a plain (synchronous) function in a greenlet on the loop's thread. The
PostgreSQL connections made by `connect` wait for their socket through the loop when they are used
from such a greenlet: the greenlet is suspended, the loop reads and answers other requests, and
the function resumes when the answer is there. The SQL, the SQLAlchemy Core statements and the
transaction code stay synchronous and the same for every caller; used from a thread or outside a
greenlet, the connections wait as any psycopg connection does.
"""

import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from greenlet import getcurrent, greenlet
from psycopg import waiting
from psycopg.abc import PQGen

T = TypeVar("T")


class _OnTheLoop(greenlet):
    """A greenlet started by `run_cooperatively`: its parent is the loop's task that awaits for it."""


def _wait_on_the_loop(current: _OnTheLoop, awaitable: Awaitable[T]) -> T:
    """Suspend `current` (the running greenlet) until its parent, on the loop, has awaited
    `awaitable`; return its result, or raise its error here."""
    parent = current.parent
    assert parent is not None  # a greenlet started by run_cooperatively always has its caller
    return parent.switch(awaitable)  # type: ignore[no-any-return]


async def run_cooperatively(function: Callable[..., T], *args: Any) -> T:
    """`function(*args)`, run on the loop's thread; the loop runs other work while the function's
    PostgreSQL connections wait for the server. Its exceptions propagate as raised."""
    child = _OnTheLoop(function, getcurrent())
    request = child.switch(*args)
    while not child.dead:
        try:
            answer = await request
        except BaseException:
            request = child.throw(*sys.exc_info())
        else:
            request = child.switch(answer)
    return request  # type: ignore[no-any-return]


class CooperativeConnection(psycopg.Connection[Any]):
    """A psycopg connection that, inside `run_cooperatively`, waits for the server through the loop."""

    def wait(self, gen: PQGen[T], interval: float = 0.1, timeout: float | None = None) -> T:
        current = getcurrent()
        if isinstance(current, _OnTheLoop):
            return _wait_on_the_loop(
                current, waiting.wait_async(gen, self.pgconn.socket, interval=interval, timeout=timeout)
            )
        return super().wait(gen, interval, timeout)


def connect(*args: Any, **kwargs: Any) -> CooperativeConnection:
    """psycopg.connect's signature, for SQLAlchemy's `do_connect` hook."""
    return CooperativeConnection.connect(*args, **kwargs)
