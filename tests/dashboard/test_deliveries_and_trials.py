"""The outbound delivery log (every attempt, retry, the circuit breaker and its resume) and test
traffic sent from a campaign's page, in the browser against a server that delivers to local
receivers."""

from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.dashboard.browsing import browser_backend_only, dashboard
from tests.delivery_support import TEMPLATE, affiliate, convert, deliveries_of, wait_until
from tests.receivers import Receiver
from tests.support import ServerProcess, Tracker


@pytest.fixture
def page(browser: Browser, backend: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    browser_backend_only(backend)
    server: ServerProcess = request.getfixturevalue("delivery_server")
    with dashboard(browser, server) as opened:
        yield opened


@pytest.fixture
def api(page: Page, delivery_server: ServerProcess) -> Iterator[Tracker]:
    client = Tracker(delivery_server)
    yield client
    client.close()


def reload_until(page: Page, selector: str, text: str, timeout: float = 20) -> None:
    """Delivery happens in the background: reload until the element `selector` says `text`."""

    def shown() -> bool:
        page.reload()
        return any(text in found for found in page.locator(selector).all_inner_texts())

    wait_until(shown, timeout, f"{text!r} in {selector} on {page.url}")


def test_a_dead_delivery_is_listed_with_its_attempts_then_resumed_and_retried(
    page: Page, api: Tracker, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver(status=503)
    source, key = affiliate(api, partner.url + TEMPLATE)
    click_id = api.click(key)
    convert(api, key, click_id=click_id, event="sale", txid="dead-1")
    wait_until(
        lambda: [d for d in deliveries_of(api, click_id=click_id) if d["status"] == "dead"], 10, "dead"
    )

    page.goto(f"/deliveries?click_id={click_id}")
    row = page.locator("tr.delivery")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("dead")
    attempts = page.get_by_role("table", name=f"Attempts of delivery {row.get_attribute('data-delivery')}")
    expect(attempts.locator("tbody tr")).to_have_count(3)
    first = attempts.locator("tbody tr").first
    expect(first).to_contain_text(f"{partner.url}/pb?conversion=")
    expect(first).to_contain_text("503")
    expect(first).to_contain_text(" ms")
    expect(first).to_contain_text("answered 503")

    # Three failures in a row (the test servers' threshold) opened the source's breaker: shown with
    # why and since when.
    breakers = page.get_by_role("region", name="Sources' circuit breakers")
    entry = breakers.locator("li").filter(has_text=f"{source['id']} · Partner")
    expect(entry).to_contain_text("open")
    expect(entry).to_contain_text("Paused since")
    expect(entry).to_contain_text("answered 503")

    page.get_by_label("Status", exact=True).select_option("delivered")
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tr.delivery")).to_have_count(0)
    page.get_by_label("Status", exact=True).select_option("dead")
    page.get_by_label("Source", exact=True).select_option(str(source["id"]))
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("tr.delivery").filter(has_text=click_id)).to_have_count(1)

    partner.status = 200
    entry = page.get_by_role("region", name="Sources' circuit breakers").locator("li")
    entry.filter(has_text=f"{source['id']} · Partner").get_by_role("button", name="Resume").click()
    expect(page.get_by_role("status")).to_contain_text(f"source {source['id']} is closed")
    assert api.api("GET", f"/sources/{source['id']}/breaker").json()["state"] == "closed"

    calls_before_retry = len(partner.calls)
    page.locator("tr.delivery").filter(has_text=click_id).get_by_role("button", name="Retry").click()
    expect(page.get_by_role("status")).to_contain_text("queued to be sent again now")
    page.goto(f"/deliveries?click_id={click_id}")
    reload_until(page, "tr.delivery", "delivered")
    assert len(partner.calls) > calls_before_retry


def test_a_test_click_and_a_test_postback_from_the_campaign_page_arrive(
    page: Page, api: Tracker, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver()
    _, key = affiliate(api, partner.url + TEMPLATE)
    campaign = next(c for c in api.api("GET", "/campaigns?limit=1000").json()["items"] if c["key"] == key)
    page.goto(f"/campaigns/{campaign['id']}")

    test = page.get_by_role("region", name="Test this campaign")
    test.get_by_label("sub1").fill("from-the-dashboard")
    test.get_by_role("button", name="Send a test click").click()
    arrived = page.get_by_role("region", name="What arrived")
    expect(arrived).to_contain_text("from-the-dashboard")
    click_id = arrived.locator("dd code").first.inner_text()
    stored = api.api("GET", f"/clicks/{click_id}").json()
    assert (stored["campaign_id"], stored["sub1"]) == (campaign["id"], "from-the-dashboard")
    expect(arrived).to_contain_text(f"https://m.example/?cid={click_id}")

    test = page.get_by_role("region", name="Test this campaign")
    expect(test.get_by_label("click_id")).to_have_value(click_id)
    test.get_by_label("payout").fill("7.50")
    test.get_by_role("button", name="Send a test postback").click()
    expect(page.get_by_role("status")).to_contain_text("accepted")
    arrived = page.get_by_role("region", name="What arrived")
    expect(arrived.get_by_role("row").filter(has_text="accepted")).to_have_count(1)
    expect(arrived.get_by_role("row").filter(has_text="7.50")).to_have_count(1)

    calls = partner.wait_for_calls(1)
    assert calls[0].query["click"] == click_id
    reload_until(page, "[aria-label='What arrived'] table", "delivered")
    conversions = api.api("GET", "/conversions", params={"click_id": click_id}).json()["items"]
    assert [(c["event"], c["revenue"]) for c in conversions] == [("sale", "7.50")]

    # The same postback again is recognised as a duplicate, and the page says so.
    txid = conversions[0]["txid"]
    test = page.get_by_role("region", name="Test this campaign")
    test.get_by_label("txid").fill(txid)
    test.get_by_role("button", name="Send a test postback").click()
    expect(page.get_by_role("status")).to_contain_text("duplicate")
