"""Offers, sources and campaigns as the API accepts them (validated) and as stored."""

import ipaddress
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    model_validator,
)

from clicktrail.catalog.rules import RoutingInput
from clicktrail.conversions.decision import ConversionStatus
from clicktrail.macros import CLICK_MACROS, InvalidTemplate, validate_url_template
from clicktrail.money import InvalidMoney, format_money, parse_currency, parse_money
from clicktrail.types import CampaignId, LanderId, OfferId, SourceId

# The macros an outbound postback template may use (the delivery pipeline fills them).
POSTBACK_MACROS = frozenset(
    {
        "click_id", "external_id", "conversion_id", "event", "status", "revenue", "payout", "currency",
        "txid", "campaign_id", "offer_id", "source_id", "country",
        *(f"sub{n}" for n in range(1, 11)),
    }
)  # fmt: skip


def _money(value: object) -> Decimal:
    if not isinstance(value, str | int | float | Decimal):
        raise ValueError("an amount is a decimal string or a number")
    try:
        return parse_money(value)
    except InvalidMoney as exc:
        raise ValueError(str(exc)) from exc


MoneyField = Annotated[
    Decimal, BeforeValidator(_money), PlainSerializer(format_money, return_type=str, when_used="json")
]


def _printable(value: str) -> str:
    # Control characters only (category Cc): a no-break space or an emoji's zero-width joiner is fine.
    if not value.isprintable() and any(unicodedata.category(char) == "Cc" for char in value):
        raise ValueError("a name holds no control characters (line breaks, tabs, NUL...)")
    return value


Name = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(_printable)]
RowId = Annotated[int, Field(ge=1, le=2_147_483_647)]


def _offer_url(value: str) -> str:
    try:
        return validate_url_template(value, CLICK_MACROS)
    except InvalidTemplate as exc:
        raise ValueError(str(exc)) from exc


def _postback_url(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    try:
        return validate_url_template(value, POSTBACK_MACROS)
    except InvalidTemplate as exc:
        raise ValueError(str(exc)) from exc


def _currency(value: str) -> str:
    try:
        return parse_currency(value)
    except InvalidMoney as exc:
        raise ValueError(str(exc)) from exc


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError("an IANA timezone such as UTC, Europe/Paris or America/New_York") from exc
    return value


OfferUrl = Annotated[
    str, AfterValidator(_offer_url), Field(description="http(s) URL; may hold {click_id}, {sub1}… macros")
]
PostbackUrl = Annotated[
    str | None, AfterValidator(_postback_url), Field(description="outbound postback URL template with macros")
]
Currency = Annotated[str, AfterValidator(_currency), Field(description="ISO 4217 code")]
LanderUrl = Annotated[
    str,
    AfterValidator(_offer_url),
    Field(description="http(s) URL of the landing page; may hold {click_id}, {sub1}… macros"),
]
DailyCap = Annotated[
    int | None,
    Field(ge=1, le=100_000_000, description="conversions per day before new clicks go to the fallback"),
]
CapTimezone = Annotated[
    str,
    Field(max_length=64, description="IANA timezone whose midnight starts the cap's day (default UTC)"),
    AfterValidator(_timezone),
]
FallbackOfferId = Annotated[
    int | None,
    Field(ge=1, le=2_147_483_647, description="where new clicks go once the daily cap is reached"),
]
LanderRef = Annotated[
    int | None, Field(ge=1, le=2_147_483_647, description="the lander shown before the offer; null: none")
]

_EVENT_SLUG = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
DEFAULT_POSTBACK_STATUSES = (ConversionStatus.APPROVED,)


def _distinct_events(value: list[str]) -> list[str]:
    return sorted(set(value))


def _distinct_statuses(value: list[ConversionStatus]) -> list[ConversionStatus]:
    return sorted(set(value))


PostbackEvents = Annotated[
    list[Annotated[str, Field(pattern=_EVENT_SLUG)]],
    AfterValidator(_distinct_events),
    Field(max_length=50, description="events the source is sent; empty: every event"),
]
PostbackStatuses = Annotated[
    list[ConversionStatus],
    AfterValidator(_distinct_statuses),
    Field(min_length=1, description="conversion statuses the source is sent (default: approved)"),
]


def _networks(values: list[str]) -> list[str]:
    """Each an IPv4/IPv6 address or CIDR, kept in its canonical form (10.1.2.3/8 → 10.0.0.0/8)."""
    canonical = []
    for text in values:
        try:
            canonical.append(str(ipaddress.ip_network(text.strip(), strict=False)))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not an IP address or CIDR range") from exc
    return list(dict.fromkeys(canonical))


PostbackIps = Annotated[
    list[str],
    AfterValidator(_networks),
    Field(max_length=100, description="addresses or CIDRs allowed to post back (empty: any)"),
]
PostbackSecret = Annotated[
    str | None,
    Field(min_length=16, max_length=200, description="HMAC-SHA256 secret: postbacks must be signed"),
]


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OfferInput(_Input):
    name: Name
    url: OfferUrl
    revenue: MoneyField = Decimal(0)
    payout: MoneyField = Decimal(0)
    currency: Currency = "USD"
    attribution_window_days: Annotated[int, Field(ge=1, le=365)] = 30
    postback_token: Annotated[str | None, Field(min_length=8, max_length=200)] = None
    postback_ips: PostbackIps = []
    postback_secret: PostbackSecret = None
    daily_cap: DailyCap = None
    cap_timezone: CapTimezone = "UTC"
    fallback_offer_id: FallbackOfferId = None


class OfferPatch(_Input):
    name: Name | None = None
    url: OfferUrl | None = None
    revenue: MoneyField | None = None
    payout: MoneyField | None = None
    currency: Currency | None = None
    attribution_window_days: Annotated[int, Field(ge=1, le=365)] | None = None
    postback_token: Annotated[str | None, Field(min_length=8, max_length=200)] = None
    postback_ips: PostbackIps | None = None
    postback_secret: PostbackSecret = None
    daily_cap: DailyCap = None
    cap_timezone: CapTimezone | None = None
    fallback_offer_id: FallbackOfferId = None


class LanderInput(_Input):
    name: Name
    url: LanderUrl


class LanderPatch(_Input):
    name: Name | None = None
    url: LanderUrl | None = None


class SourceInput(_Input):
    name: Name
    postback_url: PostbackUrl = None
    postback_events: PostbackEvents = []
    postback_statuses: PostbackStatuses = list(DEFAULT_POSTBACK_STATUSES)


class SourcePatch(_Input):
    name: Name | None = None
    postback_url: PostbackUrl = None
    postback_events: PostbackEvents | None = None
    postback_statuses: PostbackStatuses | None = None


class CostModel(StrEnum):
    """How a campaign's traffic is paid for when the source does not pass `cost=` on each click."""

    NONE = "none"
    CPC = "cpc"  # cost_value per click
    CPM = "cpm"  # cost_value per thousand clicks (each click counted as an impression)
    CPA = "cpa"  # cost_value per approved conversion


def _check_cost(model: CostModel | None, value: Decimal | None) -> None:
    if model is CostModel.CPM and value is not None and value != value.quantize(Decimal("0.001")):
        # A thousandth of the value must stay exact at six decimal places.
        raise ValueError("a CPM cost_value has at most 3 decimal places")


class CampaignInput(_Input):
    name: Name
    source_id: RowId
    offer_id: RowId
    cost_model: CostModel = CostModel.NONE
    cost_value: MoneyField = Decimal(0)
    routing: RoutingInput | None = Field(None, description="rules and A/B split; null: all to offer_id")
    lander_id: LanderRef = None

    @model_validator(mode="after")
    def _cost(self) -> "CampaignInput":
        _check_cost(self.cost_model, self.cost_value)
        return self


class CampaignPatch(_Input):
    name: Name | None = None
    source_id: RowId | None = None
    offer_id: RowId | None = None
    cost_model: CostModel | None = None
    cost_value: MoneyField | None = None
    routing: RoutingInput | None = None
    lander_id: LanderRef = None

    @model_validator(mode="after")
    def _cost(self) -> "CampaignPatch":
        _check_cost(self.cost_model, self.cost_value)
        return self


@dataclass(frozen=True, slots=True)
class Offer:
    id: OfferId
    name: str
    url: str
    revenue: Decimal
    payout: Decimal
    currency: str
    attribution_window_days: int
    postback_token: str | None
    postback_ips: list[str]
    postback_secret: str | None
    created_at: datetime
    updated_at: datetime
    daily_cap: int | None
    cap_timezone: str
    fallback_offer_id: int | None


@dataclass(frozen=True, slots=True)
class Lander:
    id: LanderId
    name: str
    url: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Source:
    id: SourceId
    name: str
    postback_url: str | None
    postback_events: list[str]
    postback_statuses: list[str]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Campaign:
    id: CampaignId
    key: str
    name: str
    source_id: SourceId
    offer_id: OfferId
    cost_model: str
    cost_value: Decimal
    created_at: datetime
    updated_at: datetime
    routing: RoutingInput | None
    lander_id: int | None
