"""The outbound delivery log: each delivery with every attempt, a retry button, and each source's
circuit breaker (why and since when it paused) with a resume button. The same delivery queries as
/api/v1/deliveries."""

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from clicktrail.delivery import queries as outbox
from clicktrail.delivery.breaker import Breaker, BreakerState
from clicktrail.delivery.status import DeliveryStatus
from clicktrail.errors import Conflict, NotFound, ValidationFailed
from clicktrail.web.dashboard.kit import MAX_ROW_ID, BadForm, PageKit, local_path, text_of

_PAGE = 50
MAX_DELIVERY_ID = 2**62


def retryable(delivery: dict[str, Any]) -> bool:
    """Dead and blocked deliveries, and pending ones that have already failed (waiting for a retry)."""
    status = delivery["status"]
    return status in (DeliveryStatus.DEAD, DeliveryStatus.BLOCKED) or (
        status == DeliveryStatus.PENDING and delivery["last_error"] is not None
    )


def add_delivery_routes(router: APIRouter, kit: PageKit) -> None:
    runtime = kit.runtime

    def breakers() -> list[tuple[Any, Breaker]]:
        """Every source that is sent postbacks, or whose breaker is not closed, with its breaker."""
        shown = []
        for source in runtime.catalog.list_sources(limit=1000):
            breaker = outbox.breaker_of(runtime.database, source.id)
            if source.postback_url or breaker.state is not BreakerState.CLOSED:
                shown.append((source, breaker))
        return shown

    @router.get("/deliveries")
    def delivery_log(request: Request) -> Response:
        session = kit.session_of(request)
        query = request.query_params
        form = {name: query.get(name, "").strip() for name in ("status", "source_id", "click_id")}
        errors: dict[str, str] = {}
        source_id: int | None = None
        if form["source_id"]:
            if form["source_id"].isdigit() and int(form["source_id"]) <= MAX_ROW_ID:
                source_id = int(form["source_id"])
            else:
                errors["source_id"] = "a source's numeric ID"
        rows: list[dict[str, Any]] = []
        next_cursor = None
        cursor = query.get("cursor") or None
        if not errors:
            try:
                page = outbox.find_deliveries(
                    runtime.database, click_id=form["click_id"][:64] or None, source_id=source_id,
                    status=form["status"] or None, cursor=cursor, limit=_PAGE,
                )  # fmt: skip
                rows, next_cursor = page.rows, page.next_cursor
            except ValidationFailed as exc:
                errors = {name: exc.detail for name in exc.fields} or {"form": exc.detail}
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return kit.render(
            request, "deliveries.html", session, 422 if errors else 200, page="deliveries", form=form,
            errors=errors, deliveries=rows, retryable=retryable, breakers=breakers(), here=here,
            sources={s.id: s.name for s in runtime.catalog.list_sources(limit=1000)},
            statuses=[s.value for s in DeliveryStatus],
            next_link="?" + urlencode(form | {"cursor": next_cursor}) if next_cursor else None,
            notice=_notice(query),
        )  # fmt: skip

    @router.post("/deliveries/{delivery_id:int}/retry")
    async def retry(request: Request, delivery_id: int) -> Response:
        session = kit.session_of(request)
        try:
            form = await kit.form(request, session)
        except BadForm:
            return kit.expired_form(request, session)
        back = local_path(text_of(form, "next"), "/deliveries")
        try:
            if delivery_id > MAX_DELIVERY_ID:
                raise NotFound(f"no delivery with id {delivery_id}")
            await run_in_threadpool(outbox.retry_delivery, runtime.database, delivery_id, runtime.clock)
        except NotFound as exc:
            return kit.problem(request, session, 404, exc.detail)
        except Conflict:
            return RedirectResponse(_with(back, busy=delivery_id), status_code=303)
        runtime.dispatcher.wake()
        return RedirectResponse(_with(back, retried=delivery_id), status_code=303)

    @router.post("/sources/{source_id:int}/resume")
    async def resume(request: Request, source_id: int) -> Response:
        session = kit.session_of(request)
        try:
            form = await kit.form(request, session)
        except BadForm:
            return kit.expired_form(request, session)
        back = local_path(text_of(form, "next"), "/deliveries")
        try:
            if source_id > MAX_ROW_ID:
                raise NotFound(f"no source with id {source_id}")
            await run_in_threadpool(outbox.resume_source, runtime.database, source_id, runtime.clock)
        except NotFound as exc:
            return kit.problem(request, session, 404, exc.detail)
        runtime.dispatcher.wake()
        return RedirectResponse(_with(back, resumed=source_id), status_code=303)


def _with(path: str, **notice: int) -> str:
    """The page to go back to, with what just happened (shown as a notice), without older notices."""
    target, _, query = path.partition("?")
    kept = [part for part in query.split("&") if part and part.split("=")[0] not in _NOTICES]
    return target + "?" + "&".join([*kept, urlencode(notice)])


_NOTICES = {
    "retried": "Delivery {} is queued to be sent again now, with a fresh retry schedule.",
    "busy": "Delivery {} is being attempted right now; look again in a moment.",
    "resumed": "The circuit breaker of source {} is closed: its waiting deliveries go out now.",
}


def _notice(query: Any) -> str | None:
    for name, text in _NOTICES.items():
        value = query.get(name)
        if value and value.isdigit():
            return text.format(int(value))
    return None
