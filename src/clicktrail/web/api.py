"""The admin API under /api/v1: JSON in and out, bearer-token auth, errors as {"error", "detail"}."""

from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from clicktrail import __version__
from clicktrail.catalog.models import (
    Campaign,
    CampaignInput,
    CampaignPatch,
    LanderInput,
    LanderPatch,
    OfferInput,
    OfferPatch,
    SourceInput,
    SourcePatch,
)
from clicktrail.clicks.queries import get_click
from clicktrail.conversions.queries import TimeRange, find_clicks, find_conversions, find_postbacks
from clicktrail.delivery import queries as outbox
from clicktrail.delivery.trial import send_test_postback
from clicktrail.errors import ClicktrailError, Unauthorized, ValidationFailed
from clicktrail.reports.costs import CostUpdateInput, cost_updates, record_cost_update
from clicktrail.reports.render import csv_text, json_rows
from clicktrail.reports.request import OutputFormat, parse_dimension_filters, parse_report_request
from clicktrail.web.dashboard.pages import SignInRequired, create_dashboard
from clicktrail.web.errors import status_for
from clicktrail.web.runtime import Runtime
from clicktrail.web.schemas import (
    BreakerOut,
    CampaignOut,
    ClickOut,
    ConversionOut,
    CostUpdateOut,
    DeliveryOut,
    ErrorOut,
    LanderOut,
    OfferOut,
    Page,
    PostbackLogOut,
    SourceOut,
    TestPostbackOut,
)

DASHBOARD_STATIC = FilePath(__file__).parent / "dashboard" / "static"
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[
    str | None, Query(pattern=r"^[0-9]{1,10}$", description="next_cursor of the previous page")
]
MAX_ROW_ID = 2_147_483_647
IdPath = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
DateParam = Annotated[
    str | None,
    Query(max_length=40, pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}([T ][0-9:.]+)?(Z|[+-][0-9:]+)?$",
          description="an ISO date (a whole day, UTC) or datetime"),
]  # fmt: skip
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "a query names something that does not exist"},
    401: {"model": ErrorOut, "description": "missing or wrong bearer token"},
    404: {"model": ErrorOut, "description": "no such object"},
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
        return JSONResponse(
            {"error": code, "detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

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
    def get_offer(offer_id: IdPath) -> OfferOut:
        return OfferOut.model_validate(runtime.catalog.get_offer(offer_id))

    @api.patch(f"{v1}/offers/{{offer_id}}", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def patch_offer(offer_id: IdPath, data: OfferPatch) -> OfferOut:
        offer = runtime.catalog.patch_offer(offer_id, data)
        changed()
        return OfferOut.model_validate(offer)

    # Landers
    @api.post(f"{v1}/landers", status_code=201, dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def create_lander(data: LanderInput) -> LanderOut:
        """A landing page shown before the offer; its links go on through /lp/click?click_id={click_id}."""
        lander = runtime.catalog.create_lander(data)
        changed()
        return LanderOut.model_validate(lander)

    @api.get(f"{v1}/landers", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def list_landers(cursor: Cursor = None, limit: Limit = 100) -> Page[LanderOut]:
        landers = runtime.catalog.list_landers(_after(cursor), limit)
        return Page(items=[LanderOut.model_validate(x) for x in landers], next_cursor=_next(landers, limit))

    @api.get(f"{v1}/landers/{{lander_id}}", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def get_lander(lander_id: IdPath) -> LanderOut:
        return LanderOut.model_validate(runtime.catalog.get_lander(lander_id))

    @api.patch(f"{v1}/landers/{{lander_id}}", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def patch_lander(lander_id: IdPath, data: LanderPatch) -> LanderOut:
        lander = runtime.catalog.patch_lander(lander_id, data)
        changed()
        return LanderOut.model_validate(lander)

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
    def get_source(source_id: IdPath) -> SourceOut:
        return SourceOut.model_validate(runtime.catalog.get_source(source_id))

    @api.patch(f"{v1}/sources/{{source_id}}", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def patch_source(source_id: IdPath, data: SourcePatch) -> SourceOut:
        source = runtime.catalog.patch_source(source_id, data)
        changed()
        return SourceOut.model_validate(source)

    @api.post(f"{v1}/sources/{{source_id}}/test", dependencies=admin, responses=_ERRORS, tags=["delivery"])
    async def test_source(source_id: IdPath) -> TestPostbackOut:
        """Send the source one postback filled with sample values; show what was called and the answer."""
        source = await run_in_threadpool(runtime.catalog.get_source, source_id)
        result = await send_test_postback(runtime.sender, source_id, source.postback_url)
        return TestPostbackOut.model_validate(result)

    @api.get(f"{v1}/sources/{{source_id}}/breaker", dependencies=admin, responses=_ERRORS, tags=["delivery"])
    def source_breaker(source_id: IdPath) -> BreakerOut:
        return BreakerOut.model_validate(outbox.breaker_of(runtime.database, source_id))

    @api.post(f"{v1}/sources/{{source_id}}/resume", dependencies=admin, responses=_ERRORS, tags=["delivery"])
    def resume_source(source_id: IdPath) -> BreakerOut:
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
    def get_campaign(campaign_id: IdPath) -> CampaignOut:
        return campaign_out(runtime.catalog.get_campaign(campaign_id))

    @api.patch(f"{v1}/campaigns/{{campaign_id}}", dependencies=admin, responses=_ERRORS, tags=["catalog"])
    def patch_campaign(campaign_id: IdPath, data: CampaignPatch) -> CampaignOut:
        campaign = runtime.catalog.patch_campaign(campaign_id, data)
        changed()
        return campaign_out(campaign)

    # Events
    @api.get(f"{v1}/clicks/{{click_id}}", dependencies=admin, responses=_ERRORS, tags=["events"])
    def click(click_id: str) -> ClickOut:
        return ClickOut.model_validate(get_click(runtime.database, runtime.codec, click_id))

    @api.get(f"{v1}/clicks", dependencies=admin, responses=_ERRORS, tags=["events"])
    def clicks(
        request: Request,
        from_: Annotated[DateParam, Query(alias="from")] = None,
        to: DateParam = None,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Limit = 100,
    ) -> Page[ClickOut]:
        """The click log, newest first. Filters: any report dimension (campaign_id=, sub1=, country=…)."""
        page = find_clicks(
            runtime.database,
            filters=parse_dimension_filters(request.query_params),
            period=_period(from_, to),
            cursor=cursor,
            limit=limit,
        )
        return Page(items=[ClickOut.model_validate(row) for row in page.rows], next_cursor=page.next_cursor)

    @api.get(f"{v1}/conversions", dependencies=admin, responses=_ERRORS, tags=["events"])
    def conversions(
        request: Request,
        click_id: Annotated[str | None, Query(max_length=64)] = None,
        from_: Annotated[DateParam, Query(alias="from")] = None,
        to: DateParam = None,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Limit = 100,
    ) -> Page[ConversionOut]:
        """Conversions, newest first, with their status history. Filters: click_id and any report
        dimension (campaign_id=, sub1=, country=…)."""
        page = find_conversions(
            runtime.database,
            click_id=click_id,
            filters=parse_dimension_filters(request.query_params),
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
        from_: Annotated[DateParam, Query(alias="from")] = None,
        to: DateParam = None,
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

    @api.post(
        f"{v1}/campaigns/{{campaign_id}}/cost", status_code=201, dependencies=admin, responses=_ERRORS,
        tags=["reports"],
    )  # fmt: skip
    def update_cost(campaign_id: IdPath, data: CostUpdateInput) -> CostUpdateOut:
        """The campaign's actual cost for a past period, spread over that period's clicks in reports
        (replacing their CPC/CPM/passed costs and CPA costs); the newest update wins on overlap."""
        update = record_cost_update(runtime.database, runtime.clock, campaign_id, data)
        return CostUpdateOut.model_validate(update)

    @api.get(f"{v1}/campaigns/{{campaign_id}}/cost", dependencies=admin, responses=_ERRORS, tags=["reports"])
    def list_cost(campaign_id: IdPath) -> Page[CostUpdateOut]:
        runtime.catalog.get_campaign(campaign_id)
        updates = cost_updates(runtime.database, campaign_id)
        return Page(items=[CostUpdateOut.model_validate(u) for u in updates])

    @api.get(
        f"{v1}/reports",
        dependencies=admin,
        responses={**_ERRORS, 200: {"content": {"text/csv": {}}, "description": "rows and totals"}},
        tags=["reports"],
    )
    def report(request: Request) -> Response:
        """Grouped metrics. Parameters: group_by (up to 4 of the dimensions), from, to (dates in tz),
        tz, any dimension filter (campaign_id=, country=, sub3=…), event, events, by
        (click_time|conversion_time), sort (prefix - for descending), limit, offset, format (json|csv)."""
        params = dict(request.query_params)
        parsed = parse_report_request(params, today=runtime.clock().date())
        result = runtime.reports.run(parsed, cost_updates(runtime.database))
        names = runtime.cache.snapshot.names
        if parsed.output is OutputFormat.CSV:
            return Response(
                csv_text(result, names),
                media_type="text/csv; charset=utf-8",
                headers={"content-disposition": 'attachment; filename="clicktrail-report.csv"'},
            )
        return JSONResponse(json_rows(result, names))

    @api.exception_handler(SignInRequired)
    async def sign_in(_: Request, exc: SignInRequired) -> Response:
        return RedirectResponse("/login?" + urlencode({"next": exc.path}), status_code=303)

    # Outbound postbacks
    @api.get(f"{v1}/deliveries", dependencies=admin, responses=_ERRORS, tags=["delivery"])
    def deliveries(
        click_id: Annotated[str | None, Query(max_length=64)] = None,
        source_id: Annotated[int | None, Query(ge=1, le=MAX_ROW_ID)] = None,
        status: Annotated[str | None, Query(max_length=16)] = None,
        cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
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
    def delivery(delivery_id: Annotated[int, Path(ge=1, le=2**62)]) -> DeliveryOut:
        return DeliveryOut.model_validate(outbox.get_delivery(runtime.database, delivery_id))

    @api.post(
        f"{v1}/deliveries/{{delivery_id}}/retry", dependencies=admin, responses=_ERRORS, tags=["delivery"]
    )
    def retry_delivery(delivery_id: Annotated[int, Path(ge=1, le=2**62)]) -> DeliveryOut:
        """Send again now, with a fresh retry schedule; earlier attempts stay listed."""
        row = outbox.retry_delivery(runtime.database, delivery_id, runtime.clock)
        runtime.dispatcher.wake()
        return DeliveryOut.model_validate(row)

    api.include_router(create_dashboard(runtime))
    api.mount("/static", StaticFiles(directory=str(DASHBOARD_STATIC)), name="static")
    return api


def _after(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    # IDs are 32-bit integer columns: a larger cursor is not one we handed out.
    if not cursor.isdigit() or int(cursor) > MAX_ROW_ID:
        raise ValidationFailed("cursor is the next_cursor of a previous page", {"cursor": "not a cursor"})
    return int(cursor)


def _next(items: list[Any], limit: int) -> str | None:
    return str(items[-1].id) if len(items) == limit else None
