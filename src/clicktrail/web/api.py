"""The API under /api/v1: JSON in and out, bearer auth (an API key or the admin token), each route
guarded by the role it requires, errors as {"error", "detail"}."""

import html
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.staticfiles import StaticFiles

from clicktrail import __version__
from clicktrail.accounts.models import Principal
from clicktrail.accounts.roles import CONFIGURE, READ, Role, Rule
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
from clicktrail.errors import (
    ClicktrailError,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthorized,
    ValidationFailed,
)
from clicktrail.reports.costs import CostUpdateInput, cost_updates, record_cost_update
from clicktrail.reports.render import csv_text, json_rows
from clicktrail.reports.request import OutputFormat, parse_dimension_filters, parse_report_request
from clicktrail.web.account_api import add_account_routes
from clicktrail.web.auth import ApiAuth, Limits, Who, state_rules_in_descriptions
from clicktrail.web.dashboard.pages import GoTo, PageRefused, SignInRequired, create_dashboard
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
from clicktrail.web.scoping import report_without, scoped_page, scoped_report, shaped

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
    401: {"model": ErrorOut, "description": "missing, wrong, revoked or expired credentials"},
    403: {"model": ErrorOut, "description": "the caller's role may not do this"},
    404: {"model": ErrorOut, "description": "no such object"},
    422: {"model": ErrorOut, "description": "invalid input"},
    429: {"model": ErrorOut, "description": "rate limited; see Retry-After"},
}
# Reads a scoped role may make too: it sees only its own rows, without its role's hidden fields.
AFFILIATE_READ = Rule(Role.ANALYST, frozenset({Role.AFFILIATE}))
ADVERTISER_READ = Rule(Role.ANALYST, frozenset({Role.ADVERTISER}))
SCOPED_READ = Rule(Role.ANALYST, frozenset({Role.AFFILIATE, Role.ADVERTISER}))


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
    limits = Limits(runtime)
    auth = ApiAuth(runtime, limits)
    api = FastAPI(
        title="clicktrail",
        version=__version__,
        openapi_url="/api/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
    )
    v1 = "/api/v1"

    @api.exception_handler(ClicktrailError)
    async def domain_error(_: Request, exc: ClicktrailError) -> JSONResponse:
        body: dict[str, Any] = {"error": exc.code, "detail": exc.detail}
        if isinstance(exc, ValidationFailed) and exc.fields:
            body["fields"] = exc.fields
        headers = {"www-authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
        if isinstance(exc, RateLimited):
            headers = {"retry-after": str(exc.retry_after)}
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
    @api.post(f"{v1}/offers", status_code=201, responses=_ERRORS, tags=["catalog"], **auth.on(CONFIGURE))
    def create_offer(data: OfferInput, who: Who) -> OfferOut:
        offer = runtime.catalog.create_offer(data, who.actor)
        changed()
        return OfferOut.model_validate(offer)

    def own_offer(who: Principal, offer: Any) -> bool:
        return who.role is not Role.ADVERTISER or offer.id in who.offer_ids

    @api.get(
        f"{v1}/offers", response_model=Page[OfferOut], responses=_ERRORS, tags=["catalog"],
        **auth.on(ADVERTISER_READ),
    )  # fmt: skip
    def list_offers(who: Who, cursor: Cursor = None, limit: Limit = 100) -> Any:
        if who.scope is None:
            offers = runtime.catalog.list_offers(_after(cursor), limit)
            next_cursor = _next(offers, limit)
        else:
            offers, next_cursor = scoped_page(
                runtime.catalog.list_offers, lambda o: own_offer(who, o), _after(cursor), limit
            )
        page = Page[OfferOut](items=[OfferOut.model_validate(o) for o in offers], next_cursor=next_cursor)
        return shaped(who, page)

    @api.get(
        f"{v1}/offers/{{offer_id}}", response_model=OfferOut, responses=_ERRORS, tags=["catalog"],
        **auth.on(ADVERTISER_READ),
    )  # fmt: skip
    def get_offer(offer_id: IdPath, who: Who) -> Any:
        offer = runtime.catalog.get_offer(offer_id)
        if not own_offer(who, offer):
            raise NotFound(f"no offer with id {offer_id}")
        return shaped(who, OfferOut.model_validate(offer))

    @api.patch(f"{v1}/offers/{{offer_id}}", responses=_ERRORS, tags=["catalog"], **auth.on(CONFIGURE))
    def patch_offer(offer_id: IdPath, data: OfferPatch, who: Who) -> OfferOut:
        offer = runtime.catalog.patch_offer(offer_id, data, who.actor)
        changed()
        return OfferOut.model_validate(offer)

    # Landers
    @api.post(f"{v1}/landers", status_code=201, responses=_ERRORS, tags=["catalog"], **auth.on(CONFIGURE))
    def create_lander(data: LanderInput, who: Who) -> LanderOut:
        """A landing page shown before the offer; its links go on through /lp/click?click_id={click_id}."""
        lander = runtime.catalog.create_lander(data, who.actor)
        changed()
        return LanderOut.model_validate(lander)

    @api.get(f"{v1}/landers", responses=_ERRORS, tags=["catalog"], **auth.on(READ))
    def list_landers(cursor: Cursor = None, limit: Limit = 100) -> Page[LanderOut]:
        landers = runtime.catalog.list_landers(_after(cursor), limit)
        return Page(items=[LanderOut.model_validate(x) for x in landers], next_cursor=_next(landers, limit))

    @api.get(f"{v1}/landers/{{lander_id}}", responses=_ERRORS, tags=["catalog"], **auth.on(READ))
    def get_lander(lander_id: IdPath) -> LanderOut:
        return LanderOut.model_validate(runtime.catalog.get_lander(lander_id))

    @api.patch(f"{v1}/landers/{{lander_id}}", responses=_ERRORS, tags=["catalog"], **auth.on(CONFIGURE))
    def patch_lander(lander_id: IdPath, data: LanderPatch, who: Who) -> LanderOut:
        lander = runtime.catalog.patch_lander(lander_id, data, who.actor)
        changed()
        return LanderOut.model_validate(lander)

    # Sources
    @api.post(f"{v1}/sources", status_code=201, responses=_ERRORS, tags=["catalog"], **auth.on(CONFIGURE))
    def create_source(data: SourceInput, who: Who) -> SourceOut:
        source = runtime.catalog.create_source(data, who.actor)
        changed()
        return SourceOut.model_validate(source)

    def own_source(who: Principal, source: Any) -> bool:
        return who.role is not Role.AFFILIATE or source.id == who.source_id

    @api.get(
        f"{v1}/sources", response_model=Page[SourceOut], responses=_ERRORS, tags=["catalog"],
        **auth.on(AFFILIATE_READ),
    )  # fmt: skip
    def list_sources(who: Who, cursor: Cursor = None, limit: Limit = 100) -> Any:
        if who.scope is None:
            sources = runtime.catalog.list_sources(_after(cursor), limit)
            next_cursor = _next(sources, limit)
        else:
            sources, next_cursor = scoped_page(
                runtime.catalog.list_sources, lambda s: own_source(who, s), _after(cursor), limit
            )
        page = Page[SourceOut](items=[SourceOut.model_validate(s) for s in sources], next_cursor=next_cursor)
        return shaped(who, page)

    @api.get(
        f"{v1}/sources/{{source_id}}", response_model=SourceOut, responses=_ERRORS, tags=["catalog"],
        **auth.on(AFFILIATE_READ),
    )  # fmt: skip
    def get_source(source_id: IdPath, who: Who) -> Any:
        source = runtime.catalog.get_source(source_id)
        if not own_source(who, source):
            raise NotFound(f"no source with id {source_id}")
        return shaped(who, SourceOut.model_validate(source))

    @api.patch(f"{v1}/sources/{{source_id}}", responses=_ERRORS, tags=["catalog"], **auth.on(CONFIGURE))
    def patch_source(source_id: IdPath, data: SourcePatch, who: Who) -> SourceOut:
        source = runtime.catalog.patch_source(source_id, data, who.actor)
        changed()
        return SourceOut.model_validate(source)

    @api.post(f"{v1}/sources/{{source_id}}/test", responses=_ERRORS, tags=["delivery"], **auth.on(CONFIGURE))
    async def test_source(source_id: IdPath) -> TestPostbackOut:
        """Send the source one postback filled with sample values; show what was called and the answer."""
        source = await run_in_threadpool(runtime.catalog.get_source, source_id)
        result = await send_test_postback(runtime.sender, source_id, source.postback_url)
        return TestPostbackOut.model_validate(result)

    @api.get(f"{v1}/sources/{{source_id}}/breaker", responses=_ERRORS, tags=["delivery"], **auth.on(READ))
    def source_breaker(source_id: IdPath) -> BreakerOut:
        return BreakerOut.model_validate(outbox.breaker_of(runtime.database, source_id))

    @api.post(
        f"{v1}/sources/{{source_id}}/resume", responses=_ERRORS, tags=["delivery"], **auth.on(CONFIGURE)
    )
    def resume_source(source_id: IdPath) -> BreakerOut:
        """Close a tripped circuit breaker by hand: the source's waiting deliveries go out at once."""
        breaker = outbox.resume_source(runtime.database, source_id, runtime.clock)
        runtime.dispatcher.wake()
        return BreakerOut.model_validate(breaker)

    # Campaigns
    @api.post(f"{v1}/campaigns", status_code=201, responses=_ERRORS, tags=["catalog"], **auth.on(CONFIGURE))
    def create_campaign(data: CampaignInput, who: Who) -> CampaignOut:
        campaign = runtime.catalog.create_campaign(data, who.actor)
        changed()
        return campaign_out(campaign)

    @api.get(
        f"{v1}/campaigns", response_model=Page[CampaignOut], responses=_ERRORS, tags=["catalog"],
        **auth.on(AFFILIATE_READ),
    )  # fmt: skip
    def list_campaigns(who: Who, cursor: Cursor = None, limit: Limit = 100) -> Any:
        """Campaigns with their tracking links; an affiliate sees its source's campaigns only."""
        if who.scope is None:
            campaigns = runtime.catalog.list_campaigns(_after(cursor), limit)
            next_cursor = _next(campaigns, limit)
        else:
            campaigns, next_cursor = scoped_page(
                runtime.catalog.list_campaigns, who.sees, _after(cursor), limit
            )
        return shaped(who, Page(items=[campaign_out(c) for c in campaigns], next_cursor=next_cursor))

    @api.get(
        f"{v1}/campaigns/{{campaign_id}}", response_model=CampaignOut, responses=_ERRORS, tags=["catalog"],
        **auth.on(AFFILIATE_READ),
    )  # fmt: skip
    def get_campaign(campaign_id: IdPath, who: Who) -> Any:
        campaign = runtime.catalog.get_campaign(campaign_id)
        if not who.sees(campaign):
            raise NotFound(f"no campaign with id {campaign_id}")
        return shaped(who, campaign_out(campaign))

    @api.patch(f"{v1}/campaigns/{{campaign_id}}", responses=_ERRORS, tags=["catalog"], **auth.on(CONFIGURE))
    def patch_campaign(campaign_id: IdPath, data: CampaignPatch, who: Who) -> CampaignOut:
        campaign = runtime.catalog.patch_campaign(campaign_id, data, who.actor)
        changed()
        return campaign_out(campaign)

    # Events
    @api.get(
        f"{v1}/clicks/{{click_id}}", response_model=ClickOut, responses=_ERRORS, tags=["events"],
        **auth.on(AFFILIATE_READ),
    )  # fmt: skip
    def click(click_id: str, who: Who) -> Any:
        row = get_click(runtime.database, runtime.codec, click_id)
        if not who.sees(row):
            raise NotFound(f"no click {row.click_id}")
        return shaped(who, ClickOut.model_validate(row))

    @api.get(
        f"{v1}/clicks", response_model=Page[ClickOut], responses=_ERRORS, tags=["events"],
        **auth.on(AFFILIATE_READ),
    )  # fmt: skip
    def clicks(
        request: Request,
        who: Who,
        from_: Annotated[DateParam, Query(alias="from")] = None,
        to: DateParam = None,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Limit = 100,
    ) -> Any:
        """The click log, newest first. Filters: any report dimension (campaign_id=, sub1=, country=…)."""
        page = find_clicks(
            runtime.database,
            filters=parse_dimension_filters(request.query_params),
            period=_period(from_, to),
            cursor=cursor,
            limit=limit,
            within=who.scope,
        )
        items = [ClickOut.model_validate(row) for row in page.rows]
        return shaped(who, Page(items=items, next_cursor=page.next_cursor))

    @api.get(
        f"{v1}/conversions", response_model=Page[ConversionOut], responses=_ERRORS, tags=["events"],
        **auth.on(SCOPED_READ),
    )  # fmt: skip
    def conversions(
        request: Request,
        who: Who,
        click_id: Annotated[str | None, Query(max_length=64)] = None,
        from_: Annotated[DateParam, Query(alias="from")] = None,
        to: DateParam = None,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
        limit: Limit = 100,
    ) -> Any:
        """Conversions, newest first, with their status history. Filters: click_id and any report
        dimension (campaign_id=, sub1=, country=…)."""
        filters = parse_dimension_filters(request.query_params)
        if who.role is Role.ADVERTISER and any(column == "source_id" for column, _ in filters):
            raise Forbidden("an advertiser cannot filter by source")
        page = find_conversions(
            runtime.database,
            click_id=click_id,
            filters=filters,
            period=_period(from_, to),
            cursor=cursor,
            limit=limit,
            within=who.scope,
        )
        items = [ConversionOut.model_validate(row) for row in page.rows]
        return shaped(who, Page(items=items, next_cursor=page.next_cursor))

    @api.get(
        f"{v1}/postbacks", response_model=Page[PostbackLogOut], responses=_ERRORS, tags=["events"],
        **auth.on(ADVERTISER_READ),
    )  # fmt: skip
    def postbacks(
        who: Who,
        click_id: Annotated[str | None, Query(max_length=64)] = None,
        txid: Annotated[str | None, Query(max_length=255)] = None,
        decision: Annotated[str | None, Query(max_length=32)] = None,
        from_: Annotated[DateParam, Query(alias="from")] = None,
        to: DateParam = None,
        cursor: Annotated[str | None, Query(max_length=32)] = None,
        limit: Limit = 100,
    ) -> Any:
        """The inbound postback log, newest first; an advertiser sees the postbacks for its offers'
        clicks (not those naming no stored click)."""
        page = find_postbacks(
            runtime.database,
            click_id=click_id,
            txid=txid,
            decision=decision,
            period=_period(from_, to),
            cursor=cursor,
            limit=limit,
            within=who.scope,
        )
        items = [PostbackLogOut.model_validate(row) for row in page.rows]
        return shaped(who, Page(items=items, next_cursor=page.next_cursor))

    @api.post(
        f"{v1}/campaigns/{{campaign_id}}/cost", status_code=201, responses=_ERRORS, tags=["reports"],
        **auth.on(CONFIGURE),
    )  # fmt: skip
    def update_cost(campaign_id: IdPath, data: CostUpdateInput) -> CostUpdateOut:
        """The campaign's actual cost for a past period, spread over that period's clicks in reports
        (replacing their CPC/CPM/passed costs and CPA costs); the newest update wins on overlap."""
        update = record_cost_update(runtime.database, runtime.clock, campaign_id, data)
        return CostUpdateOut.model_validate(update)

    @api.get(f"{v1}/campaigns/{{campaign_id}}/cost", responses=_ERRORS, tags=["reports"], **auth.on(READ))
    def list_cost(campaign_id: IdPath) -> Page[CostUpdateOut]:
        runtime.catalog.get_campaign(campaign_id)
        updates = cost_updates(runtime.database, campaign_id)
        return Page(items=[CostUpdateOut.model_validate(u) for u in updates])

    @api.get(
        f"{v1}/reports",
        responses={**_ERRORS, 200: {"content": {"text/csv": {}}, "description": "rows and totals"}},
        tags=["reports"],
        **auth.on(SCOPED_READ),
    )
    def report(request: Request, who: Who) -> Response:
        """Grouped metrics. Parameters: group_by (up to 4 of the dimensions), from, to (dates in tz),
        tz, any dimension filter (campaign_id=, country=, sub3=…), event, events, by
        (click_time|conversion_time), sort (prefix - for descending), limit, offset, format (json|csv)."""
        params = dict(request.query_params)
        parsed = parse_report_request(params, today=runtime.clock().date())
        parsed = scoped_report(who, parsed)
        result = report_without(who, runtime.reports.run(parsed, cost_updates(runtime.database)))
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

    @api.exception_handler(GoTo)
    async def go_to(_: Request, exc: GoTo) -> Response:
        return RedirectResponse(exc.path, status_code=303)

    @api.exception_handler(PageRefused)
    async def page_refused(_: Request, exc: PageRefused) -> Response:
        body = (
            "<!doctype html><meta charset=utf-8><title>Not for this role</title>"
            f"<h1>Not for this role</h1><p>{html.escape(exc.detail)}</p>"
            '<p><a href="/login">Sign in as someone else</a></p>'
        )
        return HTMLResponse(body, status_code=403)

    # Outbound postbacks
    @api.get(f"{v1}/deliveries", responses=_ERRORS, tags=["delivery"], **auth.on(READ))
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

    @api.get(f"{v1}/deliveries/{{delivery_id}}", responses=_ERRORS, tags=["delivery"], **auth.on(READ))
    def delivery(delivery_id: Annotated[int, Path(ge=1, le=2**62)]) -> DeliveryOut:
        return DeliveryOut.model_validate(outbox.get_delivery(runtime.database, delivery_id))

    @api.post(
        f"{v1}/deliveries/{{delivery_id}}/retry", responses=_ERRORS, tags=["delivery"], **auth.on(CONFIGURE)
    )
    def retry_delivery(delivery_id: Annotated[int, Path(ge=1, le=2**62)]) -> DeliveryOut:
        """Send again now, with a fresh retry schedule; earlier attempts stay listed."""
        row = outbox.retry_delivery(runtime.database, delivery_id, runtime.clock)
        runtime.dispatcher.wake()
        return DeliveryOut.model_validate(row)

    add_account_routes(api, runtime, auth)
    state_rules_in_descriptions(api)
    api.include_router(create_dashboard(runtime, limits))
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
