"""Helpers for the outbound postback tests: a delivering server's settings and the steps a user takes."""

import time
from collections.abc import Callable
from typing import Any, TypeVar

from tests.support import Tracker

T = TypeVar("T")

# A short schedule so retries and the dead letter take a second, not a day: attempts at 0, +0.2, +0.4 s.
DELIVERY_ENV = {
    "CLICKTRAIL_DELIVERY_ALLOW_HOSTS": "127.0.0.1",
    "CLICKTRAIL_DELIVERY_POLL_SECONDS": "5",  # long on purpose: queued jobs wake the dispatcher at once
    "CLICKTRAIL_DELIVERY_RETRY_FIRST_SECONDS": "0.2",
    "CLICKTRAIL_DELIVERY_RETRY_MAX_INTERVAL_SECONDS": "0.4",
    "CLICKTRAIL_DELIVERY_MAX_ATTEMPTS": "3",
    "CLICKTRAIL_DELIVERY_CONNECT_TIMEOUT": "0.5",
    "CLICKTRAIL_DELIVERY_READ_TIMEOUT": "0.5",
    "CLICKTRAIL_DELIVERY_LEASE_SECONDS": "2",
    "CLICKTRAIL_DELIVERY_BREAKER_FAILURES": "3",
    "CLICKTRAIL_DELIVERY_BREAKER_COOLDOWN_SECONDS": "1.5",
}
TEMPLATE = "/pb?conversion={conversion_id}&click={click_id}&status={status}&event={event}&payout={payout}"


def wait_until(probe: Callable[[], T | None], timeout: float = 8, what: str = "the condition") -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout}s")


def affiliate(tracker: Tracker, url: str, **fields: Any) -> tuple[dict[str, Any], str]:
    """A source with a postback URL and a campaign sending its traffic; returns (source, tracking key)."""
    source = tracker.create("sources", name="Partner", postback_url=url, **fields)
    offer = tracker.create("offers", name="Offer", url="https://m.example/?cid={click_id}", payout="4.00")
    campaign = tracker.create("campaigns", name="Camp", source_id=source["id"], offer_id=offer["id"])
    return source, campaign["key"]


def convert(tracker: Tracker, key: str, *, click_id: str | None = None, **params: str) -> str:
    click_id = click_id or tracker.click(key)
    response = tracker.postback(click_id=click_id, **params)
    assert response.status_code == 200, response.text
    return str(response.json()["conversion_id"])


def deliveries_of(tracker: Tracker, **filters: Any) -> list[dict[str, Any]]:
    response = tracker.api("GET", "/deliveries", params=filters)
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def settled(tracker: Tracker, conversion_id: str, source_id: int) -> dict[str, Any] | None:
    """The conversion's delivery once it is no longer pending."""
    found = [d for d in deliveries_of(tracker, source_id=source_id) if d["conversion_id"] == conversion_id]
    return found[0] if found and found[0]["status"] != "pending" else None
