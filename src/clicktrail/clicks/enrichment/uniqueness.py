"""Is this the visitor's first click on the campaign within the window? Answered from a bounded
memory that every worker of the server shares (storage/shared_table.py), without a database round
trip.

A visitor is a keyed hash of IP and user agent (`visitor_id`, stored on the click). The memory maps
(campaign, visitor) to the time of the visitor's last *unique* click; a click is unique when there is
none or it is older than the window, and then it starts a new window. The memory holds about
`capacity` entries and forgets the least recently seen of a full bucket first.

What this trades (docs/visitors.md): a restart of the server forgets everything (a worker that
dies and is replaced does not: the memory outlives it), and a visitor evicted from a full memory
counts again. Every click stores `visitor_id`, so an exact count is always one
`COUNT(DISTINCT visitor_id)` away.
"""

import hashlib
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path

from clicktrail.storage.shared_table import SharedTable, string_key


def visitor_id(ip: str | None, user_agent: str | None) -> str:
    """16 hex characters naming a visitor (IP + user agent); the same inputs give the same ID."""
    material = f"{ip or ''}\x00{user_agent or ''}".encode("utf-8", "replace")
    return hashlib.blake2b(material, digest_size=8, person=b"clicktrail-vis").hexdigest()


class UniqueVisitors:
    def __init__(self, window: timedelta, capacity: int, shared_dir: Path | None = None) -> None:
        """`shared_dir`: where the server's workers share the memory; None keeps it in this process."""
        self.window = window
        self.capacity = capacity
        self._window_seconds = window.total_seconds()
        self._table = SharedTable.open(shared_dir, "unique-visitors", capacity)

    def __len__(self) -> int:
        return len(self._table)

    def is_unique(self, campaign_id: int, visitor: str, now: datetime) -> bool:
        moment = now.timestamp()
        return self._table.update(_key(campaign_id, visitor), moment, partial(self._judge, moment))

    def _judge(self, moment: float, started: float | None, _seen: float) -> tuple[float, bool]:
        if started is not None and moment - started < self._window_seconds:
            return started, False  # the window goes on from its unique click
        return moment, True


def _key(campaign_id: int, visitor: str) -> int:
    try:
        hashed = int(visitor, 16)  # our visitor IDs are 64-bit hashes already
    except ValueError:
        hashed = string_key(visitor)
    return hashed ^ (campaign_id * _MIX)


_MIX = 0x9E3779B97F4A7C15  # spreads campaign IDs over all 64 bits (Fibonacci hashing's constant)
