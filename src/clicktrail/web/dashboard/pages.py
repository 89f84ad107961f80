"""Dashboard routes: sign-in, overview, reports, the catalog, the logs and the lookup of one click.

Every page calls the same domain functions as the API; nothing here computes a figure of its own,
so the dashboard and the API agree to the cent. Templates autoescape every value."""

import dataclasses
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from zoneinfo import available_timezones

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.templating import Jinja2Templates

from clicktrail.accounts.audit import Actor
from clicktrail.accounts.models import ADMIN_TOKEN, Principal
from clicktrail.accounts.roles import CONFIGURE
from clicktrail.catalog.models import CampaignInput, LanderInput, OfferInput, SourceInput
from clicktrail.clicks.queries import get_click
from clicktrail.conversions.queries import TimeRange, find_clicks, find_conversions, find_postbacks
from clicktrail.delivery import queries as outbox
from clicktrail.errors import ClicktrailError, ClientError, NotFound, RateLimited, ValidationFailed
from clicktrail.reports.costs import cost_updates
from clicktrail.reports.dimensions import DIMENSIONS, Metric
from clicktrail.reports.render import csv_text, json_rows
from clicktrail.reports.request import (
    FILTER_PARAMS,
    MAX_LIMIT,
    parse_dimension_filters,
    parse_report_request,
)
from clicktrail.reports.result import ReportResult
from clicktrail.web.auth import Limits, request_ip
from clicktrail.web.dashboard.deliveries import add_delivery_routes
from clicktrail.web.dashboard.drill import drill_down
from clicktrail.web.dashboard.editing import (
    LANDER_FIELDS,
    Field,
    add_editing_routes,
    campaign_fields,
    new_values,
    offer_fields,
)
from clicktrail.web.dashboard.kit import PageKit, field_errors
from clicktrail.web.dashboard.partner import PARTNER_PAGE, add_partner_page
from clicktrail.web.dashboard.session import COOKIE, LIFETIME_SECONDS, Session, SessionSigner
from clicktrail.web.dashboard.tables import leading_dimensions, report_rows
from clicktrail.web.dashboard.trials import add_trial_routes
from clicktrail.web.errors import status_for
from clicktrail.web.runtime import Runtime

_HERE = Path(__file__).parent
NONCE_COOKIE = "clicktrail_login_nonce"
ZONES = sorted(available_timezones())
NUMERIC = {m.value for m in Metric} | {"hour"}
REPORT_PAGE = 500
"""Rows per report page (the totals cover every row; the CSV export holds them all). A 1,000-row page
took about a second of browser work on a loaded 2-core machine: BENCHMARKS.md, "Report page"."""


class SignInRequired(Exception):
    def __init__(self, path: str) -> None:
        self.path = path


class GoTo(Exception):
    """Send the browser to another page of the dashboard (303)."""

    def __init__(self, path: str) -> None:
        self.path = path


class PageRefused(Exception):
    """The signed-in role may not open this page or send this form (answered 403)."""

    def __init__(self, role: str, detail: str) -> None:
        self.role = role
        self.detail = detail


def _local_next(value: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


def create_dashboard(runtime: Runtime, limits: Limits) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    templates = Jinja2Templates(directory=str(_HERE / "templates"))
    templates.env.globals |= {"report_rows": report_rows, "leading_dimensions": leading_dimensions}
    signer = SessionSigner(runtime.key)
    secure = runtime.settings.public_url.startswith("https://")

    def session_of(request: Request) -> Session:
        """The open session of the request, checked server-side, with the role checks every page
        shares: the pages show the whole tracker, so scoped roles (affiliate, advertiser) get their own
        page only; read-only roles may send no form but sign-out."""
        session = signer.read(request.cookies.get(COOKIE))
        principal = runtime.accounts.session_principal(session.session_id) if session else None
        if session is None or principal is None:
            raise SignInRequired(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
        if principal.scope is not None and request.url.path == "/":
            raise GoTo(PARTNER_PAGE)
        if principal.scope is not None and request.url.path not in (PARTNER_PAGE, "/logout"):
            raise PageRefused(
                principal.role,
                f"This page shows the whole tracker; an account with the {principal.role} role "
                f"sees its own figures on {PARTNER_PAGE}, or through the API with an API key.",
            )
        if (
            request.method == "POST"
            and request.url.path != "/logout"
            and not CONFIGURE.allows(principal.role)
        ):
            raise PageRefused(principal.role, f"The {principal.role} role may look but not change anything.")
        return dataclasses.replace(session, principal=principal)

    def render(
        request: Request, name: str, session: Session | None, status: int = 200, **context: Any
    ) -> Response:
        who = session.principal if session else None
        context |= {
            "signed_in": session is not None,
            "who": who,
            "scoped": who is not None and who.scope is not None,
            "can_edit": who is not None and CONFIGURE.allows(who.role),
            "csrf": signer.csrf_token(session) if session else "",
            "zones": ZONES,
            "numeric": NUMERIC,
        }
        response = templates.TemplateResponse(request, name, context, status_code=status)
        response.headers["content-security-policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
            "frame-ancestors 'none'"
        )
        response.headers["x-content-type-options"] = "nosniff"
        response.headers["referrer-policy"] = "same-origin"
        return response

    async def checked_form(request: Request, session: Session) -> dict[str, str]:
        form = {key: str(value) for key, value in (await request.form()).items()}
        if not signer.csrf_ok(session, form.pop("csrf", None)):
            raise ValidationFailed(
                "the form expired; reload the page and try again", {"form": "bad CSRF token"}
            )
        return form

    def report(params: dict[str, str]) -> tuple[ReportResult | None, ClicktrailError | None]:
        """The report, or why not: a bad parameter, or the report engine unreachable or failing (the
        page says so instead of the API's JSON error)."""
        try:
            parsed = parse_report_request(params, today=runtime.clock().date())
            return runtime.reports.run(parsed, cost_updates(runtime.database)), None
        except ClicktrailError as exc:
            return None, exc

    # Sign-in
    @router.get("/login")
    def login_page(request: Request, next: str = "/") -> Response:
        nonce = secrets.token_urlsafe(16)
        response = render(request, "login.html", None, nonce=nonce, next=_local_next(next))
        response.set_cookie(NONCE_COOKIE, nonce, max_age=600, httponly=True, samesite="strict", secure=secure)
        return response

    def check_sign_in_rate(address: str, username: str) -> None:
        limits.sign_in_ip.check(address)
        if username:
            limits.sign_in_account.check(username.lower())

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = {key: str(value) for key, value in (await request.form()).items()}
        nonce_cookie = request.cookies.get(NONCE_COOKIE)
        target = _local_next(form.get("next"))
        username = form.get("username", "").strip()[:254]
        secret = form.get("token", "")
        status, headers, principal = 401, {}, None
        try:
            check_sign_in_rate(request_ip(runtime, request), username)
        except RateLimited as exc:
            status, headers = 429, {"retry-after": str(exc.retry_after)}
            error = f"Too many sign-in attempts; try again in {exc.retry_after} seconds."
        else:
            if not nonce_cookie or not secrets.compare_digest(nonce_cookie, form.get("nonce", "")):
                error = "The sign-in form expired; please try again."
            elif username:
                principal = await run_in_threadpool(runtime.accounts.sign_in, username, secret)
                error = "Wrong username or password, or the account is disabled."
            else:
                token = secret.strip()
                accepted = bool(token) and await run_in_threadpool(runtime.tokens.accepts, token)
                principal = ADMIN_TOKEN if accepted else None
                error = "That token is not this tracker's admin token."
        if principal is not None:
            return await open_session(principal, target)
        nonce = secrets.token_urlsafe(16)
        page = render(
            request, "login.html", None, status, nonce=nonce, next=target, error=error, username=username
        )
        page.headers.update(headers)
        page.set_cookie(NONCE_COOKIE, nonce, max_age=600, httponly=True, samesite="strict", secure=secure)
        return page

    async def open_session(principal: Principal, target: str) -> Response:
        cookie = signer.issue()
        session = signer.read(cookie)
        assert session is not None
        expires = datetime.fromtimestamp(session.expires, UTC)
        await run_in_threadpool(runtime.accounts.open_session, session.session_id, principal, expires)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE, cookie, max_age=LIFETIME_SECONDS, httponly=True, samesite="strict", secure=secure
        )
        response.delete_cookie(NONCE_COOKIE)
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        session = await run_in_threadpool(session_of, request)
        await checked_form(request, session)
        # Closed server-side: the cookie, if kept or stolen, opens nothing any more.
        await run_in_threadpool(runtime.accounts.close_session, session.session_id)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    # Overview
    @router.get("/")
    def overview(request: Request) -> Response:
        session = session_of(request)
        params = _period_params(request, runtime)
        by_day, error = report(params | {"group_by": "day", "sort": "day", "limit": "400"})
        by_campaign, _ = report(params | {"group_by": "campaign", "sort": "-clicks", "limit": "50"})
        names = runtime.cache.snapshot.names
        totals = json_rows(by_day, names)["totals"] if by_day else {}
        return render(
            request, "overview.html", session, page="overview", form=params, totals=totals,
            error=error.detail if error else None,
            chart=_chart(by_day, params["from"], params["to"]),
            by_campaign=json_rows(by_campaign, names)["rows"] if by_campaign else [],
            campaign_columns=["campaign", "clicks", "conversions", "revenue", "cost", "profit", "roi"],
        )  # fmt: skip

    # Reports
    @router.get("/reports")
    def reports_page(request: Request) -> Response:
        session = session_of(request)
        query = dict(request.query_params)
        group_by = [query.pop(f"g{n}") for n in range(4) if query.get(f"g{n}")] or ["campaign"]
        params = _period_params(request, runtime) | {k: v for k, v in query.items() if k in FILTER_PARAMS}
        params |= {k: query[k] for k in ("sort", "event", "events", "by", "offset") if query.get(k)}
        params["group_by"] = ",".join(group_by)
        params["limit"] = str(REPORT_PAGE)
        started = time.perf_counter()
        result, error = report(params)
        engine_ms = (time.perf_counter() - started) * 1000
        names = runtime.cache.snapshot.names
        data = json_rows(result, names) if result else {"rows": [], "totals": {}, "columns": []}
        filters = [(k, v) for k, v in params.items() if k in FILTER_PARAMS]
        base = {k: v for k, v in request.query_params.items() if k not in ("sort", "offset")}
        columns = data["columns"] or [*group_by]
        current = params.get("sort", "")
        sort_links = {
            c: "?" + urlencode(base | {"sort": c if current == f"-{c}" else f"-{c}"}) for c in columns
        }
        # The export holds every row (up to the report limit), not the page on screen.
        csv_link = "/reports.csv?" + urlencode(
            {k: v for k, v in params.items() if k != "offset"} | {"limit": str(MAX_LIMIT)}
        )
        clear = {k: v for k, v in request.query_params.items() if k not in FILTER_PARAMS}
        started, cpu_started = time.perf_counter(), time.thread_time()
        page = render(
            request, "reports.html", session, page="reports", form=params, group_by=group_by,
            dimensions=list(DIMENSIONS), rows=data["rows"], totals=data["totals"], columns=columns,
            error=error.detail if error else None, filters=filters, sort_links=sort_links, csv_link=csv_link,
            clear_link="?" + urlencode(clear),
            drill=drill_down(request.query_params, group_by, data["rows"], names),
            paging=_paging(request, params, len(data["rows"]), data),
        )  # fmt: skip
        # Where the time went, for the browser's Performance API (scripts/report_render.py reads it).
        page.headers["server-timing"] = (
            f'report;dur={engine_ms:.1f};desc="report engine", '
            f'html;dur={(time.perf_counter() - started) * 1000:.1f};desc="page template", '
            f'html-cpu;dur={(time.thread_time() - cpu_started) * 1000:.1f};desc="page template, CPU"'
        )
        return page

    @router.get("/reports.csv")
    def reports_csv(request: Request) -> Response:
        session_of(request)
        params = dict(request.query_params)
        result, error = report(params | {"format": "csv"})
        if result is None:
            assert error is not None
            status = 400 if isinstance(error, ClientError) else status_for(error.code)  # 503: retry
            return Response(error.detail, status_code=status, media_type="text/plain")
        return Response(
            csv_text(result, runtime.cache.snapshot.names),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": 'attachment; filename="clicktrail-report.csv"'},
        )

    # Catalog
    def catalog_page(request: Request, session: Session, kind: str, values: dict[str, str] | None = None,
                     errors: dict[str, str] | None = None, status: int = 200) -> Response:  # fmt: skip
        catalog = runtime.catalog
        offers = catalog.list_offers(limit=1000)
        base = runtime.settings.public_url
        items: list[dict[str, Any]]
        if kind == "offers":
            items = [_shown(o) for o in offers]
            columns = ["id", "name", "url", "revenue", "payout", "currency", "daily_cap", "fallback_offer_id"]
        elif kind == "landers":
            items = [_shown(lp) for lp in catalog.list_landers(limit=1000)]
            columns = ["id", "name", "url"]
        elif kind == "sources":
            items = [_shown(s) for s in catalog.list_sources(limit=1000)]
            columns = ["id", "name", "postback_url"]
        else:
            items = [
                _shown(c) | {"tracking_url": f"{base}/c/{c.key}"} for c in catalog.list_campaigns(limit=1000)
            ]
            columns = ["id", "name", "source_id", "offer_id", "lander_id", "cost_model", "cost_value",
                       "tracking_url"]  # fmt: skip
        return render(
            request, "catalog.html", session, status, page=kind, heading=kind.capitalize(), noun=kind[:-1],
            items=items, columns=columns, fields=creation_fields(kind), values=values or {},
            errors=errors or {}, click_through=f"{base}/lp/click",
            postback_url=f"{base}/postback?click_id={{click_id}}&event=sale&payout={{amount}}&txid={{order_id}}",
        )  # fmt: skip

    def creation_fields(kind: str) -> tuple[Field, ...]:
        catalog = runtime.catalog
        if kind == "offers":
            return offer_fields(catalog.list_offers(limit=1000))
        if kind == "landers":
            return LANDER_FIELDS
        if kind == "sources":
            return _SOURCE_FIELDS
        return campaign_fields(
            catalog.list_sources(limit=1000), catalog.list_offers(limit=1000),
            catalog.list_landers(limit=1000), with_ids=False,
        )  # fmt: skip

    def lister(kind: str) -> Callable[[Request], Response]:
        def handler(request: Request) -> Response:
            return catalog_page(request, session_of(request), kind)

        return handler

    def creator(
        kind: str, create: Callable[[dict[str, Any], Actor], object]
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handler(request: Request) -> Response:
            session = session_of(request)
            try:
                form = await checked_form(request, session)
            except ValidationFailed as exc:
                return catalog_page(request, session, kind, errors=exc.fields, status=403)
            try:
                assert session.principal is not None
                create(new_values(creation_fields(kind), form), session.principal.actor)
                runtime.catalog_changed()
            except ValidationError as exc:
                return catalog_page(request, session, kind, values=form, errors=field_errors(exc), status=422)
            except ClicktrailError as exc:
                fields = exc.fields if isinstance(exc, ValidationFailed) else {}
                errors = fields or {"form": exc.detail}
                return catalog_page(request, session, kind, values=form, errors=errors, status=422)
            return RedirectResponse(f"/{kind}", status_code=303)

        return handler

    catalog = runtime.catalog
    creators: dict[str, Callable[[dict[str, Any], Actor], object]] = {
        "offers": lambda values, actor: catalog.create_offer(OfferInput(**values), actor),
        "landers": lambda values, actor: catalog.create_lander(LanderInput(**values), actor),
        "sources": lambda values, actor: catalog.create_source(SourceInput(**values), actor),
        "campaigns": lambda values, actor: catalog.create_campaign(CampaignInput(**values), actor),
    }
    for kind, create in creators.items():
        router.add_api_route(f"/{kind}", lister(kind), methods=["GET"])
        router.add_api_route(f"/{kind}", creator(kind, create), methods=["POST"])

    @router.get("/help/postback-signing")
    def signing_help(request: Request) -> Response:
        return render(request, "postback_signing.html", session_of(request), page="offers")

    # Logs
    @router.get("/logs/{kind}")
    def log_page(request: Request, kind: str) -> Response:
        session = session_of(request)
        form = dict(request.query_params)
        cursor = form.pop("cursor", None)
        period = TimeRange()
        error = None
        rows: list[dict[str, Any]] = []
        next_cursor = None
        try:
            filters = parse_dimension_filters({k: v for k, v in form.items() if v})
            if kind == "clicks":
                page = find_clicks(runtime.database, filters=filters, period=period, cursor=cursor, limit=100)
                rows, next_cursor = [r._asdict() for r in page.rows], page.next_cursor
                columns = ["created_at", "click_id", "campaign_id", "sub1", "sub2", "external_id", "country",
                           "device_type", "ip", "user_agent"]  # fmt: skip
                names = ["campaign_id", "sub1", "country"]
            elif kind == "conversions":
                cpage = find_conversions(
                    runtime.database, click_id=form.get("click_id") or None, filters=filters, period=period,
                    cursor=cursor, limit=100,
                )  # fmt: skip
                rows, next_cursor = cpage.rows, cpage.next_cursor
                columns = ["created_at", "conversion_id", "click_id", "event", "status", "txid", "revenue",
                           "payout", "campaign_id", "sub1"]  # fmt: skip
                names = ["click_id", "campaign_id", "sub1"]
            elif kind == "postbacks":
                ppage = find_postbacks(
                    runtime.database, click_id=form.get("click_id") or None, txid=form.get("txid") or None,
                    decision=form.get("decision") or None, period=period, cursor=cursor, limit=100,
                )  # fmt: skip
                rows, next_cursor = [r._asdict() for r in ppage.rows], ppage.next_cursor
                columns = ["received_at", "decision", "error", "click_id", "event", "txid", "conversion_id",
                           "ip", "query", "detail"]  # fmt: skip
                names = ["click_id", "txid", "decision"]
            else:
                raise NotFound(f"no log called {kind}")
        except ValidationFailed as exc:
            error, columns, names = exc.detail, [], []
        next_link = "?" + urlencode(form | {"cursor": next_cursor}) if next_cursor else None
        return render(
            request, "log.html", session, page=kind, heading=f"{kind.capitalize()} log", rows=rows,
            columns=columns, filter_names=names, form=form, error=error, next_link=next_link,
        )  # fmt: skip

    # The whole story of one click
    @router.get("/lookup")
    def lookup(request: Request, q: str = "") -> Response:
        session = session_of(request)
        text = q.strip()[:255]
        click: dict[str, Any] | None = None
        error = None
        try:
            click = get_click(runtime.database, runtime.codec, text)._asdict()
        except ValidationFailed:
            click = None  # not a click ID: maybe a txid
        except NotFound:
            error = "This click ID is well-formed but no click with it was stored."
        click_id = click["click_id"] if click else None
        conversions = (
            find_conversions(runtime.database, click_id=click_id, filters=(), period=TimeRange(), cursor=None,
                             limit=100).rows if click_id else []
        )  # fmt: skip
        looks_like_id = len(text) == 32
        postbacks = find_postbacks(
            runtime.database, click_id=click_id or (text.lower() if looks_like_id else None),
            txid=None if click_id or looks_like_id else text, decision=None, period=TimeRange(),
            cursor=None, limit=100,
        ).rows  # fmt: skip
        if not click and not postbacks and not error:
            error = "No click with this ID and no postback with this txid."
        deliveries = (
            outbox.find_deliveries(runtime.database, click_id=click_id, source_id=None, status=None,
                                   cursor=None, limit=100).rows if click_id else []
        )  # fmt: skip
        return render(
            request, "lookup.html", session, lookup_q=text, click=click, error=error, conversions=conversions,
            conversion_columns=["created_at", "event", "status", "txid", "revenue", "payout"],
            postbacks=[p._asdict() for p in postbacks],
            postback_columns=["received_at", "decision", "error", "event", "txid", "detail", "ip"],
            deliveries=deliveries,
            delivery_columns=["id", "created_at", "source_id", "conversion_status", "status", "attempts_made",
                              "last_error"],
        )  # fmt: skip

    kit = PageKit(runtime, render, session_of, signer)
    add_editing_routes(router, kit)
    add_trial_routes(router, kit)
    add_delivery_routes(router, kit)
    add_partner_page(router, runtime, session_of, render)
    return router


def _paging(request: Request, params: dict[str, str], shown: int, data: dict[str, Any]) -> dict[str, Any]:
    """Which rows of how many the table shows, with links to the pages before and after."""
    offset = int(params["offset"]) if params.get("offset", "").isdigit() else 0
    total = int(data.get("total_rows") or 0)
    query = {k: v for k, v in request.query_params.items() if k != "offset"}
    before = "?" + urlencode(query | {"offset": str(max(0, offset - REPORT_PAGE))}) if offset else None
    after = "?" + urlencode(query | {"offset": str(offset + shown)}) if offset + shown < total else None
    return {"first": offset + 1 if shown else 0, "last": offset + shown, "total": total, "before": before,
            "after": after}  # fmt: skip


def _period_params(request: Request, runtime: Runtime) -> dict[str, str]:
    today = runtime.clock().date()
    query = request.query_params
    return {
        "from": query.get("from") or (today - timedelta(days=6)).isoformat(),
        "to": query.get("to") or today.isoformat(),
        "tz": query.get("tz") or "UTC",
    }


def _shown(item: Any) -> dict[str, Any]:
    return {
        name: (str(value) if isinstance(value, Decimal) else value) for name, value in _fields(item).items()
    }


def _fields(item: Any) -> dict[str, Any]:
    return {name: getattr(item, name) for name in item.__slots__}


def _chart(result: ReportResult | None, first: str, last: str) -> str:
    """Daily clicks (bars) and conversions (dots) as inline SVG: no chart library, no CDN. Every day of
    the range gets its place, with or without traffic."""
    if result is None or not result.rows:
        return '<p class="empty">No clicks in this period.</p>'
    by_day = {str(row["day"]): row for row in result.rows}
    try:
        start, end = date.fromisoformat(first[:10]), date.fromisoformat(last[:10])
    except ValueError:
        start = end = date.fromisoformat(min(by_day))
    days = [(start + timedelta(days=n)).isoformat() for n in range(min((end - start).days + 1, 400))]
    rows = [by_day.get(day, {"day": day, "clicks": 0, "conversions": 0}) for day in days]
    most = max(int(row["clicks"]) for row in rows) or 1
    most_conversions = max(int(row["conversions"]) for row in rows) or 1
    width = 1000 / len(rows)
    parts = [
        '<svg class="chart" viewBox="0 0 1000 180" role="img" aria-label="Clicks and conversions by day">'
    ]
    for n, row in enumerate(rows):
        height = 150 * int(row["clicks"]) / most
        x = n * width
        day = str(row["day"])
        parts.append(
            f'<rect class="bar" x="{x + width * 0.1:.1f}" y="{150 - height:.1f}" width="{width * 0.8:.1f}" '
            f'height="{height:.1f}"><title>{day}: {int(row["clicks"])} clicks, '
            f"{int(row['conversions'])} conversions</title></rect>"
        )
        dot = 150 - 150 * int(row["conversions"]) / most_conversions
        parts.append(f'<circle class="conv" cx="{x + width / 2:.1f}" cy="{dot:.1f}" r="3"></circle>')
        if len(rows) <= 31 or n % max(1, len(rows) // 15) == 0:
            parts.append(f'<text x="{x + width / 2:.1f}" y="170" text-anchor="middle">{day[5:]}</text>')
    parts.append("</svg>")
    return "".join(parts)


_SOURCE_FIELDS = (
    Field("name", "Name", required=True),
    Field("postback_url", "Outbound postback URL (optional)",
          help="called on each conversion; macros such as {external_id}, {payout}, {event}, {conversion_id}"),
)  # fmt: skip
