"""One outbound postback call: judged by the guard, sent to the judged address with timeouts and no
redirects, and described as an AttemptResult whatever happens (httpx errors never leave this module).

HTTPS receivers must present a certificate valid for the template's host name (sent as SNI), signed by
a public CA or by one in CLICKTRAIL_DELIVERY_CA_FILE: a postback carries revenue and IDs, so there is no
switch to skip the check; a self-signed receiver is trusted by adding its certificate to that file.
"""

import itertools
import ssl
import time
from dataclasses import dataclass
from enum import StrEnum

import httpx

from clicktrail import __version__
from clicktrail.config import Settings
from clicktrail.delivery.guard import BlockedHost, HostGuard

_BODY_KEPT = 1024
_CLIENT_CONNECTIONS = 8
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
    context = httpx.create_ssl_context(trust_env=False)
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def _certificate_problem(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _describe(exc: httpx.HTTPError) -> str:
    if (refused := _certificate_problem(exc)) is not None:
        return (
            f"TLS certificate not accepted: {refused.verify_message}; "
            "trust a private or self-signed one with CLICKTRAIL_DELIVERY_CA_FILE"
        )
    if isinstance(exc, httpx.ConnectTimeout):
        return "timed out connecting"
    if isinstance(exc, httpx.ReadTimeout):
        return "timed out waiting for the answer"
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    return f"{type(exc).__name__}: {exc}"[:_ERROR_MAX] if str(exc) else type(exc).__name__


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
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._concurrency = concurrency
        self._clients: list[httpx.AsyncClient] = []
        self._turn = itertools.count()

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
        # Several small clients used in turn rather than one big one: httpcore's pool rescans all its
        # connections (a syscall each, and quadratically) at every request event; measured with one
        # client of 64 connections, that cost ~15 ms of CPU per postback and capped delivery near
        # 30/s on this machine. Together the clients hold `concurrency` connections, as one would.
        sizes = [_CLIENT_CONNECTIONS] * (self._concurrency // _CLIENT_CONNECTIONS)
        if self._concurrency % _CLIENT_CONNECTIONS:
            sizes.append(self._concurrency % _CLIENT_CONNECTIONS)
        self._clients = [
            httpx.AsyncClient(
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
                follow_redirects=False,
                verify=self._tls,
                trust_env=False,  # no proxies from the environment: the guard judged the real address
                headers={"user-agent": f"clicktrail/{__version__} (postback)"},
            )
            for size in sizes
        ]

    async def close(self) -> None:
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()

    async def send(self, url: str) -> AttemptResult:
        if not self._clients:
            raise RuntimeError("PostbackSender.open() first")
        client = self._clients[next(self._turn) % len(self._clients)]
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
        request = client.build_request(
            "GET",
            parsed.copy_with(host=address),
            headers={"host": parsed.netloc.decode("ascii")},
            extensions=extensions,
        )
        try:
            response = await client.send(request, stream=True)
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
        outcome = outcome_of(code)
        if outcome is AttemptOutcome.DELIVERED:
            return AttemptResult(url, outcome, code, latency, body=text)
        if 300 <= code < 400:
            where = response.headers.get("location", "")[:200]
            error = f"answered {code} (redirect to {where}); redirects are not followed"
        elif outcome is AttemptOutcome.REJECTED:
            error = f"answered {code}: refused, not retried"
        else:
            error = f"answered {code}"
        return AttemptResult(url, outcome, code, latency, error, text)
