"""Money is parsed strictly and kept exact."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clicktrail.money import InvalidMoney, format_money, from_micros, parse_currency, parse_money, to_micros


@given(st.decimals(min_value=0, max_value=Decimal("999999999999.999999"), places=6))
def test_amounts_round_trip_through_storage_exactly(amount: Decimal) -> None:
    parsed = parse_money(str(amount))
    assert from_micros(to_micros(parsed)) == amount


@pytest.mark.parametrize(
    "text", ["abc", "", "NaN", "Infinity", "-1", "1.0000001", "1e12", "1,5", "0x10", True]
)
def test_bad_amounts_are_refused(text: str) -> None:
    with pytest.raises(InvalidMoney):
        parse_money(text)


def test_numbers_are_read_as_their_shortest_text() -> None:
    assert parse_money(0.1) == Decimal("0.1")
    assert parse_money(10) == Decimal(10)
    assert parse_money(" 2.50 ") == Decimal("2.50")


def test_display_keeps_cents_and_extra_precision() -> None:
    assert format_money(Decimal("12.5")) == "12.50"
    assert format_money(Decimal("0.000001")) == "0.000001"
    assert format_money(Decimal(0)) == "0.00"


def test_currencies_are_three_letter_codes() -> None:
    assert parse_currency("eur") == "EUR"
    for bad in ("EU", "EURO", "€€€", "12A"):
        with pytest.raises(InvalidMoney):
            parse_currency(bad)
