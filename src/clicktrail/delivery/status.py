"""Where a delivery stands: one closed set, shared by the dispatcher, the API and the tests."""

from enum import StrEnum


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    """Queued, or waiting for its next retry (or for its source's circuit breaker)."""
    DELIVERED = "delivered"
    """The receiver answered 2xx."""
    DEAD = "dead"
    """Every attempt of the schedule failed; re-send it by hand."""
    BLOCKED = "blocked"
    """Not sent: the address is not public and not allowed, or the source has no postback URL."""
