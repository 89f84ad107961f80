"""Offers, sources and campaigns as the API accepts them (validated) and as stored."""

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer

from clicktrail.catalog.rules import RoutingInput
from clicktrail.macros import CLICK_MACROS, InvalidTemplate, validate_url_template
from clicktrail.money import InvalidMoney, format_money, parse_currency, parse_money
from clicktrail.types import CampaignId, OfferId, SourceId

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
Name = Annotated[str, Field(min_length=1, max_length=200)]


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


OfferUrl = Annotated[
    str, AfterValidator(_offer_url), Field(description="http(s) URL; may hold {click_id}, {sub1}… macros")
]
PostbackUrl = Annotated[
    str | None, AfterValidator(_postback_url), Field(description="outbound postback URL template with macros")
]
Currency = Annotated[str, AfterValidator(_currency), Field(description="ISO 4217 code")]


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


class OfferPatch(_Input):
    name: Name | None = None
    url: OfferUrl | None = None
    revenue: MoneyField | None = None
    payout: MoneyField | None = None
    currency: Currency | None = None
    attribution_window_days: Annotated[int, Field(ge=1, le=365)] | None = None
    postback_token: Annotated[str | None, Field(min_length=8, max_length=200)] = None


class SourceInput(_Input):
    name: Name
    postback_url: PostbackUrl = None


class SourcePatch(_Input):
    name: Name | None = None
    postback_url: PostbackUrl = None


class CampaignInput(_Input):
    name: Name
    source_id: int
    offer_id: int
    routing: RoutingInput | None = Field(None, description="rules and A/B split; null: all to offer_id")


class CampaignPatch(_Input):
    name: Name | None = None
    source_id: int | None = None
    offer_id: int | None = None
    routing: RoutingInput | None = None


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
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Source:
    id: SourceId
    name: str
    postback_url: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Campaign:
    id: CampaignId
    key: str
    name: str
    source_id: SourceId
    offer_id: OfferId
    created_at: datetime
    updated_at: datetime
    routing: RoutingInput | None
