"""PostgreSQL round trips that give the event loop back while they wait for the server.

The batch writers run their SQL on the event loop (storage/batch.py: in a thread, every round trip
had the thread take the GIL back from the busy loop). With a blocking driver the loop then stood
still for each round trip: under PostgreSQL postback load 60% of a worker's main-thread samples were
psycopg waiting for an answer (py-spy --idle), while requests queued unread.

`run_cooperatively` runs a plain (synchronous) function in a greenlet on the loop's thread. The
PostgreSQL connections made by `connect`, used from such a greenlet, wait for their socket a little
while as usual (`_BLOCKING_WAIT_MS`), and past that through the loop: the greenlet is suspended,
the loop reads and answers other requests, and the function resumes when the answer is there. The
SQL, the SQLAlchemy Core statements and the transaction code stay synchronous and the same for
every caller; used from a thread or outside a greenlet, the connections wait as any psycopg
connection does.
"""

import asyncio
import select
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
from greenlet import getcurrent, greenlet
from psycopg.abc import PQGen
from psycopg.waiting import Ready, Wait

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


_BLOCKING_WAIT_MS = 3
"""How long a wait holds the loop before it gives the loop back. Every wait through the loop cost a
closed-loop postback run a quarter of its rate: the free loop read and parsed other requests while
the answer was already there, and the batch every one of them waits for resumed only after them.
Most of a batch's round trips end within a few milliseconds; a longer wait (a locked row, a slow
commit, a stalled server) no longer stops the worker. Measured at 1 and 3 ms: BENCHMARKS.md,
"Session of 2026-12-06 (08:47 UTC)"."""


class CooperativeConnection(psycopg.Connection[Any]):
    """A psycopg connection that, inside `run_cooperatively`, waits for a slow answer through the loop
    (the waits of psycopg's own generators, driven as its `wait` drives them)."""

    def wait(self, gen: PQGen[T], interval: float = 0.1, timeout: float | None = None) -> T:
        current = getcurrent()
        if not isinstance(current, _OnTheLoop) or timeout is not None:
            return super().wait(gen, interval, timeout)
        fileno = self.pgconn.socket
        try:
            state = next(gen)
            while True:
                ready = _ready_within(fileno, state, _BLOCKING_WAIT_MS)
                if ready == Ready.NONE:
                    ready = _wait_on_the_loop(current, _ready_on_the_loop(fileno, state, interval))
                state = gen.send(ready)
        except StopIteration as done:
            result: T = done.value
            return result


def _ready_within(fileno: int, state: Wait, milliseconds: int) -> Ready:
    """What `fileno` is ready for of `state`, waiting up to `milliseconds` (blocking); a socket that
    failed or hung up raises OperationalError, as psycopg's own poll-based wait does."""
    poller = select.poll()
    poller.register(
        fileno, (select.POLLIN if state & Wait.R else 0) | (select.POLLOUT if state & Wait.W else 0)
    )
    ready = 0
    for _, events in poller.poll(milliseconds):
        if events & select.POLLIN:
            ready |= Ready.R
        if events & select.POLLOUT:
            ready |= Ready.W
        if not ready and events & ~(select.POLLIN | select.POLLOUT):
            raise psycopg.OperationalError("connection socket closed")
    return Ready(ready)


async def _ready_on_the_loop(fileno: int, state: Wait, interval: float) -> Ready:
    """What `fileno` is ready for of `state`, waiting on the loop; NONE after `interval` (psycopg's
    generators then look again, as with its own waits)."""
    loop = asyncio.get_running_loop()
    woken = loop.create_future()
    ready = 0

    def wake(flag: Ready) -> None:
        nonlocal ready
        ready |= flag
        give_up()

    def give_up() -> None:
        if not woken.done():
            woken.set_result(None)

    if state & Wait.R:
        loop.add_reader(fileno, wake, Ready.R)
    if state & Wait.W:
        loop.add_writer(fileno, wake, Ready.W)
    timer = loop.call_later(interval, give_up)
    try:
        await woken
    finally:
        timer.cancel()
        if state & Wait.R:
            loop.remove_reader(fileno)
        if state & Wait.W:
            loop.remove_writer(fileno)
    return Ready(ready)


def connect(*args: Any, **kwargs: Any) -> CooperativeConnection:
    """psycopg.connect's signature, for SQLAlchemy's `do_connect` hook."""
    return CooperativeConnection.connect(*args, **kwargs)
