"""Cost: the source's per-click `cost=`, a campaign's CPC, CPM or CPA model, and cost updates for a
past period spread exactly over that period's clicks."""

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support import Tracker


def _campaign(tracker: Tracker, **cost: Any) -> dict[str, Any]:
    offer = tracker.create(
        "offers", name="O", url="https://m.example/?cid={click_id}", revenue="5", payout="1"
    )
    source = tracker.create("sources", name="S")
    return tracker.create("campaigns", name="C", source_id=source["id"], offer_id=offer["id"], **cost)


def _totals(tracker: Tracker, campaign: dict[str, Any], clicks: int, **extra: str) -> dict[str, Any]:
    params = {"campaign_id": str(campaign["id"]), "group_by": "campaign", **extra}
    deadline = time.monotonic() + 15
    while True:
        body: dict[str, Any] = tracker.api("GET", "/reports", params=params).json()
        if body["totals"]["clicks"] >= clicks or time.monotonic() > deadline:
            return body


def test_cpc_and_cpm_models_cost_each_click_unless_the_source_passes_cost(tracker: Tracker) -> None:
    cpc = _campaign(tracker, cost_model="cpc", cost_value="0.05")
    cpm = _campaign(tracker, cost_model="cpm", cost_value="2.5")
    for _ in range(3):
        tracker.click(cpc["key"])
        tracker.click(cpm["key"])
    passed = tracker.click(cpc["key"], cost="0.20")
    assert tracker.api("GET", f"/clicks/{passed}").json()["cost"] == "0.20"

    assert _totals(tracker, cpc, 4)["totals"]["cost"] == "0.35"
    assert _totals(tracker, cpm, 3)["totals"]["cost"] == "0.0075"


def test_a_cpa_model_costs_each_approved_conversion(tracker: Tracker) -> None:
    cpa = _campaign(tracker, cost_model="cpa", cost_value="1.50")
    approved = tracker.click(cpa["key"])
    pending = tracker.click(cpa["key"])
    tracker.click(cpa["key"])
    tracker.postback(click_id=approved, txid="a")
    tracker.postback(click_id=pending, txid="p", status="pending")
    body = _totals(tracker, cpa, 3)
    deadline = time.monotonic() + 10
    while body["totals"]["pending"] < 1 and time.monotonic() < deadline:
        body = _totals(tracker, cpa, 3)
    assert body["totals"]["cost"] == "1.50"
    assert body["totals"]["profit"] == "2.50"  # 5.00 revenue - 1.00 payout - 1.50 cost


def test_a_cost_update_is_spread_exactly_over_the_period_clicks(tracker: Tracker) -> None:
    campaign = _campaign(tracker, cost_model="cpc", cost_value="9.99")
    for sub in ("a", "b", "c"):
        tracker.click(campaign["key"], sub1=sub)
    now = datetime.now(UTC)
    period = {"start": (now - timedelta(hours=1)).isoformat(), "end": (now + timedelta(hours=1)).isoformat()}
    response = tracker.api("POST", f"/campaigns/{campaign['id']}/cost", json=period | {"amount": "1.00"})
    assert response.status_code == 201, response.text
    assert response.json()["amount"] == "1.00"

    by_sub = _totals(tracker, campaign, 3, group_by="sub1")
    shares = sorted(row["cost"] for row in by_sub["rows"])
    assert shares == ["0.333333", "0.333333", "0.333334"]
    assert by_sub["totals"]["cost"] == "1.00"
    listed = tracker.api("GET", f"/campaigns/{campaign['id']}/cost").json()["items"]
    assert [item["amount"] for item in listed] == ["1.00"]


def test_bad_cost_settings_are_refused(tracker: Tracker) -> None:
    offer = tracker.create("offers", name="O", url="https://m.example/")
    source = tracker.create("sources", name="S")
    base = {"name": "C", "source_id": source["id"], "offer_id": offer["id"]}
    assert tracker.api("POST", "/campaigns", json=base | {"cost_model": "cpz"}).status_code == 422
    cpm = tracker.api("POST", "/campaigns", json=base | {"cost_model": "cpm", "cost_value": "1.2345"})
    assert cpm.status_code == 422
    campaign = tracker.create("campaigns", **base)
    backwards = {"start": "2026-11-02T00:00:00Z", "end": "2026-11-01T00:00:00Z", "amount": "5"}
    assert tracker.api("POST", f"/campaigns/{campaign['id']}/cost", json=backwards).status_code == 422
    naive = {"start": "2026-11-01T00:00:00", "end": "2026-11-02T00:00:00", "amount": "5"}
    assert tracker.api("POST", f"/campaigns/{campaign['id']}/cost", json=naive).status_code == 422
    missing = {"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z", "amount": "5"}
    assert tracker.api("POST", "/campaigns/999999/cost", json=missing).status_code == 404
