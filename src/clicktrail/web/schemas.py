"""What the admin API answers, as pydantic models so the OpenAPI spec describes it exactly."""

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, PlainSerializer, field_serializer

from clicktrail.catalog.rules import RoutingInput
from clicktrail.money import format_money

MoneyText = Annotated[Decimal, PlainSerializer(format_money, return_type=str)]
Item = TypeVar("Item")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class OfferOut(_Out):
    id: int
    name: str
    url: str
    revenue: MoneyText
    payout: MoneyText
    currency: str
    attribution_window_days: int
    postback_token: str | None
    postback_ips: list[str]
    postback_secret: str | None
    daily_cap: int | None
    cap_timezone: str
    fallback_offer_id: int | None
    created_at: datetime
    updated_at: datetime


class LanderOut(_Out):
    id: int
    name: str
    url: str
    created_at: datetime
    updated_at: datetime


class SourceOut(_Out):
    id: int
    name: str
    postback_url: str | None
    postback_events: list[str]
    postback_statuses: list[str]
    created_at: datetime
    updated_at: datetime


class CampaignOut(_Out):
    id: int
    key: str
    name: str
    source_id: int
    offer_id: int
    cost_model: str
    cost_value: MoneyText
    tracking_url: str
    postback_url: str
    created_at: datetime
    updated_at: datetime
    routing: RoutingInput | None
    lander_id: int | None

    @field_serializer("routing")
    def _only_what_was_set(self, routing: RoutingInput | None) -> dict[str, Any] | None:
        """Rules as the user wrote them, without the conditions they left out."""
        return routing.model_dump(mode="json", exclude_none=True) if routing is not None else None


class ClickOut(_Out):
    click_id: str
    created_at: datetime
    campaign_id: int
    offer_id: int
    source_id: int
    sub1: str | None
    sub2: str | None
    sub3: str | None
    sub4: str | None
    sub5: str | None
    sub6: str | None
    sub7: str | None
    sub8: str | None
    sub9: str | None
    sub10: str | None
    external_id: str | None
    cost: MoneyText | None
    ip: str | None
    user_agent: str | None
    referrer: str | None
    country: str | None
    device_type: str | None
    os: str | None
    browser: str | None
    is_bot: bool
    is_unique: bool
    visitor_id: str | None
    region: str | None
    city: str | None
    os_version: str | None
    browser_version: str | None
    lander_id: int | None


class CostUpdateOut(_Out):
    id: int
    campaign_id: int
    start: datetime
    end: datetime
    amount: MoneyText
    created_at: datetime


class StatusChangeOut(_Out):
    changed_at: datetime
    old_status: str | None
    new_status: str
    revenue: MoneyText


class ConversionOut(_Out):
    conversion_id: str
    created_at: datetime
    updated_at: datetime
    click_id: str
    event: str
    txid: str
    status: str
    revenue: MoneyText
    payout: MoneyText
    currency: str
    click_time: datetime
    campaign_id: int
    offer_id: int
    source_id: int
    sub1: str | None
    sub2: str | None
    sub3: str | None
    sub4: str | None
    sub5: str | None
    sub6: str | None
    sub7: str | None
    sub8: str | None
    sub9: str | None
    sub10: str | None
    external_id: str | None
    country: str | None
    device_type: str | None
    os: str | None
    browser: str | None
    is_bot: bool
    os_version: str | None
    browser_version: str | None
    region: str | None
    city: str | None
    lander_id: int | None
    via: str
    history: list[StatusChangeOut]


class PostbackLogOut(_Out):
    id: int
    received_at: datetime
    method: str
    query: str
    ip: str | None
    click_id: str | None
    event: str | None
    txid: str | None
    decision: str
    error: str | None
    detail: str | None
    conversion_id: str | None
    via: str


class AttemptOut(_Out):
    attempted_at: datetime
    url: str
    outcome: str
    status_code: int | None
    latency_ms: int | None
    error: str | None


class DeliveryOut(_Out):
    id: int
    created_at: datetime
    updated_at: datetime | None
    conversion_id: str
    click_id: str
    source_id: int
    conversion_status: str
    status: str
    attempts_made: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    attempts: list[AttemptOut]


class BreakerOut(_Out):
    source_id: int
    state: str
    failures: int
    reason: str | None
    opened_at: datetime | None
    probe_at: datetime | None


class TestPostbackOut(_Out):
    url: str
    outcome: str
    status_code: int | None
    latency_ms: int | None
    error: str | None
    body: str


class Page(BaseModel, Generic[Item]):
    items: list[Item]
    next_cursor: str | None = None


class ErrorOut(BaseModel):
    error: str
    detail: str


class UserOut(_Out):
    id: int
    username: str
    role: str
    source_id: int | None
    offer_ids: list[int]
    disabled: bool
    created_at: datetime
    updated_at: datetime


class ApiKeyOut(_Out):
    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class NewApiKeyOut(ApiKeyOut):
    secret: str
    """Shown this once: only its hash is stored."""


class MeOut(BaseModel):
    role: str
    name: str
    user_id: int | None
    key_id: int | None
    source_id: int | None
    offer_ids: list[int]
    hidden_fields: list[str]


class AuditOut(_Out):
    id: int
    at: datetime
    actor: str
    actor_user_id: int | None
    action: str
    object_type: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
