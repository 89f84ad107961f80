"""One outbound postback call: judged by the guard, sent to the judged address with timeouts and no
redirects, and described as an AttemptResult whatever happens (httpx errors never leave this module)."""

import time
from dataclasses import dataclass
from enum import StrEnum

import httpx

from clicktrail import __version__
from clicktrail.config import Settings
from clicktrail.delivery.guard import BlockedHost, HostGuard

_BODY_KEPT = 1024
_ERROR_MAX = 500


class AttemptOutcome(StrEnum):
    DELIVERED = "delivered"
    """The receiver answered 2xx."""
    FAILED = "failed"
    """No answer, a timeout, or a non-2xx answer: tried again later."""
    BLOCKED = "blocked"
    """The address is not public and not allowed: not called, and not tried again by itself."""


@dataclass(frozen=True, slots=True)
class AttemptResult:
    url: str
    outcome: AttemptOutcome
    status_code: int | None = None
    latency_ms: int | None = None
    error: str | None = None
    body: str = ""
    """The start of the receiver's answer."""


def _describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, httpx.ReadTimeout):
        return "timed out waiting for the answer"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:_ERROR_MAX] if str(exc) else type(exc).__name__


class PostbackSender:
    def __init__(self, guard: HostGuard, *, connect_timeout: float, read_timeout: float, concurrency: int):
        self._guard = guard
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def from_settings(cls, settings: Settings, guard: HostGuard) -> "PostbackSender":
        return cls(
            guard,
            connect_timeout=settings.delivery_connect_timeout,
            read_timeout=settings.delivery_read_timeout,
            concurrency=settings.delivery_concurrency,
        )

    async def open(self) -> None:
        self._client = httpx.AsyncClient(
            timeout=self._timeout,
            limits=self._limits,
            follow_redirects=False,
            trust_env=False,  # no proxies from the environment: the guard judged the real address
            headers={"user-agent": f"clicktrail/{__version__} (postback)"},
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def send(self, url: str) -> AttemptResult:
        if self._client is None:
            raise RuntimeError("PostbackSender.open() first")
        started = time.monotonic()
        try:
            parsed = httpx.URL(url)
            host = parsed.host
            port = parsed.port or (443 if parsed.scheme == "https" else 80)
            address = await self._guard.resolve(host, port)
        except BlockedHost as exc:
            return AttemptResult(url, AttemptOutcome.BLOCKED, error=exc.reason)
        except (httpx.InvalidURL, UnicodeError) as exc:
            return AttemptResult(url, AttemptOutcome.BLOCKED, error=f"not a usable URL: {exc}")
        except OSError as exc:
            return AttemptResult(url, AttemptOutcome.FAILED, error=f"could not resolve {host}: {exc}")

        # Connect to the judged address, naming the host in the Host header and for TLS (SNI and the
        # certificate check), so a second DNS answer cannot send the request somewhere else.
        extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
        request = self._client.build_request(
            "GET",
            parsed.copy_with(host=address),
            headers={"host": parsed.netloc.decode("ascii")},
            extensions=extensions,
        )
        try:
            response = await self._client.send(request, stream=True)
            try:
                body = b""
                async for chunk in response.aiter_raw():
                    body += chunk
                    if len(body) >= _BODY_KEPT:
                        break
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            latency = round((time.monotonic() - started) * 1000)
            return AttemptResult(url, AttemptOutcome.FAILED, latency_ms=latency, error=_describe(exc))
        latency = round((time.monotonic() - started) * 1000)
        code = response.status_code
        text = body[:_BODY_KEPT].decode("utf-8", errors="replace")
        if 200 <= code < 300:
            return AttemptResult(url, AttemptOutcome.DELIVERED, code, latency, body=text)
        if 300 <= code < 400:
            where = response.headers.get("location", "")[:200]
            error = f"answered {code} (redirect to {where}); redirects are not followed"
        else:
            error = f"answered {code}"
        return AttemptResult(url, AttemptOutcome.FAILED, code, latency, error, text)
