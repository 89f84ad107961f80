"""The hot paths as plain ASGI handlers: `/c/{key}` (click → 302) and `/postback` (S2S pixel).

A full framework's routing costs three times the throughput here (docs/architecture.md), so these
routes parse, call the domain, and answer, and nothing else.
"""

import asyncio
import json
import logging
from collections.abc import Callable

from starlette.types import Receive, Scope, Send

from clicktrail.clicks.intake import click_row, redirect_url
from clicktrail.clicks.request import parse_click_request, parse_query
from clicktrail.conversions.decision import Decision, Outcome
from clicktrail.conversions.intake import RawPostback
from clicktrail.errors import StorageError
from clicktrail.web.asgi import BodyTooLarge, header, read_body, respond, respond_error, respond_json
from clicktrail.web.client_ip import client_ip
from clicktrail.web.errors import DECISION_STATUS, status_for
from clicktrail.web.runtime import Runtime

log = logging.getLogger(__name__)

_NOT_FOUND_PAGE = (
    b"<!doctype html><meta charset=utf-8><title>Link not found</title>"
    b"<h1>Link not found</h1><p>This tracking link does not exist or was mistyped.</p>"
)
_MAX_KEY = 64
_PARAM_VALUE_MAX = 4096


class Edge:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime

    def _client(self, scope: Scope) -> str | None:
        peer = scope.get("client")
        trusted = self._rt.settings.trusted_networks
        if not trusted and peer:
            # No proxy is believed: the socket peer is the visitor, and the server already gives it as
            # a canonical address; parsing it again cost ~3% of a click (py-spy, BENCHMARKS.md).
            return str(peer[0])
        return client_ip(peer[0] if peer else None, header(scope, b"x-forwarded-for"), trusted)

    async def click(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        head = method == "HEAD"
        if method not in ("GET", "HEAD"):
            await respond_error(send, 405, "method_not_allowed", "tracking links answer GET and HEAD")
            return
        key = scope["path"][3:]
        route = self._rt.cache.route(key) if len(key) <= _MAX_KEY else None
        if route is None and len(key) <= _MAX_KEY and self._rt.cache.worth_reloading_for_miss():
            await asyncio.to_thread(self._rt.cache.reload)
            route = self._rt.cache.route(key)
        if route is None:
            await respond(send, 404, _NOT_FOUND_PAGE, b"text/html; charset=utf-8", head=head)
            return
        request = parse_click_request(
            key,
            scope["query_string"],
            self._client(scope),
            header(scope, b"user-agent"),
            header(scope, b"referer"),
        )
        now = self._rt.clock()
        click_id = self._rt.codec.mint(now)
        try:
            await self._rt.clicks.write(click_row(request, route, click_id, now))
        except StorageError as exc:
            page = b"<!doctype html><title>Busy</title><p>Please try again in a moment.</p>"
            log.warning("click not stored, answering 503: %s", exc.detail)
            await respond(send, 503, page, b"text/html; charset=utf-8", [(b"retry-after", b"1")], head=head)
            return
        location = redirect_url(request, route, click_id)
        await respond(send, 302, b"", b"text/plain", [(b"location", location.encode("latin-1"))], head=head)

    async def postback(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "POST"):
            await respond_error(send, 405, "method_not_allowed", "the postback URL answers GET and POST")
            return
        params = parse_query(scope["query_string"])
        ip = self._client(scope)
        intake = self._rt.postbacks
        if method == "POST":
            limit = self._rt.settings.postback_body_limit
            try:
                body = await read_body(receive, limit)
            except BodyTooLarge:
                detail = f"the postback body is larger than {limit} bytes"
                raw = RawPostback(method, params, ip)
                await self._answer(send, raw, intake.refuse, Decision.TOO_LARGE, "payload_too_large", detail)
                return
            body_params = _body_params(header(scope, b"content-type") or "", body)
            if body_params is None:
                detail = "send query parameters, a form (x-www-form-urlencoded) or a flat JSON object"
                raw = RawPostback(method, params, ip)
                await self._answer(send, raw, intake.refuse, Decision.MALFORMED, "bad_body", detail)
                return
            params = {**params, **body_params}
        params = {name: value[:_PARAM_VALUE_MAX] for name, value in params.items()}
        await self._answer(send, RawPostback(method, params, ip), intake.handle)

    async def _answer(
        self, send: Send, raw: RawPostback, decide: Callable[..., Outcome], *args: object
    ) -> None:
        try:
            outcome = await asyncio.to_thread(decide, raw, *args)
        except StorageError as exc:
            await respond_error(send, status_for(exc.code), exc.code, exc.detail)
            return
        status = DECISION_STATUS[outcome.decision]
        if outcome.recorded:
            await respond_json(
                send, status, {"result": outcome.decision.value, "conversion_id": outcome.conversion_id}
            )
        else:
            await respond_json(
                send,
                status,
                {
                    "error": outcome.error or outcome.decision.value,
                    "decision": outcome.decision.value,
                    "detail": outcome.detail or "",
                },
            )

    async def health(self, scope: Scope, receive: Receive, send: Send) -> None:
        await respond_json(send, 200, {"status": "ok"}, head=scope["method"] == "HEAD")


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
