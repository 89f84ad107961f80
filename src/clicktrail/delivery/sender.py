"""One outbound postback call: judged by the guard, sent to the judged address with timeouts and no
redirects, and described as an AttemptResult whatever happens (client errors never leave this module).

HTTPS receivers must present a certificate valid for the template's host name (sent as SNI), signed by
a public CA or by one in CLICKTRAIL_DELIVERY_CA_FILE: a postback carries revenue and IDs, so there is no
switch to skip the check; a self-signed receiver is trusted by adding its certificate to that file.

The client is aiohttp: measured here against a local receiver, ~180 µs of CPU per postback where httpx
took ~1,400 µs, which capped delivery near 350/s on these two cores (BENCHMARKS.md, "Delivery lag").
"""

import socket
import ssl
import time
from dataclasses import dataclass
from enum import StrEnum

import aiohttp
import certifi
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from clicktrail import __version__
from clicktrail.config import Settings
from clicktrail.delivery.guard import BlockedHost, HostGuard, is_address

_BODY_KEPT = 1024
_ERROR_MAX = 500


class AttemptOutcome(StrEnum):
    DELIVERED = "delivered"
    """The receiver answered 2xx."""
    FAILED = "failed"
    """No answer, a timeout, a 3xx, a 5xx or a 408/425/429: tried again later."""
    REJECTED = "rejected"
    """Any other 4xx: the receiver refused this postback and would refuse it again, so it is not tried
    again by itself (it can be re-sent by hand)."""
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


RETRIED_4XX = frozenset({408, 425, 429})
"""Client errors that say "not now" (request timeout, too early, too many requests) rather than "no"."""


def outcome_of(status_code: int) -> AttemptOutcome:
    """What an answer means: 2xx delivered; 4xx refused for good, except the "not now" ones; the rest
    (3xx, since redirects are not followed, and 5xx) failed for now."""
    if 200 <= status_code < 300:
        return AttemptOutcome.DELIVERED
    if 400 <= status_code < 500 and status_code not in RETRIED_4XX:
        return AttemptOutcome.REJECTED
    return AttemptOutcome.FAILED


def trusted_context(ca_file: str | None) -> ssl.SSLContext:
    """The public CAs, plus the certificates in `ca_file` (PEM) when given."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def _certificate_problem(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, aiohttp.ClientConnectorCertificateError):
            seen = seen.certificate_error  # the ssl module's own error, with its verify_message
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: Exception) -> str:
    if (refused := _certificate_problem(exc)) is not None:
        return (
            f"TLS certificate not accepted: {refused.verify_message}; "
            "trust a private or self-signed one with CLICKTRAIL_DELIVERY_CA_FILE"
        )
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return "timed out connecting"
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return "timed out waiting for the answer"
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"could not connect: {exc.os_error.strerror or exc.os_error}"[:_ERROR_MAX]
    return f"{type(exc).__name__}: {exc}"[:_ERROR_MAX] if str(exc) else type(exc).__name__


class _GuardedResolver(AbstractResolver):
    """Every new connection goes to an address the guard has just judged: the client asks us, not
    DNS, where a host name is. A pooled connection was judged when it was made."""

    def __init__(self, guard: HostGuard) -> None:
        self._guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = await self._guard.resolve(host, port)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [{"hostname": host, "host": address, "port": port, "family": family, "proto": 0, "flags": 0}]

    async def close(self) -> None:
        pass


class PostbackSender:
    def __init__(
        self,
        guard: HostGuard,
        *,
        connect_timeout: float,
        read_timeout: float,
        concurrency: int,
        ca_file: str | None = None,
    ):
        self._guard = guard
        self._tls = trusted_context(ca_file)
        # An attempt never takes longer than both together (the dispatcher relies on it to keep within
        # its lease); connect covers waiting for a pooled connection too.
        self._timeout = aiohttp.ClientTimeout(
            total=connect_timeout + read_timeout,
            connect=connect_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: Settings, guard: HostGuard) -> "PostbackSender":
        return cls(
            guard,
            connect_timeout=settings.delivery_connect_timeout,
            read_timeout=settings.delivery_read_timeout,
            concurrency=settings.delivery_concurrency,
            ca_file=settings.delivery_ca_file,
        )

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._concurrency,
            ssl=self._tls,
            resolver=_GuardedResolver(self._guard),
            use_dns_cache=False,  # judged afresh for every new connection
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            trust_env=False,  # no proxies from the environment: the guard judged the real address
            headers={"user-agent": f"clicktrail/{__version__} (postback)"},
            auto_decompress=False,
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def send(self, url: str) -> AttemptResult:
        if self._session is None:
            raise RuntimeError("PostbackSender.open() first")
        started = time.monotonic()
        try:
            # Sent as filled: macro values are percent-encoded (`%2F` must stay `%2F`), and a template
            # with spaces or non-ASCII characters is refused when it is saved.
            parsed = URL(url, encoded=True)
            host = parsed.raw_host or ""
            if parsed.scheme not in ("http", "https") or not host:
                raise ValueError("only http:// and https:// URLs with a host can be called")
            # The client never asks the resolver about a literal address: judge it here.
            if is_address(host) and (problem := self._guard.judge(host, ())) is not None:
                raise BlockedHost(problem)
        except BlockedHost as exc:
            return AttemptResult(url, AttemptOutcome.BLOCKED, error=exc.reason)
        except (ValueError, UnicodeError) as exc:
            return AttemptResult(url, AttemptOutcome.BLOCKED, error=f"not a usable URL: {exc}")

        try:
            async with self._session.get(parsed, allow_redirects=False) as response:
                body = b""
                while len(body) < _BODY_KEPT and (chunk := await response.content.read(_BODY_KEPT)):
                    body += chunk
                code = response.status
                location = response.headers.get("location", "")
        except BlockedHost as exc:
            return AttemptResult(url, AttemptOutcome.BLOCKED, error=exc.reason)
        except aiohttp.InvalidURL as exc:
            return AttemptResult(url, AttemptOutcome.BLOCKED, error=f"not a usable URL: {exc}")
        except aiohttp.ClientConnectorDNSError as exc:
            error = f"could not resolve {host}: {exc.os_error}"
            return AttemptResult(url, AttemptOutcome.FAILED, error=error)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            latency = round((time.monotonic() - started) * 1000)
            return AttemptResult(url, AttemptOutcome.FAILED, latency_ms=latency, error=_describe(exc))
        latency = round((time.monotonic() - started) * 1000)
        text = body[:_BODY_KEPT].decode("utf-8", errors="replace")
        outcome = outcome_of(code)
        if outcome is AttemptOutcome.DELIVERED:
            return AttemptResult(url, outcome, code, latency, body=text)
        if 300 <= code < 400:
            error = f"answered {code} (redirect to {location[:200]}); redirects are not followed"
        elif outcome is AttemptOutcome.REJECTED:
            error = f"answered {code}: refused, not retried"
        else:
            error = f"answered {code}"
        return AttemptResult(url, outcome, code, latency, error, text)
