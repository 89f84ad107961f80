"""Outbound postbacks end to end, through a real server and real HTTP receivers on 127.0.0.1, on SQLite
and on PostgreSQL: every matching conversion reaches the source once, retried while the receiver fails,
paused while it keeps failing, and visible with each attempt."""

import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any
from urllib.parse import quote

import pytest

from tests.delivery_support import TEMPLATE, affiliate, convert, deliveries_of, settled, wait_until
from tests.receivers import Receiver
from tests.support import Tracker

# Delivery when nothing fails


def test_every_conversion_is_delivered_exactly_once(pb: Tracker, receiver: Callable[..., Receiver]) -> None:
    partner = receiver()
    source, key = affiliate(pb, partner.url + TEMPLATE)

    conversions = [convert(pb, key, event="sale", txid=f"order-{n}") for n in range(10)]

    partner.wait_for_calls(10)
    for conversion in conversions:
        wait_until(partial(settled, pb, conversion, source["id"]), what="every attempt recorded")
    time.sleep(0.3)  # long enough for a second call to arrive, were there one
    assert Counter(call.query["conversion"] for call in partner.calls) == Counter(conversions)
    items = deliveries_of(pb, source_id=source["id"])
    assert len(items) == 10
    for item in items:
        assert item["status"] == "delivered"
        assert item["attempts_made"] == 1
        [attempt] = item["attempts"]
        assert attempt["outcome"] == "delivered"
        assert attempt["status_code"] == 200
        assert attempt["latency_ms"] is not None
        assert attempt["url"].startswith(partner.url + "/pb?conversion=" + item["conversion_id"])


def test_the_template_is_filled_with_percent_encoded_values(
    pb: Tracker, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver()
    every = "&".join(f"{name}={{{name}}}" for name in ("click_id", "external_id", "conversion_id", "event",
        "status", "revenue", "payout", "currency", "txid", "campaign_id", "offer_id", "source_id", "sub1",
        "sub10", "country"))  # fmt: skip
    source, key = affiliate(pb, f"{partner.url}/all?{every}")
    click_id = pb.click(key, sub1="a&b=c #d", sub10="x/y", external_id="net-7")

    conversion = convert(pb, key, click_id=click_id, event="sale", payout="19.90", currency="EUR", txid="t 1")

    [call] = partner.wait_for_calls(1)
    delivery = wait_until(lambda: settled(pb, conversion, source["id"]), what="the recorded attempt")
    assert call.query == {
        "click_id": click_id,
        "external_id": "net-7",
        "conversion_id": conversion,
        "event": "sale",
        "status": "approved",
        "revenue": "19.90",
        "payout": "4.00",
        "currency": "EUR",
        "txid": "t 1",
        "campaign_id": call.query["campaign_id"],
        "offer_id": call.query["offer_id"],
        "source_id": str(source["id"]),
        "sub1": "a&b=c #d",
        "sub10": "x/y",
        "country": "",
    }
    assert call.query["campaign_id"].isdigit()
    assert f"sub1={quote('a&b=c #d', safe='')}" in delivery["attempts"][0]["url"]
    # On the wire as filled: an escaped slash stays escaped, nothing is decoded or escaped twice.
    assert "sub10=x%2Fy" in call.raw_query
    assert f"sub1={quote('a&b=c #d', safe='')}" in call.raw_query


def test_delivery_starts_at_once_not_at_the_next_poll(pb: Tracker, receiver: Callable[..., Receiver]) -> None:
    partner = receiver()
    _, key = affiliate(pb, partner.url + TEMPLATE)
    click_id = pb.click(key)

    sent = time.time()
    convert(pb, key, click_id=click_id)

    [call] = partner.wait_for_calls(1, timeout=4)
    # The server polls every 5 s; the postback's own commit wakes the dispatcher.
    assert call.at - sent < 1.0


# Which conversions a source receives


def test_a_source_receives_only_the_events_and_statuses_it_asked_for(
    pb: Tracker, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver()
    source, key = affiliate(
        pb, partner.url + TEMPLATE, postback_events=["sale"], postback_statuses=["approved", "chargeback"]
    )
    click_id = pb.click(key)

    convert(pb, key, click_id=click_id, event="lead", txid="L")  # not an event it asked for
    pending = convert(pb, key, click_id=click_id, event="sale", txid="S", status="pending")
    convert(pb, key, click_id=click_id, event="sale", txid="S", status="approved")
    assert pb.postback(click_id=click_id, event="sale", txid="S", status="approved").json()["result"] == (
        "duplicate"
    )
    convert(pb, key, click_id=click_id, event="sale", txid="S", status="chargeback")
    convert(pb, key, click_id=click_id, event="sale", txid="S", status="rejected")  # not asked for

    partner.wait_for_calls(2)
    time.sleep(0.3)  # long enough for a third call to arrive, were there one
    assert [(call.query["conversion"], call.query["status"]) for call in partner.calls] == [
        (pending, "approved"),
        (pending, "chargeback"),
    ]
    items = deliveries_of(pb, source_id=source["id"])
    assert sorted(item["conversion_status"] for item in items) == ["approved", "chargeback"]


def test_a_new_source_is_sent_approved_conversions_of_every_event(pb: Tracker) -> None:
    source = pb.create("sources", name="Defaults", postback_url="http://127.0.0.1:9/pb?c={conversion_id}")
    assert source["postback_events"] == []
    assert source["postback_statuses"] == ["approved"]
    bad = pb.api("PATCH", f"/sources/{source['id']}", json={"postback_statuses": ["paid"]})
    assert bad.status_code == 422
    assert [name.split(".")[0] for name in bad.json()["fields"]] == ["postback_statuses"]
    changed = pb.api("PATCH", f"/sources/{source['id']}", json={"postback_statuses": ["pending", "approved"]})
    assert changed.json()["postback_statuses"] == ["approved", "pending"]


# When the receiver fails


def test_a_failing_receiver_is_retried_with_growing_waits_until_it_answers(
    pb: Tracker, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver(fail_first=2)
    source, key = affiliate(pb, partner.url + TEMPLATE)

    conversion = convert(pb, key)

    calls = partner.wait_for_calls(3)
    delivery = wait_until(lambda: settled(pb, conversion, source["id"]), what="the delivery")
    assert delivery["status"] == "delivered"
    assert [(a["outcome"], a["status_code"]) for a in delivery["attempts"]] == [
        ("failed", 500),
        ("failed", 500),
        ("delivered", 200),
    ]
    assert delivery["attempts"][0]["error"] == "answered 500"
    first_wait, second_wait = calls[1].at - calls[0].at, calls[2].at - calls[1].at
    assert 0.2 <= first_wait < 1.0
    assert 0.4 <= second_wait < 1.2  # doubled


def test_after_the_last_attempt_the_delivery_is_dead_and_can_be_resent_by_hand(
    pb: Tracker, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver(status=503)
    source, key = affiliate(pb, partner.url + TEMPLATE)
    conversion = convert(pb, key)

    dead = wait_until(lambda: settled(pb, conversion, source["id"]), what="the dead letter")

    assert dead["status"] == "dead"
    assert dead["attempts_made"] == 3
    assert dead["last_error"] == "answered 503"
    assert dead["next_attempt_at"] is None
    assert len(partner.calls) == 3
    assert [d["id"] for d in deliveries_of(pb, status="dead", source_id=source["id"])] == [dead["id"]]

    partner.status = 200
    pb.api("POST", f"/sources/{source['id']}/resume")  # three failures also tripped its breaker
    retried = pb.api("POST", f"/deliveries/{dead['id']}/retry")
    assert retried.status_code == 200
    assert retried.json()["status"] == "pending"
    delivered = wait_until(lambda: settled(pb, conversion, source["id"]), what="the re-sent delivery")
    assert delivered["status"] == "delivered"
    assert [a["outcome"] for a in delivered["attempts"]] == ["failed", "failed", "failed", "delivered"]
    assert pb.api("POST", "/deliveries/999999999/retry").status_code == 404


def test_a_receiver_that_refuses_with_a_4xx_is_not_asked_again(
    pb: Tracker, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver(status=409)  # e.g. "conversion already recorded", or a template it cannot read
    source, key = affiliate(pb, partner.url + TEMPLATE)

    refused = [convert(pb, key, txid=f"r{n}") for n in range(3)]  # as many as trip the breaker

    for conversion in refused:
        delivery = wait_until(partial(settled, pb, conversion, source["id"]), what="the refusal")
        assert delivery["status"] == "dead"  # listed with the dead letters, re-sent only by hand
        assert delivery["attempts_made"] == 1
        assert delivery["next_attempt_at"] is None
        [attempt] = delivery["attempts"]
        assert (attempt["outcome"], attempt["status_code"]) == ("rejected", 409)
        assert attempt["error"] == "answered 409: refused, not retried"
    assert len(partner.calls) == 3
    # A refusal is an answer: the receiver is up, so its breaker does not count it.
    breaker = pb.api("GET", f"/sources/{source['id']}/breaker").json()
    assert (breaker["state"], breaker["failures"]) == ("closed", 0)


@pytest.mark.parametrize("status", [408, 425, 429])
def test_a_receiver_asking_to_come_back_later_is_retried(
    pb: Tracker, receiver: Callable[..., Receiver], status: int
) -> None:
    partner = receiver(fail_first=1, fail_status=status)  # request timeout, too early, too many requests
    source, key = affiliate(pb, partner.url + TEMPLATE)

    conversion = convert(pb, key)

    delivery = wait_until(lambda: settled(pb, conversion, source["id"]), what="the retried delivery")
    assert delivery["status"] == "delivered"
    assert [(a["outcome"], a["status_code"]) for a in delivery["attempts"]] == [
        ("failed", status),
        ("delivered", 200),
    ]


def test_a_hanging_receiver_times_out_without_holding_up_other_sources(
    pb: Tracker, receiver: Callable[..., Receiver]
) -> None:
    stuck, healthy = receiver(hang=True), receiver()
    stuck_source, stuck_key = affiliate(pb, stuck.url + TEMPLATE)
    _, healthy_key = affiliate(pb, healthy.url + TEMPLATE)

    stuck_conversion = convert(pb, stuck_key)
    sent = time.time()
    convert(pb, healthy_key)

    [call] = healthy.wait_for_calls(1)
    assert call.at - sent < 1.0
    delivery = wait_until(lambda: settled(pb, stuck_conversion, stuck_source["id"]), what="the timeouts")
    assert delivery["status"] == "dead"
    assert {a["error"] for a in delivery["attempts"]} == {"timed out waiting for the answer"}
    assert all(a["latency_ms"] >= 450 for a in delivery["attempts"])


def test_a_redirect_is_not_followed(pb: Tracker, receiver: Callable[..., Receiver]) -> None:
    partner = receiver(redirect=True)
    source, key = affiliate(pb, partner.url + TEMPLATE)
    conversion = convert(pb, key)

    delivery = wait_until(lambda: settled(pb, conversion, source["id"]), what="the attempts")

    assert delivery["status"] == "dead"
    assert delivery["attempts"][0]["status_code"] == 302
    assert "redirects are not followed" in delivery["attempts"][0]["error"]
    assert all(call.path == "/pb" for call in partner.calls)  # never went to /landed


# The circuit breaker


def trip(pb: Tracker, partner: Receiver, key: str, source_id: int) -> tuple[list[str], dict[str, Any]]:
    conversions = [convert(pb, key, txid=f"t{n}") for n in range(3)]
    breaker = wait_until(
        lambda: (b := pb.api("GET", f"/sources/{source_id}/breaker").json())["state"] == "open" and b,
        what="the breaker tripping",
    )
    return conversions, breaker


def test_a_failing_source_is_paused_then_resumes_by_itself_when_a_probe_succeeds(
    pb: Tracker, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver(status=503)
    source, key = affiliate(pb, partner.url + TEMPLATE)
    conversions, breaker = trip(pb, partner, key, source["id"])
    assert breaker["reason"] == "answered 503"
    assert breaker["opened_at"] is not None
    assert breaker["failures"] >= 3

    later = convert(pb, key, txid="while-paused")
    time.sleep(0.4)
    [paused] = [d for d in deliveries_of(pb, source_id=source["id"]) if d["conversion_id"] == later]
    assert paused["status"] == "pending"  # still queued, nothing dropped
    assert paused["attempts"] == []

    # Every waiting job's next attempt is the breaker's (current) probe: the dispatcher does not look
    # at them before then, and they all go once a probe succeeds.
    def deferred_to_the_probe() -> bool:
        probe_at = pb.api("GET", f"/sources/{source['id']}/breaker").json()["probe_at"]
        waiting = [d for d in deliveries_of(pb, source_id=source["id"]) if d["status"] == "pending"]
        assert later in {d["conversion_id"] for d in waiting}
        return all(d["next_attempt_at"] == probe_at for d in waiting)

    wait_until(deferred_to_the_probe, what="the paused jobs deferred to the probe")

    partner.status = 200
    for conversion in [*conversions, later]:
        delivered = wait_until(partial(settled, pb, conversion, source["id"]), what="the resumed delivery")
        assert delivered["status"] == "delivered"
    assert pb.api("GET", f"/sources/{source['id']}/breaker").json()["state"] == "closed"


def test_a_tripped_source_resumes_at_once_on_a_manual_resume(
    pb: Tracker, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver(status=500)
    source, key = affiliate(pb, partner.url + TEMPLATE)
    conversions, breaker = trip(pb, partner, key, source["id"])
    partner.status = 200

    resumed = pb.api("POST", f"/sources/{source['id']}/resume")

    assert resumed.status_code == 200
    assert resumed.json()["state"] == "closed"
    for conversion in conversions:
        assert wait_until(partial(settled, pb, conversion, source["id"]))["status"] == "delivered"
    probe_at = datetime.fromisoformat(breaker["probe_at"]).timestamp()
    assert all(call.at < probe_at for call in partner.calls if call.query["conversion"] in conversions)
    assert pb.api("POST", "/sources/999999/resume").status_code == 404


# The test postback


def test_a_source_can_be_sent_a_test_postback(pb: Tracker, receiver: Callable[..., Receiver]) -> None:
    partner = receiver()
    source, _ = affiliate(pb, partner.url + TEMPLATE)

    response = pb.api("POST", f"/sources/{source['id']}/test")

    assert response.status_code == 200
    result = response.json()
    assert result["outcome"] == "delivered"
    assert result["status_code"] == 200
    assert result["body"] == "ok"
    assert result["url"] == partner.url + (
        "/pb?conversion=test-conversion-id&click=test-click-id&status=approved&event=test&payout=0.50"
    )
    [call] = partner.calls
    assert call.query["conversion"] == "test-conversion-id"
    assert deliveries_of(pb, source_id=source["id"]) == []  # a test is recorded nowhere
    silent = receiver(hang=True)
    slow_source, _ = affiliate(pb, silent.url + TEMPLATE)
    slow = pb.api("POST", f"/sources/{slow_source['id']}/test").json()
    assert (slow["outcome"], slow["error"]) == ("failed", "timed out waiting for the answer")
    no_url = pb.create("sources", name="No URL")
    assert pb.api("POST", f"/sources/{no_url['id']}/test").status_code == 422


# The deliveries API


def test_deliveries_filter_and_page(pb: Tracker, receiver: Callable[..., Receiver]) -> None:
    partner = receiver()
    source, key = affiliate(pb, partner.url + TEMPLATE)
    click_id = pb.click(key)
    conversions = [convert(pb, key, click_id=click_id, txid=f"p{n}") for n in range(3)]
    for conversion in conversions:
        wait_until(partial(settled, pb, conversion, source["id"]), what="the deliveries")

    first = pb.api("GET", "/deliveries", params={"source_id": source["id"], "limit": 2}).json()
    rest = pb.api(
        "GET", "/deliveries", params={"source_id": source["id"], "limit": 2, "cursor": first["next_cursor"]}
    ).json()

    assert [d["conversion_id"] for d in first["items"] + rest["items"]] == conversions[::-1]
    assert rest["next_cursor"] is None
    assert len(deliveries_of(pb, click_id=click_id.upper())) == 3
    assert deliveries_of(pb, source_id=source["id"], status="dead") == []
    bad = pb.api("GET", "/deliveries", params={"status": "lost"})
    assert bad.status_code == 422
    assert bad.json()["error"] == "validation_error"
    one = pb.api("GET", f"/deliveries/{first['items'][0]['id']}").json()
    assert one["attempts"][0]["status_code"] == 200
