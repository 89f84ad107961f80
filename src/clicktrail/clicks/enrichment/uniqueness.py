"""Is this the visitor's first click on the campaign within the window? Answered from a bounded
per-process memory, without a database round trip.

A visitor is a keyed hash of IP and user agent (`visitor_id`, stored on the click). The memory maps
(campaign, visitor) to the time of the visitor's last *unique* click; a click is unique when there is
none or it is older than the window, and then it starts a new window. The memory holds at most
`capacity` entries and forgets the least recently seen first.

What this trades (docs/visitors.md): each worker process has its own memory, so with N workers a
repeat click that lands on another worker counts as unique again (at most N uniques per visitor per
window), a restart forgets everything, and a visitor evicted from a full memory counts again. Every
click stores `visitor_id`, so an exact count is always one `COUNT(DISTINCT visitor_id)` away.
"""

import hashlib
import threading
from collections import OrderedDict
from datetime import datetime, timedelta


def visitor_id(ip: str | None, user_agent: str | None) -> str:
    """16 hex characters naming a visitor (IP + user agent); the same inputs give the same ID."""
    material = f"{ip or ''}\x00{user_agent or ''}".encode("utf-8", "replace")
    return hashlib.blake2b(material, digest_size=8, person=b"clicktrail-vis").hexdigest()


class UniqueVisitors:
    def __init__(self, window: timedelta, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.window = window
        self.capacity = capacity
        self._last_unique: OrderedDict[tuple[int, str], datetime] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._last_unique)

    def is_unique(self, campaign_id: int, visitor: str, now: datetime) -> bool:
        key = (campaign_id, visitor)
        with self._lock:
            started = self._last_unique.get(key)
            if started is not None and now - started < self.window:
                self._last_unique.move_to_end(key)
                return False
            self._last_unique[key] = now
            self._last_unique.move_to_end(key)
            if len(self._last_unique) > self.capacity:
                self._last_unique.popitem(last=False)
            return True
