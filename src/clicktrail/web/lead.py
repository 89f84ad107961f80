"""The lead stage, as plain ASGI handlers beside the click path:

- `/t.js`: the merchant's snippet (keeps the click ID in a first-party cookie and localStorage,
  `clicktrail.track(...)`, direct tracking);
- `/pixel.gif` (image pixel) and `/pixel` (JS pixel, JSON answer): conversions from the visitor's
  browser, through the same pipeline as `/postback` (idempotency, token, log), marked `via = pixel`;
  the click comes from `click_id` or, failing that, from the tracker's own cookie set at the click;
- `/d/{key}`: direct (redirect-less) tracking: registers a click like `/c/{key}` and answers its ID.
"""

import logging
from importlib.resources import files
from urllib.parse import parse_qsl, urlencode

from starlette.types import Receive, Scope, Send

from clicktrail.clicks.request import parse_query
from clicktrail.conversions.intake import Channel
from clicktrail.errors import StorageError
from clicktrail.web.asgi import Headers, respond, respond_error, respond_json
from clicktrail.web.edge import Edge

log = logging.getLogger(__name__)

# Any site may load the snippet and call the pixel and direct endpoints; none of them needs the
# caller's credentials, so "*" is safe.
CORS: Headers = (
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
    (b"access-control-allow-headers", b"content-type"),
    (b"access-control-max-age", b"86400"),
)
# The smallest transparent GIF: 1x1, one colour.
PIXEL_GIF = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b"
)
# Ad platforms' own click IDs, taken as the external ID when the landing URL has no external_id.
AD_CLICK_IDS = ("gclid", "fbclid", "ttclid", "msclkid", "wbraid", "gbraid")


class LeadEdge:
    def __init__(self, edge: Edge) -> None:
        self._edge = edge
        self._snippet = files("clicktrail.web").joinpath("static/t.js").read_bytes()

    async def snippet(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] not in ("GET", "HEAD"):
            await respond_error(send, 405, "method_not_allowed", "the snippet answers GET and HEAD")
            return
        await respond(
            send,
            200,
            self._snippet,
            b"application/javascript; charset=utf-8",
            CORS,
            head=scope["method"] == "HEAD",
            cache=(b"cache-control", b"public, max-age=3600"),
        )

    async def image_pixel(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Always the GIF (a browser shows nothing else); the decision goes to the log and a header."""
        if scope["method"] not in ("GET", "HEAD"):
            await respond_error(send, 405, "method_not_allowed", "the image pixel answers GET")
            return
        try:
            outcome = await self._edge.decide_postback({**scope, "method": "GET"}, receive, Channel.PIXEL)
            result = outcome.decision.value
        except StorageError as exc:
            result = exc.code
        extra = [(b"x-clicktrail-result", result.encode("latin-1"))]
        await respond(send, 200, PIXEL_GIF, b"image/gif", extra, head=scope["method"] == "HEAD")

    async def js_pixel(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS":
            await respond(send, 204, b"", b"text/plain", CORS)
            return
        await self._edge.postback(scope, receive, send, Channel.PIXEL, CORS)

    async def direct(self, scope: Scope, receive: Receive, send: Send) -> None:
        """One request registers a click without a redirect and answers `{"click_id": …}`."""
        method = scope["method"]
        if method == "OPTIONS":
            await respond(send, 204, b"", b"text/plain", CORS)
            return
        if method != "GET":
            await respond_error(send, 405, "method_not_allowed", "direct tracking answers GET", extra=CORS)
            return
        key = scope["path"][3:]
        route = await self._edge.find_route(key)
        if route is None:
            await respond_error(send, 404, "not_found", "no campaign has this key", extra=CORS)
            return
        query = _with_ad_click_id(scope["query_string"])
        landing = {**scope, "query_string": query}
        referrer = parse_query(scope["query_string"]).get("ref")  # the snippet sends document.referrer
        request = self._edge.click_request(landing, key, referrer=referrer)
        try:
            click_id, _, _ = await self._edge.record_click(route, request, redirected=False)
        except StorageError as exc:
            log.warning("direct click not stored, answering 503: %s", exc.detail)
            await respond_error(send, 503, exc.code, exc.detail, extra=[*CORS, (b"retry-after", b"1")])
            return
        await respond_json(send, 200, {"click_id": click_id}, extra=CORS)


def _with_ad_click_id(query_string: bytes) -> bytes:
    """Use an ad platform's click ID (gclid, fbclid…) as the external ID when none was given."""
    pairs = parse_qsl(query_string.decode("utf-8", "replace"), keep_blank_values=True)
    names = {name for name, _ in pairs}
    if "external_id" in names:
        return query_string
    for name in AD_CLICK_IDS:
        value = next((v for n, v in pairs if n == name and v), None)
        if value:
            return urlencode([*pairs, ("external_id", value)]).encode()
    return query_string
