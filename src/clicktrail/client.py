"""A small client for merchants' servers: report a conversion to a clicktrail postback URL, with
retries.

    from clicktrail.client import send_postback
    answer = send_postback("https://track.example.com", click_id, event="sale", payout="49.90",
                           currency="EUR", txid="order-1017")
    answer.result   # "accepted", "duplicate", "updated"; or answer.error ("unknown_click", …)

Retried: connection failures, timeouts, 429 and 5xx (the tracker may be restarting or overloaded),
with exponential backoff. Not retried: every other answer, which is final (a duplicate is an answer,
not a failure; a 4xx will not change by asking again). Repeating a postback is safe: the tracker
counts a conversion once per (click_id, event, txid), so always send a txid.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx

from clicktrail.signing import sign

__all__ = ["PostbackAnswer", "PostbackUnreachable", "send_postback"]

_RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


class PostbackUnreachable(Exception):
    """Every attempt failed with a connection error, a timeout, 429 or 5xx; `last` says how."""

    def __init__(self, attempts: int, last: str) -> None:
        super().__init__(f"the postback failed {attempts} times; last: {last}")
        self.attempts = attempts
        self.last = last


@dataclass(frozen=True, slots=True)
class PostbackAnswer:
    status_code: int
    result: str | None
    """accepted, duplicate or updated when the conversion is recorded."""
    conversion_id: str | None
    error: str | None
    """unknown_click, expired, bad_token, bad_amount… when it is refused."""
    detail: str | None
    attempts: int

    @property
    def recorded(self) -> bool:
        return self.result is not None


def send_postback(
    base_url: str,
    click_id: str,
    *,
    event: str = "conversion",
    payout: Decimal | str | None = None,
    currency: str | None = None,
    txid: str | None = None,
    status: str | None = None,
    token: str | None = None,
    secret: str | None = None,
    attempts: int = 4,
    backoff: float = 0.5,
    timeout: float = 10.0,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> PostbackAnswer:
    """POST the conversion to `{base_url}/postback`; retry what may succeed later, `attempts` times in
    all, waiting `backoff`, then twice and four times as long… Raises PostbackUnreachable.

    With the offer's `secret`, every attempt is signed afresh (`ts` and `sig`: docs/postback-auth.md)."""
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    form = {
        name: str(value)
        for name, value in {
            "click_id": click_id,
            "event": event,
            "payout": payout,
            "currency": currency,
            "txid": txid,
            "status": status,
            "token": token,
        }.items()
        if value is not None
    }
    url = base_url.rstrip("/") + "/postback"
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(timeout), follow_redirects=False)
    last = ""
    try:
        for attempt in range(1, attempts + 1):
            try:
                sent = form if secret is None else sign(form, secret, clock())
                response = http.post(url, data=sent)
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code not in _RETRYABLE_STATUS:
                    return _answer(response, attempt)
                last = f"HTTP {response.status_code}"
            if attempt < attempts:
                sleep(backoff * 2 ** (attempt - 1))
    finally:
        if own:
            http.close()
    raise PostbackUnreachable(attempts, last)


def _answer(response: httpx.Response, attempt: int) -> PostbackAnswer:
    try:
        data: Any = response.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}

    def text(name: str) -> str | None:
        value = data.get(name)
        return str(value) if value is not None else None

    return PostbackAnswer(
        status_code=response.status_code,
        result=text("result"),
        conversion_id=text("conversion_id"),
        error=text("error") if "result" not in data else None,
        detail=text("detail"),
        attempts=attempt,
    )
