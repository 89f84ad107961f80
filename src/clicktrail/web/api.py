"""The admin API under /api/v1: JSON in and out, bearer-token auth, errors as {"error", "detail"}."""

from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from clicktrail import __version__
from clicktrail.catalog.models import (
    Campaign,
    CampaignInput,
    CampaignPatch,
    OfferInput,
    OfferPatch,
    SourceInput,
    SourcePatch,
)
from clicktrail.clicks.queries import get_click
from clicktrail.conversions.queries import TimeRange, find_conversions, find_postbacks
from clicktrail.delivery import queries as outbox
from clicktrail.delivery.trial import send_test_postback
from clicktrail.errors import ClicktrailError, Unauthorized, ValidationFailed
from clicktrail.web.errors import status_for
from clicktrail.web.runtime import Runtime
from clicktrail.web.schemas import (
    BreakerOut,
    CampaignOut,
    ClickOut,
    ConversionOut,
    DeliveryOut,
    ErrorOut,
    OfferOut,
    Page,
    PostbackLogOut,
    SourceOut,
    TestPostbackOut,
)

Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=20, description="next_cursor of the previous page")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "missing or wrong bearer token"},
    422: {"model": ErrorOut, "description": "invalid input"},
}


def _parse_moment(value: str | None, name: str, *, end: bool) -> datetime | None:
    """An ISO date (a whole day, UTC; `to` includes it) or an ISO datetime (UTC unless it says)."""
    if value is None or value == "":
        return None
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            moment = datetime.combine(day, time(), UTC)
            return moment + timedelta(days=1) if end else moment
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValidationFailed(f"{name} must be an ISO date or datetime", {name: "not a date"}) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _period(start: str | None, end: str | None) -> TimeRange:
    return TimeRange(_parse_moment(start, "from", end=False), _parse_moment(end, "to", end=True))


def create_api(runtime: Runtime) -> FastAPI:
    def require_admin(request: Request) -> None:
        scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or not runtime.tokens.accepts(token.strip()):
            raise Unauthorized("send Authorization: Bearer <admin token>")

    api = FastAPI(
        title="clicktrail",
        version=__version__,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    v1 = "/api/v1"
    admin = [Depends(require_admin)]

    @api.exception_handler(ClicktrailError)
    async def domain_error(_: Request, exc: ClicktrailError) -> JSONResponse:
        body: dict[str, Any] = {"error": exc.code, "detail": exc.detail}
        if isinstance(exc, ValidationFailed) and exc.fields:
            body["fields"] = exc.fields
        headers = {"www-authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        return JSONResponse(body, status_code=status_for(exc.code), headers=headers)

    @api.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        fields = {}
        for problem in exc.errors():
            location = ".".join(str(part) for part in problem.get("loc", ()) if part not in ("body", "query"))
            message = str(problem.get("msg", "invalid")).removeprefix("Value error, ")
            fields[location or "body"] = message
        detail = "; ".join(f"{name}: {message}" for name, message in fields.items())
        return JSONResponse(
            {"error": "validation_error", "detail": detail, "fields": fields}, status_code=422
        )

    @api.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return JSONResponse({"error": code, "detail": str(exc.detail)}, status_code=exc.status_code)

    def campaign_out(campaign: Campaign) -> CampaignOut:
        base = runtime.settings.public_url
        return CampaignOut(
            **{name: getattr(campaign, name) for name in Campaign.__slots__},
            tracking_url=f"{base}/c/{campaign.key}",
            postback_url=f"{base}/postback?click_id={{click_id}}&event=conversion&payout={{payout}}&txid={{txid}}",
        )

    def changed() -> None:
        runtime.catalog_changed()

    # Offers
    @api.post(f"{v1}/offers", status_code=201, dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def create_offer(data: OfferInput) -> OfferOut:
        offer = runtime.catalog.create_offer(data)
        changed()
        return OfferOut.model_validate(offer)

    @api.get(f"{v1}/offers", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def list_offers(cursor: Cursor = None, limit: Limit = 100) -> Page[OfferOut]:
        offers = runtime.catalog.list_offers(_after(cursor), limit)
        return Page(items=[OfferOut.model_validate(o) for o in offers], next_cursor=_next(offers, limit))

    @api.get(f"{v1}/offers/{{offer_id}}", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def get_offer(offer_id: int) -> OfferOut:
        return OfferOut.model_validate(runtime.catalog.get_offer(offer_id))

    @api.patch(f"{v1}/offers/{{offer_id}}", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def patch_offer(offer_id: int, data: OfferPatch) -> OfferOut:
        offer = runtime.catalog.patch_offer(offer_id, data)
        changed()
        return OfferOut.model_validate(offer)

    # Sources
    @api.post(f"{v1}/sources", status_code=201, dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def create_source(data: SourceInput) -> SourceOut:
        source = runtime.catalog.create_source(data)
        changed()
        return SourceOut.model_validate(source)

    @api.get(f"{v1}/sources", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def list_sources(cursor: Cursor = None, limit: Limit = 100) -> Page[SourceOut]:
        sources = runtime.catalog.list_sources(_after(cursor), limit)
        return Page(items=[SourceOut.model_validate(s) for s in sources], next_cursor=_next(sources, limit))

    @api.get(f"{v1}/sources/{{source_id}}", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def get_source(source_id: int) -> SourceOut:
        return SourceOut.model_validate(runtime.catalog.get_source(source_id))

    @api.patch(f"{v1}/sources/{{source_id}}", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def patch_source(source_id: int, data: SourcePatch) -> SourceOut:
        source = runtime.catalog.patch_source(source_id, data)
        changed()
        return SourceOut.model_validate(source)

    @api.post(f"{v1}/sources/{{source_id}}/test", dependencies=admin, responses=_ERRORS, tags=["delivery"])
    async def test_source(source_id: int) -> TestPostbackOut:
        """Send the source one postback filled with sample values; show what was called and the answer."""
        source = await run_in_threadpool(runtime.catalog.get_source, source_id)
        result = await send_test_postback(runtime.sender, source_id, source.postback_url)
        return TestPostbackOut.model_validate(result)

    @api.get(f"{v1}/sources/{{source_id}}/breaker", dependencies=admin, responses=_ERRORS, tags=["delivery"])
    def source_breaker(source_id: int) -> BreakerOut:
        return BreakerOut.model_validate(outbox.breaker_of(runtime.database, source_id))

    @api.post(f"{v1}/sources/{{source_id}}/resume", dependencies=admin, responses=_ERRORS, tags=["delivery"])
    def resume_source(source_id: int) -> BreakerOut:
        """Close a tripped circuit breaker by hand: the source's waiting deliveries go out at once."""
        breaker = outbox.resume_source(runtime.database, source_id, runtime.clock)
        runtime.dispatcher.wake()
        return BreakerOut.model_validate(breaker)

    # Campaigns
    @api.post(f"{v1}/campaigns", status_code=201, dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def create_campaign(data: CampaignInput) -> CampaignOut:
        campaign = runtime.catalog.create_campaign(data)
        changed()
        return campaign_out(campaign)

    @api.get(f"{v1}/campaigns", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def list_campaigns(cursor: Cursor = None, limit: Limit = 100) -> Page[CampaignOut]:
        campaigns = runtime.catalog.list_campaigns(_after(cursor), limit)
        return Page(items=[campaign_out(c) for c in campaigns], next_cursor=_next(campaigns, limit))

    @api.get(f"{v1}/campaigns/{{campaign_id}}", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def get_campaign(campaign_id: int) -> CampaignOut:
        return campaign_out(runtime.catalog.get_campaign(campaign_id))

    @api.patch(f"{v1}/campaigns/{{campaign_id}}", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def patch_campaign(campaign_id: int, data: CampaignPatch) -> CampaignOut:
        campaign = runtime.catalog.patch_campaign(campaign_id, data)
        changed()
        return campaign_out(campaign)

    # Events
    @api.get(f"{v1}/clicks/{{click_id}}", dependencies=admin, responses=_ERRORS, tags=["events"])
    def click(click_id: str) -> ClickOut:
        return ClickOut.model_validate(get_click(runtime.database, runtime.codec, click_id))

    @api.get(f"{v1}/conversions", dependencies=admin, responses=_ERRORS, tags=["events"])
    def conversions(
        click_id: Annotated[str | None, Query(max_length=64)] = None,
        campaign_id: int | None = None,
        from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        to: Annotated[str | None, Query(max_length=40)] = None,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Limit = 100,
    ) -> Page[ConversionOut]:
        page = find_conversions(
            runtime.database,
            click_id=click_id,
            campaign_id=campaign_id,
            period=_period(from_, to),
            cursor=cursor,
            limit=limit,
        )
        return Page(
            items=[ConversionOut.model_validate(row) for row in page.rows], next_cursor=page.next_cursor
        )

    @api.get(f"{v1}/postbacks", dependencies=admin, responses=_ERRORS, tags=["events"])
    def postbacks(
        click_id: Annotated[str | None, Query(max_length=64)] = None,
        txid: Annotated[str | None, Query(max_length=255)] = None,
        decision: Annotated[str | None, Query(max_length=32)] = None,
        from_: Annotated[str | None, Query(alias="from", max_length=40)] = None,
        to: Annotated[str | None, Query(max_length=40)] = None,
        cursor: Annotated[str | None, Query(max_length=32)] = None,
        limit: Limit = 100,
    ) -> Page[PostbackLogOut]:
        page = find_postbacks(
            runtime.database,
            click_id=click_id,
            txid=txid,
            decision=decision,
            period=_period(from_, to),
            cursor=cursor,
            limit=limit,
        )
        return Page(
            items=[PostbackLogOut.model_validate(row) for row in page.rows], next_cursor=page.next_cursor
        )

    # Outbound postbacks
    @api.get(f"{v1}/deliveries", dependencies=admin, responses=_ERRORS, tags=["delivery"])
    def deliveries(
        click_id: Annotated[str | None, Query(max_length=64)] = None,
        source_id: int | None = None,
        status: Annotated[str | None, Query(max_length=16)] = None,
        cursor: Annotated[str | None, Query(max_length=20)] = None,
        limit: Limit = 100,
    ) -> Page[DeliveryOut]:
        page = outbox.find_deliveries(
            runtime.database,
            click_id=click_id,
            source_id=source_id,
            status=status,
            cursor=cursor,
            limit=limit,
        )
        return Page(
            items=[DeliveryOut.model_validate(row) for row in page.rows], next_cursor=page.next_cursor
        )

    @api.get(f"{v1}/deliveries/{{delivery_id}}", dependencies=admin, responses=_ERRORS, tags=["delivery"])
    def delivery(delivery_id: int) -> DeliveryOut:
        return DeliveryOut.model_validate(outbox.get_delivery(runtime.database, delivery_id))

    @api.post(
        f"{v1}/deliveries/{{delivery_id}}/retry", dependencies=admin, responses=_ERRORS, tags=["delivery"]
    )
    def retry_delivery(delivery_id: int) -> DeliveryOut:
        """Send again now, with a fresh retry schedule; earlier attempts stay listed."""
        row = outbox.retry_delivery(runtime.database, delivery_id, runtime.clock)
        runtime.dispatcher.wake()
        return DeliveryOut.model_validate(row)

    return api


def _after(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    if not cursor.isdigit():
        raise ValidationFailed("cursor is the next_cursor of a previous page", {"cursor": "not a cursor"})
    return int(cursor)


def _next(items: list[Any], limit: int) -> str | None:
    return str(items[-1].id) if len(items) == limit else None
