"""Editing offers, sources and campaigns in the browser: only what the user changed is saved (through
the same catalog calls as the API's PATCH), errors show next to their field, and it all works from
the keyboard."""

import json
from collections.abc import Callable, Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.dashboard.browsing import browser_backend_only, dashboard
from tests.receivers import Receiver
from tests.support import ServerProcess, Tracker


@pytest.fixture
def page(browser: Browser, backend: str, request: pytest.FixtureRequest) -> Iterator[Page]:
    browser_backend_only(backend)
    # The delivering server allows 127.0.0.1 as a postback address, so sources can call our receivers.
    server: ServerProcess = request.getfixturevalue("delivery_server")
    with dashboard(browser, server) as opened:
        yield opened


@pytest.fixture
def api(page: Page, delivery_server: ServerProcess) -> Iterator[Tracker]:
    client = Tracker(delivery_server)
    yield client
    client.close()


def test_an_offer_is_edited_from_the_keyboard_and_only_changed_fields_are_saved(
    page: Page, api: Tracker
) -> None:
    offer = api.create(
        "offers", name="Editable offer", url="https://m.example/?c={click_id}", revenue="10.00",
        postback_token="merchant-secret-1",
    )  # fmt: skip
    page.goto("/offers")
    link = page.get_by_role("link", name="Editable offer").last
    link.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Offer {offer['id']} · Editable offer")).to_be_visible()
    page.get_by_label("Revenue per conversion").focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("15.25")
    page.keyboard.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Saved.")
    expect(page.get_by_label("Revenue per conversion")).to_have_value("15.25")

    stored = api.api("GET", f"/offers/{offer['id']}").json()
    assert stored["revenue"] == "15.25"
    assert stored["postback_token"] == "merchant-secret-1"
    assert stored["url"] == "https://m.example/?c={click_id}"

    # Saving an untouched form writes nothing: the row is not even marked as updated.
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    assert api.api("GET", f"/offers/{offer['id']}").json()["updated_at"] == stored["updated_at"]

    # An emptied optional field is cleared (null), as PATCH {"postback_token": null} would.
    page.get_by_label("Postback token (optional)").fill("")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    assert api.api("GET", f"/offers/{offer['id']}").json()["postback_token"] is None


def test_edit_errors_show_next_to_their_field_and_keep_what_was_typed(page: Page, api: Tracker) -> None:
    offer = api.create("offers", name="Strict offer", url="https://m.example/?c={click_id}")
    page.goto(f"/offers/{offer['id']}")
    page.get_by_label("Offer URL").fill("https://m.example/?c={clickid}")
    page.get_by_label("Payout to the affiliate").fill("12.3456789")
    page.get_by_label("Currency").fill("dollars")
    page.get_by_role("button", name="Save changes").click()

    url = page.get_by_label("Offer URL")
    expect(page.locator("#e-url")).to_contain_text("unknown macros {clickid}")
    expect(url).to_have_attribute("aria-invalid", "true")
    expect(url).to_have_attribute("aria-describedby", "h-url e-url")
    expect(url).to_have_value("https://m.example/?c={clickid}")
    expect(page.locator("#e-payout")).to_contain_text("at most 6 decimal places")
    expect(page.locator("#e-currency")).to_contain_text("three-letter ISO 4217 code")
    # Nothing was saved: one bad field refuses the whole change.
    stored = api.api("GET", f"/offers/{offer['id']}").json()
    assert stored["url"] == "https://m.example/?c={click_id}"
    assert stored["payout"] == "0.00"


def test_a_form_opened_before_someone_else_saved_does_not_undo_their_change(page: Page, api: Tracker) -> None:
    offer = api.create("offers", name="Shared offer", url="https://m.example/?c={click_id}", payout="1.00")
    page.goto(f"/offers/{offer['id']}")
    api.api("PATCH", f"/offers/{offer['id']}", json={"payout": "2.00"})
    page.get_by_label("Name").fill("Renamed offer")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#e-form")).to_contain_text("changed by someone else")
    stored = api.api("GET", f"/offers/{offer['id']}").json()
    assert (stored["name"], stored["payout"]) == ("Shared offer", "2.00")


def test_a_source_postback_template_is_edited_with_its_macros_explained_and_tested(
    page: Page, api: Tracker, receiver: Callable[..., Receiver]
) -> None:
    partner = receiver()
    source = api.create("sources", name="Editable source")
    page.goto("/sources")
    page.get_by_role("link", name="Editable source").last.click()
    macros = page.get_by_role("region", name="Macros in the postback template")
    for macro in ("{external_id}", "{conversion_id}", "{payout}", "{status}", "{sub10}"):
        expect(macros.get_by_role("cell", name=macro, exact=True)).to_be_visible()

    page.get_by_label("Outbound postback URL").fill(f"{partner.url}/pb?cid={{clickid}}")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#e-postback_url")).to_contain_text("unknown macros {clickid}")

    template = f"{partner.url}/pb?conversion={{conversion_id}}&s={{status}}&ext={{external_id}}"
    page.get_by_label("Outbound postback URL").fill(template)
    page.get_by_label("Events sent").fill("sale, lead")
    page.get_by_role("checkbox", name="chargeback").check()
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    stored = api.api("GET", f"/sources/{source['id']}").json()
    assert stored["postback_url"] == template
    assert stored["postback_events"] == ["lead", "sale"]
    assert stored["postback_statuses"] == ["approved", "chargeback"]

    page.get_by_role("button", name="Send a test postback").click()
    result = page.get_by_label("Test postback result")
    expect(result).to_contain_text("delivered")
    expect(result).to_contain_text("200")
    calls = partner.wait_for_calls(1)
    assert calls[0].query["conversion"] == "test-conversion-id"


def test_a_campaign_split_and_rules_are_edited_with_errors_next_to_them(page: Page, api: Tracker) -> None:
    first = api.create("offers", name="Split A", url="https://a.example/?c={click_id}")
    second = api.create("offers", name="Split B", url="https://b.example/?c={click_id}")
    source = api.create("sources", name="Split source")
    campaign = api.create("campaigns", name="Split campaign", source_id=source["id"], offer_id=first["id"])
    page.goto(f"/campaigns/{campaign['id']}")
    expect(page.get_by_text(campaign["tracking_url"]).first).to_be_visible()

    page.get_by_label("Split offer 1").select_option(str(first["id"]))
    page.get_by_label("Split weight 1").fill("70")
    page.get_by_label("Split offer 2").select_option(str(second["id"]))
    page.get_by_label("Split weight 2").fill("0")
    page.get_by_label("Rules (JSON)").fill(
        '[{"when": {"country": ["DE", "Germany"]}, "offers": [{"offer_id": 1}]}]'
    )
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#e-rules")).to_contain_text("rule 1: when → country → 1")
    expect(page.get_by_label("Rules (JSON)")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("Rules (JSON)").fill(
        json.dumps([{"when": {"country": ["DE"]}, "offers": [{"offer_id": second["id"]}]}])
    )
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#e-split-1")).to_contain_text("weight: Input should be greater than or equal to 1")
    expect(page.get_by_label("Split weight 2")).to_have_attribute("aria-invalid", "true")
    assert api.api("GET", f"/campaigns/{campaign['id']}").json()["routing"] is None

    page.get_by_label("Rules (JSON)").fill("[{not json")
    page.get_by_label("Split weight 2").fill("30")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#e-rules")).to_contain_text("not valid JSON")

    rules = json.dumps(
        [{"name": "Germany", "when": {"country": ["DE"]}, "offers": [{"offer_id": second["id"]}]}]
    )
    page.get_by_label("Rules (JSON)").fill(rules)
    page.get_by_label("Name").fill("Split campaign v2")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    stored = api.api("GET", f"/campaigns/{campaign['id']}").json()
    assert stored["name"] == "Split campaign v2"
    assert stored["routing"] == {
        "rules": [
            {
                "name": "Germany",
                "when": {"country": ["DE"]},
                "offers": [{"offer_id": second["id"], "weight": 1}],
            }
        ],
        "default": [{"offer_id": first["id"], "weight": 70}, {"offer_id": second["id"], "weight": 30}],
    }

    # Emptying the split and the rules clears the routing: everyone goes to the campaign's offer.
    page.get_by_label("Split offer 1").select_option("")
    page.get_by_label("Split weight 1").fill("")
    page.get_by_label("Split offer 2").select_option("")
    page.get_by_label("Split weight 2").fill("")
    page.get_by_label("Rules (JSON)").fill("")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    assert api.api("GET", f"/campaigns/{campaign['id']}").json()["routing"] is None
