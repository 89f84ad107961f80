"""The postback parser: any input either parses or is refused with a named reason."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clicktrail.conversions.decision import ConversionStatus
from clicktrail.conversions.request import MalformedPostback, parse_postback

FIELDS = ("click_id", "event", "payout", "currency", "txid", "status", "token", "other")
REASONS = {"missing_click_id", "bad_event", "bad_amount", "bad_currency", "bad_status", "bad_txid"}


@given(st.dictionaries(st.sampled_from(FIELDS), st.text(max_size=300)))
def test_any_parameters_parse_or_are_refused_with_a_reason(params: dict[str, str]) -> None:
    refusal: MalformedPostback | None
    try:
        request = parse_postback(params)
    except MalformedPostback as exc:
        refusal = exc
    else:
        refusal = None
    if refusal is not None:
        assert refusal.error in REASONS
        assert refusal.detail
        return
    assert request.click_id
    assert len(request.txid) <= 255
    assert request.revenue is None or request.revenue >= 0


def test_defaults() -> None:
    request = parse_postback({"click_id": "abc"})
    assert request.event == "conversion"
    assert request.status is ConversionStatus.APPROVED
    assert request.revenue is None
    assert request.currency is None
    assert request.txid == ""


def test_values_are_normalised() -> None:
    request = parse_postback(
        {"click_id": " abc ", "event": "Sale", "payout": "9.90", "currency": "usd", "status": "PENDING"}
    )
    assert (request.click_id, request.event, request.currency) == ("abc", "sale", "USD")
    assert request.revenue == Decimal("9.90")
    assert request.status is ConversionStatus.PENDING


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({}, "missing_click_id"),
        ({"click_id": "a", "event": "two words"}, "bad_event"),
        ({"click_id": "a", "payout": "ten"}, "bad_amount"),
        ({"click_id": "a", "currency": "dollars"}, "bad_currency"),
        ({"click_id": "a", "status": "paid"}, "bad_status"),
        ({"click_id": "a", "txid": "x" * 256}, "bad_txid"),
    ],
)
def test_each_refusal_names_its_reason(params: dict[str, str], reason: str) -> None:
    with pytest.raises(MalformedPostback) as caught:
        parse_postback(params)
    assert caught.value.error == reason
