"""The dashboard page of a scoped account (affiliate, advertiser): its own figures for a period, its
latest conversions and, for an affiliate, its tracking links. Built from the same scoped calls as the
API (web/scoping.py), so the page shows nothing the account's API key could not."""

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from clicktrail.accounts.roles import Role, redact
from clicktrail.conversions.queries import TimeRange, find_conversions
from clicktrail.errors import ClicktrailError
from clicktrail.reports.costs import cost_updates
from clicktrail.reports.render import json_rows
from clicktrail.reports.request import parse_report_request
from clicktrail.web.dashboard.session import Session
from clicktrail.web.runtime import Runtime
from clicktrail.web.schemas import ConversionOut
from clicktrail.web.scoping import report_without, scoped_report

PARTNER_PAGE = "/partner"
Render = Callable[..., Response]
_CONVERSION_COLUMNS = [
    "created_at", "event", "status", "txid", "revenue", "payout", "campaign_id", "offer_id", "sub1", "country"
]  # fmt: skip


def add_partner_page(
    router: APIRouter, runtime: Runtime, session_of: Callable[[Request], Session], render: Render
) -> None:
    @router.get(PARTNER_PAGE)
    def partner(request: Request) -> Response:
        session = session_of(request)
        who = session.principal
        assert who is not None
        if who.scope is None:
            return render(request, "partner.html", session, page="partner", rows=[], columns=[], form={},
                          error="This page is for affiliate and advertiser accounts.", conversions=[],
                          conversion_columns=[], campaigns=[], totals={})  # fmt: skip
        today = runtime.clock().date()
        query = request.query_params
        form = {
            "from": query.get("from") or (today - timedelta(days=6)).isoformat(),
            "to": query.get("to") or today.isoformat(),
            "tz": query.get("tz") or "UTC",
        }
        group = "campaign" if who.role is Role.AFFILIATE else "offer"
        error: str | None = None
        data: dict[str, Any] = {"rows": [], "totals": {}, "columns": []}
        try:
            parsed = parse_report_request(form | {"group_by": group, "sort": "-clicks"}, today=today)
            result = runtime.reports.run(scoped_report(who, parsed), cost_updates(runtime.database))
            data = json_rows(report_without(who, result), runtime.cache.snapshot.names)
        except ClicktrailError as exc:
            error = exc.detail
        latest = find_conversions(
            runtime.database, click_id=None, filters=(), period=TimeRange(), cursor=None, limit=50,
            within=who.scope,
        )  # fmt: skip
        conversions = [
            redact(ConversionOut.model_validate(row).model_dump(mode="json"), who.hidden)
            for row in latest.rows
        ]
        base = runtime.settings.public_url
        campaigns: list[dict[str, Any]] = []
        if who.role is Role.AFFILIATE:
            campaigns = [
                {"id": c.id, "name": c.name, "tracking_url": f"{base}/c/{c.key}"}
                for c in runtime.catalog.list_campaigns(limit=100_000)
                if c.source_id == who.source_id
            ]
        return render(
            request, "partner.html", session, page="partner", form=form, error=error, rows=data["rows"],
            totals=data["totals"], columns=data["columns"], campaigns=campaigns, conversions=conversions,
            conversion_columns=[c for c in _CONVERSION_COLUMNS if c not in who.hidden],
        )  # fmt: skip
