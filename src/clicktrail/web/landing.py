"""`/lp/click` and `/lp/click/{n}`: a lander's links on to the offer, as plain ASGI beside `/c/`
(clicks/landing.py decides; this only parses and answers)."""

import asyncio
import logging

from starlette.types import Receive, Scope, Send

from clicktrail.clicks.landing import LanderClicks
from clicktrail.clicks.request import parse_query
from clicktrail.errors import StorageError
from clicktrail.web.asgi import cookie_value, header, respond, respond_error
from clicktrail.web.edge import CLICK_COOKIE
from clicktrail.web.errors import LANDER_STATUS
from clicktrail.web.runtime import Runtime

log = logging.getLogger(__name__)

PREFIX = "/lp/click"
_MAX_OFFER = 99


class LanderEdge:
    def __init__(self, runtime: Runtime) -> None:
        self._rt = runtime
        self._landers = LanderClicks(
            runtime.database,
            runtime.codec,
            lambda: runtime.cache.snapshot,
            runtime.caps,
            runtime.cache.reload_if_changed,
        )

    async def click(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            await respond_error(send, 405, "method_not_allowed", "lander links answer GET and HEAD")
            return
        rest = scope["path"][len(PREFIX) :].strip("/")
        n: int | None = None
        if rest:
            if not rest.isdigit() or not 1 <= int(rest) <= _MAX_OFFER:
                detail = f"{PREFIX}/N takes the offer's position on the lander's path, 1 to {_MAX_OFFER}"
                await respond_error(send, 404, "not_found", detail)
                return
            n = int(rest)
        text = parse_query(scope["query_string"]).get("click_id") or cookie_value(
            header(scope, b"cookie"), CLICK_COOKIE
        )
        try:
            exit_ = await asyncio.to_thread(self._landers.go_on, text, n, self._rt.clock())
        except StorageError as exc:
            log.warning("lander click not continued, answering 503: %s", exc.detail)
            await respond_error(send, 503, exc.code, exc.detail, extra=[(b"retry-after", b"1")])
            return
        if exit_.refusal is not None or exit_.url is None:
            refusal = exit_.refusal
            status = LANDER_STATUS[refusal] if refusal is not None else 400
            await respond_error(send, status, refusal.value if refusal else "bad_request", exit_.detail)
            return
        headers = [(b"location", exit_.url.encode("latin-1"))]
        await respond(send, 302, b"", b"text/plain", headers, head=method == "HEAD")
