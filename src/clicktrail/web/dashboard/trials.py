"""Test traffic from a campaign's page: a test click through the campaign's real click path (stored,
enriched and routed like any visit, with the signed-in user's IP and browser) and a test postback
through the real postback pipeline. The campaign page then shows what arrived, read back from the
click, postback, conversion and delivery logs, not from what was sent."""

import asyncio
import secrets
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from clicktrail.catalog.routes import Route
from clicktrail.clicks.intake import redirect_url
from clicktrail.clicks.queries import get_click
from clicktrail.clicks.request import ClickRequest, parse_click_request
from clicktrail.conversions.decision import ConversionStatus, Decision
from clicktrail.conversions.intake import RawPostback
from clicktrail.conversions.queries import TimeRange, find_conversions, find_postbacks
from clicktrail.delivery import queries as outbox
from clicktrail.errors import NotFound, StorageError, ValidationFailed
from clicktrail.macros import SUB_IDS
from clicktrail.types import CampaignId, ClickId, OfferId, SourceId
from clicktrail.web.dashboard.kit import MAX_ROW_ID, BadForm, PageKit, text_of
from clicktrail.web.edge import Edge
from clicktrail.web.runtime import Runtime

TEST_SUB1 = "clicktrail-test"
_SHOWN = 20


def new_test_txid() -> str:
    return f"test-{secrets.token_hex(4)}"


def trial_context(runtime: Runtime, click_text: str | None, decision: str | None = None) -> dict[str, Any]:
    """What the campaign page shows under "Test": the test click as stored and everything that
    happened to it since (postbacks and their decisions, conversions, outbound deliveries), and the
    decision on the test postback just sent (only a known decision is shown)."""
    empty = {
        "trial": None,
        "statuses": [s.value for s in ConversionStatus],
        "test_txid": new_test_txid(),
        "test_sub1": TEST_SUB1,
        "last_decision": decision if decision in {d.value for d in Decision} else None,
    }
    if not click_text:
        return empty
    try:
        click = get_click(runtime.database, runtime.codec, click_text[:64])._asdict()
    except (ValidationFailed, NotFound):
        return empty | {"trial_error": "That test click is not stored (or the click ID is mistyped)."}
    click_id = click["click_id"]
    everything = TimeRange()
    postbacks = find_postbacks(runtime.database, click_id=click_id, txid=None, decision=None,
                               period=everything, cursor=None, limit=_SHOWN).rows  # fmt: skip
    conversions = find_conversions(runtime.database, click_id=click_id, filters=(), period=everything,
                                   cursor=None, limit=_SHOWN).rows  # fmt: skip
    deliveries = outbox.find_deliveries(runtime.database, click_id=click_id, source_id=None, status=None,
                                        cursor=None, limit=_SHOWN).rows  # fmt: skip
    return empty | {
        "trial": {
            "click": click,
            "location": _landing(runtime, click),
            "postbacks": [row._asdict() for row in postbacks],
            "conversions": conversions,
            "deliveries": deliveries,
        },
    }


def _landing(runtime: Runtime, click: dict[str, Any]) -> str | None:
    """Where the click was sent: its offer's URL (as configured now) filled with the click's values."""
    offer = runtime.cache.snapshot.offers.get(OfferId(click["offer_id"]))
    if offer is None:
        return None
    request = ClickRequest(
        key="", subs=tuple(click[name] for name in SUB_IDS), external_id=click["external_id"], cost=None,
        ip=None, user_agent=None, referrer=None,
    )  # fmt: skip
    route = Route(CampaignId(click["campaign_id"]), SourceId(click["source_id"]), offer)
    return redirect_url(request, route, ClickId(click["click_id"]))


def add_trial_routes(router: APIRouter, kit: PageKit) -> None:
    runtime = kit.runtime
    edge = Edge(runtime)

    def client_ip(request: Request) -> str | None:
        return request.client.host if request.client else None

    @router.post("/campaigns/{campaign_id:int}/test-click")
    async def test_click(request: Request, campaign_id: int) -> Response:
        session = kit.session_of(request)
        try:
            form = await kit.form(request, session)
            if campaign_id > MAX_ROW_ID:
                raise NotFound(f"no campaign with id {campaign_id}")
            campaign = await run_in_threadpool(runtime.catalog.get_campaign, campaign_id)
        except BadForm:
            return kit.expired_form(request, session)
        except NotFound as exc:
            return kit.problem(request, session, 404, exc.detail)
        route = await edge.find_route(campaign.key)
        if route is None:
            return kit.problem(
                request, session, 409, "This campaign is not loaded yet; try again in a moment."
            )
        params = {name: text_of(form, name) for name in ("sub1", "sub2", "sub3", "external_id")}
        query = urlencode({name: value for name, value in params.items() if value}).encode()
        click = parse_click_request(
            campaign.key, query, client_ip(request), request.headers.get("user-agent"), None
        )
        try:
            click_id, _, _ = await edge.record_click(route, click)
        except StorageError:
            return kit.problem(request, session, 503, "The click could not be stored; try again in a moment.")
        return RedirectResponse(f"/campaigns/{campaign.id}?test_click={click_id}#test", status_code=303)

    @router.post("/campaigns/{campaign_id:int}/test-postback")
    async def test_postback(request: Request, campaign_id: int) -> Response:
        session = kit.session_of(request)
        try:
            form = await kit.form(request, session)
        except BadForm:
            return kit.expired_form(request, session)
        names = ("click_id", "event", "payout", "txid", "status")
        params = {name: value for name in names if (value := text_of(form, name))}
        raw = RawPostback("POST", params, client_ip(request))
        try:
            outcome = await asyncio.to_thread(runtime.postbacks.handle, raw)
        except StorageError:
            return kit.problem(
                request, session, 503, "The postback could not be stored; try again in a moment."
            )
        shown = {"test_click": params.get("click_id", ""), "postback": outcome.decision.value}
        return RedirectResponse(f"/campaigns/{campaign_id}?{urlencode(shown)}#test", status_code=303)
