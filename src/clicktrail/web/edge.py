"""The hot paths as plain ASGI handlers: `/c/{key}` (click → 302) and `/postback` (S2S pixel);
web/lead.py adds the lead stage (snippet, pixels, direct tracking) on top of these.

A full framework's routing costs three times the throughput here (docs/architecture.md), so these
routes parse, call the domain, and answer, and nothing else.
"""

import asyncio
import json
import logging
from dataclasses import replace
from typing import Any

from starlette.types import Receive, Scope, Send

from clicktrail.catalog.routes import Route
from clicktrail.clicks.intake import click_row, redirect_url, visit_of
from clicktrail.clicks.request import VISITOR_COOKIE, ClickRequest, parse_click_request, parse_query
from clicktrail.conversions.decision import Decision, Outcome
from clicktrail.conversions.intake import Channel, RawPostback
from clicktrail.errors import StorageError
from clicktrail.types import ClickId
from clicktrail.web.asgi import (
    BodyTooLarge,
    Headers,
    cookie_value,
    header,
    joined_header,
    read_body,
    respond,
    respond_error,
    respond_json,
    response_headers,
)
from clicktrail.web.client_ip import client_ip
from clicktrail.web.errors import DECISION_STATUS, status_for
from clicktrail.web.protocol import Reply
from clicktrail.web.ratelimit import RateLimiter
from clicktrail.web.runtime import Runtime

log = logging.getLogger(__name__)

_NOT_FOUND_PAGE = (
    b"<!doctype html><meta charset=utf-8><title>Link not found</title>"
    b"<h1>Link not found</h1><p>This tracking link does not exist or was mistyped.</p>"
)
_BUSY_PAGE = b"<!doctype html><title>Busy</title><p>Please try again in a moment.</p>"
_BUSY_HEADERS = response_headers(_BUSY_PAGE, b"text/html; charset=utf-8", [(b"retry-after", b"1")])
_MAX_KEY = 64
CLICK_COOKIE = "ct_cid"
CLICK_COOKIE_SECONDS = 90 * 24 * 3600
VISITOR_COOKIE_SECONDS = 365 * 24 * 3600
_PARAM_VALUE_MAX = 4096
# respond_json's compact JSON from one encoder: json.dumps builds a new encoder for each call that
# passes `separators`, a measurable part of answering a postback (py-spy).
_encode_answer = json.JSONEncoder(separators=(",", ":")).encode


class Edge:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        cross_site = runtime.settings.public_url.startswith("https://")
        self._cookie_attributes = "; Path=/; HttpOnly" + (
            "; SameSite=None; Secure" if cross_site else "; SameSite=Lax"
        )
        rate, burst = runtime.settings.edge_ip_rate_per_second, runtime.settings.edge_ip_burst
        # Off by default: a tracker must not drop a paid click. When set, one attribute test per request.
        self._cap = (
            RateLimiter(
                "clicks and postbacks per address",
                rate * 60,
                burst,
                shared_dir=runtime.settings.shared_memory_dir,
            )
            if rate > 0
            else None
        )

    def _client(self, scope: Scope) -> str | None:
        peer = scope.get("client")
        trusted = self._rt.settings.trusted_networks
        if not trusted and peer:
            # No proxy is believed: the socket peer is the visitor, and the server already gives it as
            # a canonical address; parsing it again cost ~3% of a click (py-spy, BENCHMARKS.md).
            return str(peer[0])
        return client_ip(peer[0] if peer else None, joined_header(scope, b"x-forwarded-for"), trusted)

    def route(self, key: str) -> Route | None:
        return self._rt.cache.route(key) if len(key) <= _MAX_KEY else None

    async def find_route(self, key: str) -> Route | None:
        route = self.route(key)
        if route is None and len(key) <= _MAX_KEY:
            # Look again even when this call did not reload: a concurrent miss may have just done it.
            await asyncio.to_thread(self._rt.cache.reload_if_changed)
            route = self.route(key)
        return route

    def _prepare_click(
        self, route: Route, request: ClickRequest, redirected: bool
    ) -> tuple[dict[str, Any], ClickId, Route, str]:
        """Enrich the visit and choose its offer: the click's row, its ID, the chosen route and the
        visitor ID. `redirected=False` (direct tracking: the visitor is already on the merchant's
        page) shows no lander."""
        now = self._rt.clock()
        click_id = self._rt.codec.mint(now)
        visitor = self._rt.enricher.enrich(
            route.campaign_id, request.ip, request.user_agent, now, request.visitor_cookie
        )
        if route.dynamic:  # campaigns without rules or caps pay nothing for routing
            route = route.for_visit(visit_of(request, visitor, now), visitor.visitor_id, self._rt.caps, now)
        if route.lander is not None and not redirected:
            route = replace(route, lander=None)
        return click_row(request, route, click_id, now, visitor), click_id, route, visitor.visitor_id

    async def record_click(
        self, route: Route, request: ClickRequest, *, redirected: bool = True
    ) -> tuple[ClickId, Route, str]:
        """Enrich the visit, choose its offer, store the click; return its ID, the chosen route and the
        visitor ID once committed. Raises StorageError."""
        row, click_id, route, visitor_id = self._prepare_click(route, request, redirected)
        await self._rt.clicks.write(row)
        return click_id, route, visitor_id

    def click_request(self, scope: Scope, key: str, referrer: str | None = None) -> ClickRequest:
        return parse_click_request(
            key,
            scope["query_string"],
            self._client(scope),
            header(scope, b"user-agent"),
            referrer if referrer is not None else header(scope, b"referer"),
            header(scope, b"cookie"),
        )

    def _cookie(self, name: str, value: str, seconds: int) -> tuple[bytes, bytes]:
        return (
            b"set-cookie",
            f"{name}={value}; Max-Age={seconds}{self._cookie_attributes}".encode("latin-1"),
        )

    def click_cookie(self, click_id: ClickId) -> tuple[bytes, bytes]:
        """The tracker's own cookie naming the visitor's last click, for pixels that carry no click ID."""
        return self._cookie(CLICK_COOKIE, click_id, CLICK_COOKIE_SECONDS)

    def visitor_cookie(self, visitor_id: str) -> tuple[bytes, bytes]:
        """The tracker's own cookie naming the visitor, so a repeat click from a new IP is the same one."""
        return self._cookie(VISITOR_COOKIE, visitor_id, VISITOR_COOKIE_SECONDS)

    async def capped(self, scope: Scope, send: Send) -> bool:
        """Answer 429 when the address is over CLICKTRAIL_EDGE_IP_RATE_PER_SECOND (when set)."""
        if self._cap is None:
            return False
        wait = self._cap.retry_after(self._client(scope) or "unknown")
        if wait:
            detail = f"too many requests from this address; retry in {wait} s"
            extra = [(b"retry-after", str(wait).encode())]
            await respond_error(
                send, 429, "rate_limited", detail, head=scope["method"] == "HEAD", extra=extra
            )
        return wait > 0

    def click_now(self, scope: Scope, reply: Reply) -> bool:
        """The click's direct path (web/protocol.py): the click is prepared here and queued for the
        group commit, which answers it (302, or 503 if it could not be stored) through `reply`. False
        for what `click` answers instead: the rate limit, another method, a key the catalog's
        snapshot does not hold (the catalog may have to be read again, or it is a 404)."""
        method = scope["method"]
        if self._cap is not None or method not in ("GET", "HEAD"):
            return False
        key = scope["path"][3:]
        route = self.route(key)
        if route is None:
            return False
        request = self.click_request(scope, key)
        row, click_id, route, visitor_id = self._prepare_click(route, request, True)
        # The 302 is built now, while the previous batch's commit waits on the disk, not after this
        # one's: once committed, a batch's answers are only written (BENCHMARKS.md, "Session of
        # 2026-12-07 (03:10 UTC)").
        answer = _ClickAnswer(reply, self.redirect_headers(request, route, click_id, visitor_id))
        try:
            self._rt.clicks.submit(row, answer)
        except StorageError as exc:
            answer.set_exception(exc)
        return True

    def redirect_headers(
        self, request: ClickRequest, route: Route, click_id: ClickId, visitor_id: str
    ) -> list[tuple[bytes, bytes]]:
        """A stored click's 302: the redirect and the tracker's two cookies."""
        location = redirect_url(request, route, click_id)
        extra = [
            (b"location", location.encode("latin-1")),
            self.click_cookie(click_id),
            self.visitor_cookie(visitor_id),
        ]
        return response_headers(b"", b"text/plain", extra)

    async def click(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._cap is not None and await self.capped(scope, send):
            return
        method = scope["method"]
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            await respond_error(send, 405, "method_not_allowed", "tracking links answer GET and HEAD")
            return
        key = scope["path"][3:]
        route = await self.find_route(key)
        if route is None:
            await respond(send, 404, _NOT_FOUND_PAGE, b"text/html; charset=utf-8", head=head)
            return
        request = self.click_request(scope, key)
        try:
            click_id, route, visitor_id = await self.record_click(route, request)
        except StorageError as exc:
            log.warning("click not stored, answering 503: %s", exc.detail)
            await send({"type": "http.response.start", "status": 503, "headers": _BUSY_HEADERS})
            await send({"type": "http.response.body", "body": b"" if head else _BUSY_PAGE})
            return
        headers = self.redirect_headers(request, route, click_id, visitor_id)
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def postback(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        via: Channel = Channel.POSTBACK,
        extra: Headers = (),
    ) -> None:
        if self._cap is not None and await self.capped(scope, send):
            return
        if scope["method"] not in ("GET", "POST"):
            await respond_error(
                send, 405, "method_not_allowed", "the postback URL answers GET and POST", extra=extra
            )
            return
        try:
            outcome = await self.decide_postback(scope, receive, via)
        except StorageError as exc:
            status, body = _storage_error_answer(exc)
        else:
            status, body = _outcome_answer(outcome)
        await respond(send, status, body, b"application/json", extra)

    def postback_now(self, scope: Scope, reply: Reply) -> bool:
        """The postback's direct path (web/protocol.py), as `click_now` is the click's: a GET's
        postback is queued for the group commit, which answers it through `reply` once decided and
        committed. False for what `postback` answers instead: the rate limit, another method."""
        if self._cap is not None or scope["method"] != "GET":
            return False
        params = self._postback_params(scope, Channel.POSTBACK)
        raw = _bounded_postback("GET", params, self._client(scope), Channel.POSTBACK)
        answer = _PostbackAnswer(reply)
        try:
            self._rt.postback_writer.submit(raw, answer)
        except StorageError as exc:
            answer.set_exception(exc)
        return True

    def _postback_params(self, scope: Scope, via: Channel) -> dict[str, str]:
        """The query's parameters; a pixel without `click_id` takes the tracker's click cookie's."""
        params = parse_query(scope["query_string"])
        if via is Channel.PIXEL and not params.get("click_id"):
            cookie = cookie_value(header(scope, b"cookie"), CLICK_COOKIE)
            if cookie:
                params["click_id"] = cookie
        return params

    async def decide_postback(self, scope: Scope, receive: Receive, via: Channel) -> Outcome:
        """Read the postback (query and body) and hand it to the group-commit writer, which decides
        it with the others waiting; a pixel without `click_id` uses the tracker's click cookie.
        Raises StorageError."""
        method = scope["method"]
        params = self._postback_params(scope, via)
        ip = self._client(scope)
        intake = self._rt.postbacks
        if method == "POST":
            limit = self._rt.settings.postback_body_limit
            try:
                body = await read_body(receive, limit)
            except BodyTooLarge:
                detail = f"the postback body is larger than {limit} bytes"
                raw = RawPostback(method, params, ip, via)
                return await asyncio.to_thread(
                    intake.refuse, raw, Decision.TOO_LARGE, "payload_too_large", detail
                )
            body_params = _body_params(header(scope, b"content-type") or "", body)
            if body_params is None:
                detail = "send query parameters, a form (x-www-form-urlencoded) or a flat JSON object"
                raw = RawPostback(method, params, ip, via)
                return await asyncio.to_thread(intake.refuse, raw, Decision.MALFORMED, "bad_body", detail)
            params = {**params, **body_params}
        return await self._rt.postback_writer.write(_bounded_postback(method, params, ip, via))

    async def health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond_json(send, 200, {"status": "ok"}, head=scope["method"] == "HEAD")


def _bounded_postback(method: str, params: dict[str, str], ip: str | None, via: Channel) -> RawPostback:
    """The postback to decide, each value cut to _PARAM_VALUE_MAX characters (as it is logged)."""
    return RawPostback(method, {name: value[:_PARAM_VALUE_MAX] for name, value in params.items()}, ip, via)


def _outcome_answer(outcome: Outcome) -> tuple[int, bytes]:
    """A decided postback's status and JSON body."""
    decision = outcome.decision
    if outcome.recorded:
        answer = {"result": decision.value, "conversion_id": outcome.conversion_id}
    else:
        answer = {
            "error": outcome.error or decision.value,
            "decision": decision.value,
            "detail": outcome.detail or "",
        }
    return DECISION_STATUS[decision], _encode_answer(answer).encode()


def _storage_error_answer(exc: StorageError) -> tuple[int, bytes]:
    """A postback that could not be stored (overloaded, database unavailable): the error's status."""
    return status_for(exc.code), _encode_answer({"error": exc.code, "detail": exc.detail}).encode()


class _PostbackAnswer:
    """Answers a postback of the direct path once the group commit has told its outcome (a Waiter)."""

    __slots__ = ("_reply",)

    def __init__(self, reply: Reply) -> None:
        self._reply: Reply | None = reply

    def done(self) -> bool:
        return self._reply is None

    def set_result(self, outcome: Outcome) -> None:
        self._answer(*_outcome_answer(outcome))

    def set_exception(self, exception: BaseException) -> None:
        # The writer hands on StorageErrors only (it wraps anything else in one).
        error = exception if isinstance(exception, StorageError) else StorageError(str(exception))
        self._answer(*_storage_error_answer(error))

    def _answer(self, status: int, body: bytes) -> None:
        reply, self._reply = self._reply, None
        if reply is not None:
            reply(status, response_headers(body, b"application/json"), body)


class _ClickAnswer:
    """Answers a click of the direct path once the group commit has told its fate (a Waiter): the
    302 built when the click was queued, or a 503."""

    __slots__ = ("_headers", "_reply")

    def __init__(self, reply: Reply, headers: list[tuple[bytes, bytes]]) -> None:
        self._reply: Reply | None = reply
        self._headers = headers

    def done(self) -> bool:
        return self._reply is None

    def set_result(self, result: None) -> None:
        reply, self._reply = self._reply, None
        if reply is not None:
            reply(302, self._headers, b"")

    def set_exception(self, exception: BaseException) -> None:
        reply, self._reply = self._reply, None
        if reply is not None:
            log.warning("click not stored, answering 503: %s", exception)
            reply(503, _BUSY_HEADERS, _BUSY_PAGE)


def _body_params(content_type: str, body: bytes) -> dict[str, str] | None:
    """Form or flat JSON body as text parameters; None when the body's type is not one we read."""
    kind = content_type.split(";", 1)[0].strip().lower()
    if not body.strip():
        return {}
    if kind in ("", "application/x-www-form-urlencoded", "text/plain"):
        return parse_query(body)
    if kind == "application/json":
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            return None
        if not isinstance(data, dict):
            return None
        return {
            str(name): (str(value).lower() if isinstance(value, bool) else str(value))
            for name, value in data.items()
            if isinstance(value, str | int | float | bool)
        }
    return None
