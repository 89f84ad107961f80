"""Telling dispatchers that jobs were queued, so the first attempt follows the conversion's commit at
once instead of at the next poll.

`QueuedBell.ring()` is called after a commit that queued outbound postbacks (the intake's
`delivery_queued` hook, from any thread). It wakes this process's dispatcher directly and, on
PostgreSQL, sends `NOTIFY clicktrail_delivery` so the dispatchers of other workers and nodes (which
`LISTEN` on their own connection) wake too; an API-only node (CLICKTRAIL_DELIVERY_ENABLED=false)
rings as well. Notifications are coalesced: at most one is in flight per process and they are at least
`_NOTIFY_EVERY` apart, so a burst of conversions costs a handful of NOTIFYs, not one each. A process
that delivers too (its own dispatcher is woken directly, at once) waits `_NOTIFY_EVERY_DELIVERING`
between two: the others only help with what it cannot send, and every notification costs each
listening process a wake-up. At 100 a second per worker a PostgreSQL postback cost the server
345 µs of CPU, at 10 a second 315 µs (scripts/cpu_per_request.py; BENCHMARKS.md, "Fewer
notifications from processes that deliver").

A ring names the sources the jobs are for (the payload lists them after the process's token), so a
dispatcher that knows all of them to be paused by their breakers need not look: in a burst of
conversions for a source that is down, every commit woke every dispatcher to claim nothing
(BENCHMARKS.md, "Wake-ups for paused sources").

The NOTIFY is sent after the commit, not inside the conversion's transaction: PostgreSQL serialises
the commits of transactions that notified, which the postback path should not pay for. A process
that dies between its commit and its NOTIFY costs the job no more than one poll interval; a listener
that lost its connection reconnects and wakes its dispatcher, which then claims whatever is due.
SQLite has no such channel: a process wakes its own dispatcher, the others poll.
"""

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy.engine import URL

from clicktrail.storage.database import Database

if TYPE_CHECKING:  # psycopg is imported only where PostgreSQL is used: ~8 MB a worker on SQLite
    import psycopg
    from psycopg.rows import TupleRow

log = logging.getLogger(__name__)

CHANNEL = "clicktrail_delivery"
# How the two connections appear in pg_stat_activity, for an operator (or a test) to find them.
LISTENER_NAME = "clicktrail delivery listener"
NOTIFIER_NAME = "clicktrail delivery notifier"
_NOTIFY_EVERY = 0.01
"""Seconds between two NOTIFYs of a process that does not deliver (an API-only node): remote
dispatchers gather a burst for longer anyway."""
_NOTIFY_EVERY_DELIVERING = 0.1
"""The same for a process whose own dispatcher delivers (and was woken at once)."""
_MOST_LISTED = 4000
"""Characters of source IDs in one payload (PostgreSQL takes up to 8,000 bytes); more: "any source"."""
_RECONNECT_SECONDS = 1.0
_LIVENESS_SECONDS = 30.0
"""How long a listener waits for a notification before checking its connection."""


def _conninfo(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class QueuedBell:
    def __init__(self, database: Database, *, listen: bool) -> None:
        self._conninfo = None if database.is_sqlite else _conninfo(database.engine.url)
        self._listen = listen
        self._notify_every = _NOTIFY_EVERY_DELIVERING if listen else _NOTIFY_EVERY
        self._me = secrets.token_hex(8)
        """Starts our notifications' payload: the listener skips its own process's (woken directly)."""
        self._subscribers: list[Callable[[frozenset[int] | None], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._notifier: asyncio.Task[None] | None = None
        self._unannounced: set[int] = set()
        """Sources rung for since the last NOTIFY went out."""
        self._notify_connection: psycopg.AsyncConnection[TupleRow] | None = None
        self._listener: asyncio.Task[None] | None = None

    def subscribe(self, wake: Callable[[frozenset[int] | None], None]) -> None:
        """Call `wake(sources)` (on the event loop) whenever jobs were queued, here or, on PostgreSQL,
        anywhere; `sources` are the sources they are for, or None when that is not known."""
        self._subscribers.append(wake)

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        if self._conninfo is not None and self._listen:
            self._listener = asyncio.create_task(self._keep_listening(), name="delivery-listener")

    def ring(self, sources: frozenset[int]) -> None:
        """Jobs for `sources` were just committed to the outbox. Safe to call from any thread; never
        blocks."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: we are stopping
                loop.call_soon_threadsafe(self._rung, sources)

    def _rung(self, sources: frozenset[int]) -> None:
        self._wake_subscribers(sources)
        if self._conninfo is None:
            return
        self._unannounced |= sources
        if self._notifier is None or self._notifier.done():
            self._notifier = asyncio.create_task(self._notify(), name="delivery-notify")

    def _wake_subscribers(self, sources: frozenset[int] | None) -> None:
        for wake in self._subscribers:
            wake(sources)

    def _payload(self) -> str:
        """Our token, then the sources rung for since the last NOTIFY (taken): "token 3,7"."""
        sources, self._unannounced = self._unannounced, set()
        listed = ",".join(str(source) for source in sorted(sources))
        return f"{self._me} {listed}" if len(listed) <= _MOST_LISTED else self._me  # too many: any source

    def _heard(self, payload: str) -> None:
        """Another process's NOTIFY: wake for the sources it lists (any source, if it lists none we
        can read)."""
        sender, _, listed = payload.partition(" ")
        if sender == self._me:
            return  # our own: this process's dispatcher was woken directly
        sources: frozenset[int] | None = None
        with contextlib.suppress(ValueError):
            sources = frozenset(int(source) for source in listed.split(",")) if listed else None
        self._wake_subscribers(sources)

    async def _notify(self) -> None:
        import psycopg

        assert self._conninfo is not None
        while True:
            try:
                if self._notify_connection is None or self._notify_connection.closed:
                    self._notify_connection = await psycopg.AsyncConnection.connect(
                        self._conninfo, autocommit=True, application_name=NOTIFIER_NAME
                    )
                await self._notify_connection.execute("SELECT pg_notify(%s, %s)", (CHANNEL, self._payload()))
            except psycopg.Error as exc:
                # Other dispatchers find the job at their next poll: late, not lost.
                log.warning("could not notify other dispatchers of queued deliveries: %s", exc)
                await self._close_notify_connection()
                return
            await asyncio.sleep(self._notify_every)
            if not self._unannounced:
                return

    async def _keep_listening(self) -> None:
        import psycopg

        assert self._conninfo is not None
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, application_name=LISTENER_NAME
                ) as listening:
                    await listening.execute(f"LISTEN {CHANNEL}")
                    # Jobs may have been queued while we were not listening: look now.
                    self._wake_subscribers(None)
                    while True:
                        async for notification in listening.notifies(timeout=_LIVENESS_SECONDS):
                            self._heard(notification.payload)
                        await listening.execute("SELECT 1")  # a dead connection raises here
            except psycopg.Error as exc:
                log.warning("lost the delivery notification channel (%s); polling until it is back", exc)
                await asyncio.sleep(_RECONNECT_SECONDS)

    async def _close_notify_connection(self) -> None:
        connection, self._notify_connection = self._notify_connection, None
        if connection is not None:
            import psycopg

            with contextlib.suppress(psycopg.Error):
                await connection.close()

    async def stop(self) -> None:
        for task in (self._listener, self._notifier):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._listener = self._notifier = None
        await self._close_notify_connection()
        self._loop = None
