"""Routing rules as specifications: weights converge to their shares, every visitor gets exactly
one destination, the first matching rule wins, and a rule set that cannot match falls to the default."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from clicktrail.catalog.rules import RoutingInput, RoutingPlan, Visit
from clicktrail.types import OfferId

OFFERS = {OfferId(n): f"offer-{n}" for n in range(1, 8)}
CAMPAIGN_OFFER = "campaign-offer"


def _visit(**changes: object) -> Visit:
    fields: dict[str, object] = {
        "country": "DE",
        "device_type": "mobile",
        "os": "Android",
        "browser": "Chrome Mobile",
        "is_bot": False,
        "subs": {"sub1": "banner-1"},
        "hour": 12,
    }
    fields.update(changes)
    return Visit(**fields)  # type: ignore[arg-type]


def _plan(routing: dict[str, object]) -> RoutingPlan[str]:
    return RoutingPlan.compile(RoutingInput.model_validate(routing), OFFERS, CAMPAIGN_OFFER)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=100), min_size=2, max_size=5))
def test_weights_converge_to_their_shares(weights: list[int]) -> None:
    plan = _plan({"default": [{"offer_id": n + 1, "weight": w} for n, w in enumerate(weights)]})
    visitors = 4000
    counts = {offer: 0 for offer in OFFERS.values()}
    for n in range(visitors):
        counts[plan.choose(_visit(), f"7:visitor-{n}")] += 1
    total = sum(weights)
    for n, weight in enumerate(weights):
        assert abs(counts[f"offer-{n + 1}"] / visitors - weight / total) < 0.04


countries = st.sampled_from(["DE", "US", "FR", "BR", None])
devices = st.sampled_from(["desktop", "mobile", "tablet", None])
rules = st.lists(
    st.fixed_dictionaries(
        {
            "when": st.one_of(
                st.fixed_dictionaries({"country": st.lists(st.sampled_from(["DE", "US", "FR"]), min_size=1)}),
                st.fixed_dictionaries(
                    {"device_type": st.lists(st.sampled_from(["desktop", "mobile"]), min_size=1)}
                ),
                st.fixed_dictionaries({"is_bot": st.booleans()}),
                st.fixed_dictionaries({"hours": st.tuples(st.integers(0, 11), st.integers(12, 24))}),
            ),
            "offers": st.lists(
                st.fixed_dictionaries({"offer_id": st.integers(1, 7), "weight": st.integers(1, 50)}),
                min_size=1,
                max_size=3,
            ),
        }
    ),
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(rules, countries, devices, st.booleans(), st.integers(0, 23), st.text(max_size=20))
def test_every_visitor_gets_exactly_one_destination_and_the_same_one_again(
    rule_list: list[dict[str, object]],
    country: str | None,
    device: str | None,
    is_bot: bool,
    hour: int,
    visitor: str,
) -> None:
    plan = _plan({"rules": rule_list})
    visit = _visit(country=country, device_type=device, is_bot=is_bot, hour=hour)
    chosen = plan.choose(visit, visitor)
    assert chosen in {*OFFERS.values(), CAMPAIGN_OFFER}
    assert plan.choose(visit, visitor) == chosen


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["DE", "US", "FR"]), min_size=1), min_size=1, max_size=5), st.text())
def test_a_rule_set_that_cannot_match_falls_to_the_default(
    country_lists: list[list[str]], visitor: str
) -> None:
    plan = _plan(
        {
            "rules": [{"when": {"country": c}, "offers": [{"offer_id": 1}]} for c in country_lists],
            "default": [{"offer_id": 2}],
        }
    )
    assert plan.choose(_visit(country="JP"), visitor) == "offer-2"
    assert plan.choose(_visit(country=None), visitor) == "offer-2"


def test_the_first_matching_rule_wins_and_no_default_means_the_campaigns_offer() -> None:
    plan = _plan(
        {
            "rules": [
                {"when": {"is_bot": True}, "offers": [{"offer_id": 5}]},
                {"when": {"country": ["de"], "device_type": ["mobile"]}, "offers": [{"offer_id": 3}]},
                {"when": {"country": ["DE"]}, "offers": [{"offer_id": 4}]},
                {"when": {"subs": {"sub1": ["banner-9"]}, "os": ["android"]}, "offers": [{"offer_id": 6}]},
                {"when": {"hours": [22, 6]}, "offers": [{"offer_id": 7}]},
            ]
        }
    )
    assert plan.choose(_visit(is_bot=True), "v") == "offer-5"
    assert plan.choose(_visit(), "v") == "offer-3"
    assert plan.choose(_visit(device_type="desktop"), "v") == "offer-4"
    assert plan.choose(_visit(country="US", subs={"sub1": "banner-9"}), "v") == "offer-6"
    assert plan.choose(_visit(country="US", hour=23), "v") == "offer-7"
    assert plan.choose(_visit(country="US", hour=3), "v") == "offer-7"
    assert plan.choose(_visit(country="US", hour=12), "v") == CAMPAIGN_OFFER


@pytest.mark.parametrize(
    ("routing", "complaint"),
    [
        ({"rules": [{"when": {}, "offers": [{"offer_id": 1}]}]}, "at least one condition"),
        ({"rules": [{"when": {"hours": [5, 5]}, "offers": [{"offer_id": 1}]}]}, "never matches"),
        ({"rules": [{"when": {"country": ["DE"]}, "offers": []}]}, "at least 1 item"),
        ({"rules": [{"when": {"planet": ["mars"]}, "offers": [{"offer_id": 1}]}]}, "Extra inputs"),
        ({"default": [{"offer_id": 1, "weight": 0}]}, "greater than or equal to 1"),
        ({"rules": [{"when": {"device_type": ["fridge"]}, "offers": [{"offer_id": 1}]}]}, "device_type"),
    ],
)
def test_rules_that_cannot_work_are_refused_with_a_reason(routing: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        RoutingInput.model_validate(routing)
