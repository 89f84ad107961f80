"""Editing offers (with their caps and postback authentication), landers, sources and campaigns (with
a campaign's lander, A/B split and routing rules).

Each page shows the stored values in a form. Saving sends only the fields the user changed, as a
PATCH through the same Catalog calls the API uses, so a field this form does not show is never
written. A form opened before someone else saved the same item is refused rather than silently
undoing their change. Errors are shown next to their field."""

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import available_timezones

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData

from clicktrail.accounts.audit import SYSTEM, Actor
from clicktrail.catalog.models import (
    POSTBACK_MACROS,
    Campaign,
    CampaignPatch,
    CostModel,
    Lander,
    LanderPatch,
    Offer,
    OfferPatch,
    Source,
    SourcePatch,
)
from clicktrail.catalog.rules import MAX_OFFERS_PER_PATH, RoutingInput
from clicktrail.conversions.decision import ConversionStatus
from clicktrail.delivery import queries as outbox
from clicktrail.delivery.sender import AttemptResult
from clicktrail.delivery.trial import send_test_postback
from clicktrail.errors import ClicktrailError, NotFound, ValidationFailed
from clicktrail.money import format_money
from clicktrail.web.dashboard.kit import MAX_ROW_ID, BadForm, PageKit, field_errors, text_of
from clicktrail.web.dashboard.session import Session
from clicktrail.web.dashboard.trials import trial_context

Shown = dict[str, Any]
"""A form's values as the inputs show them: text, or a list of texts for checkboxes."""


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    label: str
    kind: str = "text"
    """text | select | checkboxes | list (comma-separated values) | lines (one value a line)"""
    help: str = ""
    required: bool = False
    nullable: bool = False
    """An empty input means "none" (null), not an empty text."""
    choices: tuple[tuple[str, str], ...] = ()
    default: str = ""
    """What a creation form starts with (the API's default)."""


URL_MACROS_HELP = (
    "http(s) URL; {click_id}, {sub1}…{sub10}, {external_id}, {campaign_id}, {offer_id}, {source_id} "
    "are filled per click, percent-encoded"
)
ZONES = tuple(sorted(available_timezones()))


def offer_fields(offers: Sequence[Offer], own_id: int | None = None) -> tuple[Field, ...]:
    """An offer's fields; the fallback is chosen among the other offers."""
    fallbacks = tuple((str(o.id), f"{o.id} · {o.name}") for o in offers if o.id != own_id)
    return (
        Field("name", "Name", required=True),
        Field("url", "Offer URL", required=True, help=URL_MACROS_HELP),
        Field("revenue", "Revenue per conversion", help="used when the postback carries no payout",
              default="0"),
        Field("payout", "Payout to the affiliate", default="0"),
        Field("currency", "Currency", help="ISO 4217 code such as USD", default="USD"),
        Field("attribution_window_days", "Attribution window (days)", default="30",
              help="postbacks later than this after the click are refused as expired (1 to 365)"),
        Field("daily_cap", "Daily cap (optional)", nullable=True,
              help="approved and pending conversions a day; once reached, new clicks go to the fallback "
                   "offer until midnight; empty: no cap"),
        Field("cap_timezone", "Cap timezone", kind="select", choices=tuple((z, z) for z in ZONES),
              default="UTC", help="the cap's day runs from midnight to midnight in this timezone"),
        Field("fallback_offer_id", "Fallback offer", kind="select", nullable=True,
              choices=(("", "(none)"), *fallbacks),
              help="takes the new clicks once the cap is reached (and its own fallback when it is capped "
                   "too); it may not lead back to this offer"),
        Field("postback_token", "Postback token (optional)", nullable=True,
              help="when set, the merchant's postbacks must carry token=…; empty: no token needed"),
        Field("postback_ips", "Postback IP allowlist (optional)", kind="lines",
              help="one address or CIDR range a line, e.g. 203.0.113.7 or 198.51.100.0/24; postbacks "
                   "from elsewhere are refused; empty: any address"),
        Field("postback_secret", "Signing secret (optional)", nullable=True,
              help="16 to 200 characters; when set, every postback must be signed with HMAC-SHA256 "
                   "(ts= and sig=); empty: no signature needed"),
    )  # fmt: skip


LANDER_FIELDS = (
    Field("name", "Name", required=True),
    Field("url", "Lander URL", required=True, help=URL_MACROS_HELP + "; {offer_id} is the offer chosen"),
)  # fmt: skip

SOURCE_FIELDS = (
    Field("name", "Name", required=True),
    Field("postback_url", "Outbound postback URL", nullable=True,
          help="called on each conversion the source asked for; the macros are listed below; "
               "empty: the source is sent nothing"),
    Field("postback_events", "Events sent", kind="list",
          help="comma-separated goals such as lead, sale; empty: every event"),
    Field("postback_statuses", "Statuses sent", kind="checkboxes",
          choices=tuple((s.value, s.value) for s in ConversionStatus)),
)  # fmt: skip

POSTBACK_MACRO_HELP = {
    "click_id": "our click ID",
    "external_id": "the source's own click ID, as it put it on the tracking link (external_id=)",
    "conversion_id": "our conversion ID: the source's de-duplication key",
    "event": "the goal: lead, sale…",
    "status": "the status this postback reports: approved, pending, rejected, chargeback",
    "revenue": "what the merchant reported, e.g. 49.90",
    "payout": "the affiliate's payout, from the offer",
    "currency": "ISO 4217 code",
    "txid": "the merchant's transaction ID",
    "campaign_id": "our campaign ID",
    "offer_id": "our offer ID",
    "source_id": "our source ID",
    "country": "the click's country, when known",
    **{f"sub{n}": f"the click's sub{n}" for n in range(1, 11)},
}
assert set(POSTBACK_MACRO_HELP) == POSTBACK_MACROS, "every postback macro is explained on the source page"

RULES_EXAMPLE = json.dumps(
    [
        {"name": "bots to the safe page", "when": {"is_bot": True}, "offers": [{"offer_id": 1}]},
        {"name": "mobile via the review page", "when": {"device_type": ["mobile"]}, "lander_id": 1,
         "offers": [{"offer_id": 2}]},
        {"when": {"country": ["DE", "AT"], "device_type": ["mobile"]},
         "offers": [{"offer_id": 1, "weight": 70}, {"offer_id": 2, "weight": 30}]},
    ],
)  # fmt: skip


def actor_of(session: Session) -> Actor:
    """Who the audit log names for a change made through these forms."""
    return session.principal.actor if session.principal is not None else SYSTEM


def _offer_values(offer: Offer) -> Shown:
    return {
        "name": offer.name,
        "url": offer.url,
        "revenue": format_money(offer.revenue),
        "payout": format_money(offer.payout),
        "currency": offer.currency,
        "attribution_window_days": str(offer.attribution_window_days),
        "daily_cap": "" if offer.daily_cap is None else str(offer.daily_cap),
        "cap_timezone": offer.cap_timezone,
        "fallback_offer_id": "" if offer.fallback_offer_id is None else str(offer.fallback_offer_id),
        "postback_token": offer.postback_token or "",
        "postback_ips": "\n".join(offer.postback_ips),
        "postback_secret": offer.postback_secret or "",
    }


def _lander_values(lander: Lander) -> Shown:
    return {"name": lander.name, "url": lander.url}


def _source_values(source: Source) -> Shown:
    return {
        "name": source.name,
        "postback_url": source.postback_url or "",
        "postback_events": ", ".join(source.postback_events),
        "postback_statuses": list(source.postback_statuses),
    }


def campaign_fields(
    sources: Sequence[Source], offers: Sequence[Offer], landers: Sequence[Lander], *, with_ids: bool = True
) -> tuple[Field, ...]:
    """A campaign's fields; with_ids=False names the choices without their IDs (the creation form)."""

    def named(item: Source | Offer | Lander) -> str:
        return f"{item.id} · {item.name}" if with_ids else item.name

    return (
        Field("name", "Name", required=True),
        Field("source_id", "Traffic source", kind="select",
              choices=tuple((str(s.id), named(s)) for s in sources)),
        Field("offer_id", "Offer", kind="select", choices=tuple((str(o.id), named(o)) for o in offers),
              help="where visitors go when no rule matches and no A/B split is set"),
        Field("lander_id", "Lander", kind="select", nullable=True,
              choices=(("", "(none: straight to the offer)"), *((str(lp.id), named(lp)) for lp in landers)),
              help="the page shown before the offer on the default path (rules name their own)"),
        Field("cost_model", "Cost model", kind="select", choices=tuple((m.value, m.value) for m in CostModel),
              help="cpc: per click, cpm: per thousand clicks, cpa: per approved conversion"),
        Field("cost_value", "Cost value", default="0"),
    )  # fmt: skip


def _campaign_values(campaign: Campaign) -> Shown:
    routing = campaign.routing
    split = [(str(s.offer_id), str(s.weight)) for s in (routing.default or [])] if routing else []
    rules = [r.model_dump(mode="json", exclude_none=True) for r in routing.rules] if routing else []
    return {
        "name": campaign.name,
        "source_id": str(campaign.source_id),
        "offer_id": str(campaign.offer_id),
        "lander_id": "" if campaign.lander_id is None else str(campaign.lander_id),
        "cost_model": campaign.cost_model,
        "cost_value": format_money(campaign.cost_value),
        "split": split,
        "rules": json.dumps(rules, indent=2) if rules else "",
    }


def _list_value(text: str) -> list[str]:
    return sorted({part.strip() for part in text.split(",") if part.strip()})


def _lines_value(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def new_values(fields: Sequence[Field], form: Mapping[str, str]) -> dict[str, Any]:
    """A creation form's values as the Input model takes them: empty inputs take the API's default."""
    kinds = {field.name: field.kind for field in fields}
    values: dict[str, Any] = {}
    for name, text in form.items():
        if kinds.get(name) == "lines":
            if _lines_value(text):
                values[name] = _lines_value(text)
        elif kinds.get(name) == "list":
            if _list_value(text):
                values[name] = _list_value(text)
        elif text != "":
            values[name] = text
    return values


def _submitted(fields: Sequence[Field], form: FormData) -> Shown:
    shown: Shown = {}
    for field in fields:
        if field.kind == "checkboxes":
            shown[field.name] = [v for v in form.getlist(field.name) if isinstance(v, str)]
        else:
            shown[field.name] = text_of(form, field.name)
    return shown


def _changes(fields: Sequence[Field], submitted: Shown, current: Shown) -> dict[str, Any]:
    """The fields whose submitted value differs from the stored one, as the Patch model takes them."""
    changes: dict[str, Any] = {}
    for field in fields:
        new, old = submitted[field.name], current[field.name]
        if field.kind == "checkboxes":
            if sorted(new) != sorted(old):
                changes[field.name] = new
        elif field.kind == "list":
            if _list_value(new) != _list_value(old):
                changes[field.name] = _list_value(new)
        elif field.kind == "lines":
            if _lines_value(new) != _lines_value(old):
                changes[field.name] = _lines_value(new)
        elif new != old:
            changes[field.name] = None if field.nullable and new == "" else new
    return changes


def _routing_from(form: FormData, current: Campaign) -> tuple[Shown, dict[str, Any], dict[str, str]]:
    """The A/B split rows and the rules text as submitted, the routing change (if any) and its errors."""
    offers = form.getlist("split_offer")
    weights = form.getlist("split_weight")
    rows = [(str(o).strip(), str(w).strip()) for o, w in zip(offers, weights, strict=False)]
    rules_text = text_of(form, "rules")
    shown: Shown = {"split": rows, "rules": rules_text}
    errors: dict[str, str] = {}
    kept = [n for n, (offer, weight) in enumerate(rows) if offer or weight]
    default = [{"offer_id": rows[n][0], "weight": rows[n][1] or "1"} for n in kept]
    rules: Any = []
    if rules_text:
        try:
            rules = json.loads(rules_text)
        except ValueError as exc:
            errors["rules"] = f"not valid JSON: {exc}"
        else:
            if not isinstance(rules, list):
                errors["rules"] = 'a JSON list of rules: [{"when": {…}, "offers": […]}, …]'
    if errors:
        return shown, {}, errors
    routing = {"rules": rules, "default": default or None} if rules or default else None
    if routing is None:
        return shown, ({"routing": None} if current.routing is not None else {}), {}
    try:
        parsed = RoutingInput.model_validate(routing)
    except ValidationError as exc:
        return shown, {}, _routing_errors(exc, kept)
    before = current.routing.model_dump(mode="json", exclude_none=True) if current.routing else None
    if parsed.model_dump(mode="json", exclude_none=True) == before:
        return shown, {}, {}
    return shown, {"routing": parsed}, {}


def _routing_errors(exc: ValidationError, kept: Sequence[int]) -> dict[str, str]:
    """Split errors go next to their row; rule errors next to the rules, with the rule's number."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = list(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if loc[:1] == ["default"] and len(loc) >= 2 and isinstance(loc[1], int) and loc[1] < len(kept):
            errors.setdefault(f"split.{kept[loc[1]]}", f"{loc[2] if len(loc) > 2 else 'offer'}: {message}")
        elif loc[:1] == ["default"]:
            errors.setdefault("split", message)
        elif loc[:1] == ["rules"] and len(loc) >= 2 and isinstance(loc[1], int):
            where = " → ".join(str(part) for part in loc[2:])
            text = f"rule {loc[1] + 1}: {where + ': ' if where else ''}{message}"
            errors["rules"] = f"{errors['rules']}; {text}" if "rules" in errors else text
        else:
            errors.setdefault("rules", message)
    return errors


def _stale(form: FormData, updated_at: datetime) -> bool:
    return text_of(form, "updated_at") != updated_at.isoformat()


STALE = "changed by someone else since you opened this form; reload the page to see it, then edit again"


def add_editing_routes(router: APIRouter, kit: PageKit) -> None:
    runtime = kit.runtime
    catalog = runtime.catalog

    def edit_page(
        request: Request, session: Session, kind: str, item: Offer | Lander | Source | Campaign, *,
        fields: Sequence[Field],
        values: Shown, errors: Mapping[str, str] | None = None, status: int = 200, **extra: Any,
    ) -> Response:  # fmt: skip
        return kit.render(
            request, f"edit_{kind[:-1]}.html", session, status, page=kind, kind=kind, item=item,
            fields=fields, values=values, errors=errors or {}, saved=request.query_params.get("saved") == "1",
            **extra,
        )  # fmt: skip

    def checked_id(item_id: int, noun: str) -> int:
        if item_id > MAX_ROW_ID:
            raise NotFound(f"no {noun} with id {item_id}")
        return item_id

    def failed(exc: ClicktrailError) -> dict[str, str]:
        fields = exc.fields if isinstance(exc, ValidationFailed) else {}
        return dict(fields) or {"form": exc.detail}

    async def save(
        request: Request,
        session: Session,
        form: FormData,
        fields: Sequence[Field],
        current: Shown,
        patch: Callable[[dict[str, Any]], object],
        extra_changes: dict[str, Any] | None = None,
    ) -> tuple[Shown, dict[str, str]]:
        submitted = _submitted(fields, form)
        changes = _changes(fields, submitted, current) | (extra_changes or {})
        try:
            if changes:
                await run_in_threadpool(patch, changes)
                runtime.catalog_changed()
        except ValidationError as exc:
            return submitted, field_errors(exc)
        except ClicktrailError as exc:
            return submitted, failed(exc)
        return submitted, {}

    # Offers
    def offer_page(
        request: Request, session: Session, offer: Offer, *, values: Shown | None = None,
        errors: Mapping[str, str] | None = None, status: int = 200,
    ) -> Response:  # fmt: skip
        return edit_page(
            request, session, "offers", offer, fields=offer_fields(catalog.list_offers(limit=1000), offer.id),
            values=values or _offer_values(offer), errors=errors, status=status,
        )  # fmt: skip

    @router.get("/offers/{offer_id:int}")
    def offer_edit(request: Request, offer_id: int) -> Response:
        session = kit.session_of(request)
        try:
            offer = catalog.get_offer(checked_id(offer_id, "offer"))
        except NotFound as exc:
            return kit.problem(request, session, 404, exc.detail)
        return offer_page(request, session, offer)

    @router.post("/offers/{offer_id:int}")
    async def save_offer(request: Request, offer_id: int) -> Response:
        session = kit.session_of(request)
        try:
            form = await kit.form(request, session)
            offer = await run_in_threadpool(catalog.get_offer, checked_id(offer_id, "offer"))
        except BadForm:
            return kit.expired_form(request, session)
        except NotFound as exc:
            return kit.problem(request, session, 404, exc.detail)
        fields = offer_fields((), offer.id)
        if _stale(form, offer.updated_at):
            values, errors = _submitted(fields, form), {"form": f"This offer was {STALE}."}
        else:
            values, errors = await save(
                request, session, form, fields, _offer_values(offer),
                lambda changes: catalog.patch_offer(offer.id, OfferPatch(**changes), actor_of(session)),
            )  # fmt: skip
        if errors:
            return offer_page(request, session, offer, values=values, errors=errors, status=422)
        return RedirectResponse(f"/offers/{offer.id}?saved=1", status_code=303)

    # Landers
    def lander_page(
        request: Request, session: Session, lander: Lander, *, values: Shown | None = None,
        errors: Mapping[str, str] | None = None, status: int = 200,
    ) -> Response:  # fmt: skip
        using = [c for c in catalog.list_campaigns(limit=1000) if c.lander_id == lander.id
                 or (c.routing and lander.id in c.routing.lander_ids())]  # fmt: skip
        return edit_page(
            request, session, "landers", lander, fields=LANDER_FIELDS,
            values=values or _lander_values(lander), errors=errors, status=status,
            click_through=f"{runtime.settings.public_url}/lp/click",
            campaigns=using,
        )  # fmt: skip

    @router.get("/landers/{lander_id:int}")
    def lander_edit(request: Request, lander_id: int) -> Response:
        session = kit.session_of(request)
        try:
            lander = catalog.get_lander(checked_id(lander_id, "lander"))
        except NotFound as exc:
            return kit.problem(request, session, 404, exc.detail)
        return lander_page(request, session, lander)

    @router.post("/landers/{lander_id:int}")
    async def save_lander(request: Request, lander_id: int) -> Response:
        session = kit.session_of(request)
        try:
            form = await kit.form(request, session)
            lander = await run_in_threadpool(catalog.get_lander, checked_id(lander_id, "lander"))
        except BadForm:
            return kit.expired_form(request, session)
        except NotFound as exc:
            return kit.problem(request, session, 404, exc.detail)
        if _stale(form, lander.updated_at):
            values, errors = _submitted(LANDER_FIELDS, form), {"form": f"This lander was {STALE}."}
        else:
            values, errors = await save(
                request, session, form, LANDER_FIELDS, _lander_values(lander),
                lambda changes: catalog.patch_lander(lander.id, LanderPatch(**changes), actor_of(session)),
            )  # fmt: skip
        if errors:
            return lander_page(request, session, lander, values=values, errors=errors, status=422)
        return RedirectResponse(f"/landers/{lander.id}?saved=1", status_code=303)

    # Sources
    def source_page(
        request: Request, session: Session, source: Source, *, values: Shown | None = None,
        errors: Mapping[str, str] | None = None, status: int = 200, test: AttemptResult | None = None,
        test_error: str | None = None,
    ) -> Response:  # fmt: skip
        return edit_page(
            request, session, "sources", source, fields=SOURCE_FIELDS,
            values=values or _source_values(source),
            errors=errors, status=status, macros=POSTBACK_MACRO_HELP, test=test, test_error=test_error,
            breaker=outbox.breaker_of(runtime.database, source.id),
            here=f"/sources/{source.id}",
        )  # fmt: skip

    @router.get("/sources/{source_id:int}")
    def source_edit(request: Request, source_id: int) -> Response:
        session = kit.session_of(request)
        try:
            source = catalog.get_source(checked_id(source_id, "source"))
        except NotFound as exc:
            return kit.problem(request, session, 404, exc.detail)
        return source_page(request, session, source)

    @router.post("/sources/{source_id:int}")
    async def save_source(request: Request, source_id: int) -> Response:
        session = kit.session_of(request)
        try:
            form = await kit.form(request, session)
            source = await run_in_threadpool(catalog.get_source, checked_id(source_id, "source"))
        except BadForm:
            return kit.expired_form(request, session)
        except NotFound as exc:
            return kit.problem(request, session, 404, exc.detail)
        if _stale(form, source.updated_at):
            values, errors = _submitted(SOURCE_FIELDS, form), {"form": f"This source was {STALE}."}
        else:
            values, errors = await save(
                request, session, form, SOURCE_FIELDS, _source_values(source),
                lambda changes: catalog.patch_source(source.id, SourcePatch(**changes), actor_of(session)),
            )  # fmt: skip
        if errors:
            return source_page(request, session, source, values=values, errors=errors, status=422)
        return RedirectResponse(f"/sources/{source.id}?saved=1", status_code=303)

    @router.post("/sources/{source_id:int}/test")
    async def test_source(request: Request, source_id: int) -> Response:
        """One postback filled with sample values, sent now; the answer is shown, recorded nowhere."""
        session = kit.session_of(request)
        try:
            await kit.form(request, session)
            source = await run_in_threadpool(catalog.get_source, checked_id(source_id, "source"))
        except BadForm:
            return kit.expired_form(request, session)
        except NotFound as exc:
            return kit.problem(request, session, 404, exc.detail)
        try:
            result = await send_test_postback(runtime.sender, source.id, source.postback_url)
        except ValidationFailed:
            missing = "This source has no outbound postback URL to test: set one above."
            return source_page(request, session, source, status=422, test_error=missing)
        return source_page(request, session, source, test=result)

    # Campaigns
    def campaign_page(
        request: Request, session: Session, campaign: Campaign, *, values: Shown | None = None,
        errors: Mapping[str, str] | None = None, status: int = 200, **extra: Any,
    ) -> Response:  # fmt: skip
        offers = catalog.list_offers(limit=1000)
        landers = catalog.list_landers(limit=1000)
        fields = campaign_fields(catalog.list_sources(limit=1000), offers, landers)
        shown = values or _campaign_values(campaign)
        blank_rows = max(2, min(MAX_OFFERS_PER_PATH, len(shown["split"]) + 2) - len(shown["split"]))
        base = runtime.settings.public_url
        trial = trial_context(
            runtime, request.query_params.get("test_click"), request.query_params.get("postback")
        )
        return edit_page(
            request, session, "campaigns", campaign, fields=fields, values=shown, errors=errors,
            status=status, offers=offers, split_rows=[*shown["split"], *[("", "")] * blank_rows],
            rules_example=RULES_EXAMPLE, flow=_flow(campaign, offers, landers),
            tracking_url=f"{base}/c/{campaign.key}", click_through=f"{base}/lp/click",
            postback_url=f"{base}/postback?click_id={{click_id}}&event=sale&payout={{amount}}&txid={{order_id}}",
            **trial, **extra,
        )  # fmt: skip

    @router.get("/campaigns/{campaign_id:int}")
    def campaign_edit(request: Request, campaign_id: int) -> Response:
        session = kit.session_of(request)
        try:
            campaign = catalog.get_campaign(checked_id(campaign_id, "campaign"))
        except NotFound as exc:
            return kit.problem(request, session, 404, exc.detail)
        return campaign_page(request, session, campaign)

    @router.post("/campaigns/{campaign_id:int}")
    async def save_campaign(request: Request, campaign_id: int) -> Response:
        session = kit.session_of(request)
        try:
            form = await kit.form(request, session)
            campaign = await run_in_threadpool(catalog.get_campaign, checked_id(campaign_id, "campaign"))
        except BadForm:
            return kit.expired_form(request, session)
        except NotFound as exc:
            return kit.problem(request, session, 404, exc.detail)
        fields = campaign_fields((), (), ())
        routing_shown, routing_change, routing_errors = _routing_from(form, campaign)
        if _stale(form, campaign.updated_at):
            values, errors = _submitted(fields, form), {"form": f"This campaign was {STALE}."}
        elif routing_errors:
            values, errors = _submitted(fields, form), routing_errors
        else:
            values, errors = await save(
                request, session, form, fields, _campaign_values(campaign),
                lambda changes: catalog.patch_campaign(
                    campaign.id, CampaignPatch(**changes), actor_of(session)
                ),
                routing_change,
            )  # fmt: skip
            if "cost_value" in errors.get("form", ""):
                # The CPM precision check spans two fields (a model check): show it by the value.
                errors["cost_value"] = errors.pop("form")
        if errors:
            return campaign_page(request, session, campaign, values=values | routing_shown, errors=errors,
                                 status=422)  # fmt: skip
        return RedirectResponse(f"/campaigns/{campaign.id}?saved=1", status_code=303)


def _flow(campaign: Campaign, offers: Sequence[Offer], landers: Sequence[Lander]) -> dict[str, Any]:
    """The default path's stops, as the campaign page draws the tracking flow."""
    return {
        "lander": next((lp for lp in landers if lp.id == campaign.lander_id), None),
        "offer": next((o for o in offers if o.id == campaign.offer_id), None),
        "rule_landers": sorted(campaign.routing.lander_ids()) if campaign.routing else [],
    }
