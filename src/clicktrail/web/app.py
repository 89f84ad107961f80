"""The ASGI application: edge routes dispatched by hand, everything else to the admin API."""

import gc
import logging

from starlette.types import ASGIApp, Receive, Scope, Send

from clicktrail.config import Settings
from clicktrail.types import Clock, utc_now
from clicktrail.web.api import create_api
from clicktrail.web.edge import Edge
from clicktrail.web.landing import PREFIX as LANDER_PREFIX
from clicktrail.web.landing import LanderEdge
from clicktrail.web.lead import LeadEdge
from clicktrail.web.protocol import DirectHandler
from clicktrail.web.runtime import Runtime

log = logging.getLogger(__name__)


class ClicktrailApp:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self._edge = Edge(runtime)
        self._lead = LeadEdge(self._edge)
        self._landers = LanderEdge(runtime)
        self._api = create_api(runtime)
        self._fixed_paths: dict[str, ASGIApp] = {
            "/pixel.gif": self._lead.image_pixel,
            "/pixel": self._lead.js_pixel,
            "/t.js": self._lead.snippet,
            "/health": self._edge.health,
        }

    def edge_handler(self, path: str) -> ASGIApp | None:
        """The handler of an edge route (clicks, postbacks, the lead stage, health), or None for the
        admin API and the dashboard. web/protocol.py answers these straight from the parser for GET and
        HEAD; every other request reaches them through __call__."""
        if path.startswith("/c/"):
            return self._edge.click
        if path == "/postback":
            return self._edge.postback
        if path.startswith("/d/"):
            return self._lead.direct
        if path == LANDER_PREFIX or path.startswith(LANDER_PREFIX + "/"):
            return self._landers.click
        return self._fixed_paths.get(path)

    def edge_direct(self, path: str) -> DirectHandler | None:
        """The direct handler of the click's and the postback's routes, tried before `edge_handler`'s
        on the lean path (web/protocol.py)."""
        if path.startswith("/c/"):
            return self._edge.click_now
        return self._edge.postback_now if path == "/postback" else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            handler = self.edge_handler(scope["path"]) or self._api
            await handler(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.runtime.start()
                except Exception as exc:
                    log.exception("clicktrail could not start")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(settings: Settings, *, clock: Clock = utc_now, migrate: bool = False) -> ClicktrailApp:
    return ClicktrailApp(Runtime(settings, clock=clock, migrate=migrate))


def create_app_from_environment() -> ClicktrailApp:
    """Factory for the server's worker processes: settings come from CLICKTRAIL_* variables."""
    collect_garbage_less_often()
    return create_app(Settings())


COLLECTION_THRESHOLD = 50_000
"""Container objects allocated (net of those freed) between two young-generation collections in a
worker; Python's default is 700."""


def collect_garbage_less_often() -> None:
    """Raise the cyclic collector's first threshold in a serving process.

    The requests in flight (each a task, its coroutines, a future, the row, the scope...) kept the
    allocation count above 700 at every wave of clicks, so the collector ran every ~47 clicks, found
    nothing to free (the count fell back as the batch was committed: no cycles are left on the hot
    path) and walked the live requests each time: 2 to 4 µs of CPU per click in-process with 128
    connections, and none at 10,000 or 50,000 (no collection at all in 60,000 clicks). The higher
    threshold leaves room for a full click queue; cyclic garbage, rare here, is still collected."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(COLLECTION_THRESHOLD, older, oldest)
