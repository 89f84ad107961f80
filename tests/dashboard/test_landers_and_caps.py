"""Landers, daily caps and postback authentication in the browser: a lander made through the forms is
shown before the offer and its click-through reaches the report; an offer's cap, fallback and
authentication fields are saved through the same catalog calls as the API, with each refusal (a bad
CIDR, a fallback loop, a short secret) shown next to its field."""

import re
import time
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.dashboard.browsing import browser_backend_only, dashboard
from tests.support import ServerProcess, Tracker


@pytest.fixture
def page(browser: Browser, server: ServerProcess, backend: str) -> Iterator[Page]:
    browser_backend_only(backend)
    with dashboard(browser, server) as opened:
        yield opened


@pytest.fixture
def api(page: Page, server: ServerProcess) -> Iterator[Tracker]:
    client = Tracker(server)
    yield client
    client.close()


def test_a_lander_made_in_the_forms_is_shown_before_the_offer_and_its_click_through_is_reported(
    page: Page, server: ServerProcess, api: Tracker
) -> None:
    offer = api.create("offers", name="Lander offer", url="https://m.example/buy?cid={click_id}&s={sub1}")
    api.create("sources", name="Lander source")

    page.get_by_role("link", name="Landers").click()
    expect(page.get_by_role("heading", name="Landers", level=1)).to_be_visible()
    page.get_by_label("Name").fill("VPN review")
    page.get_by_label("Lander URL").fill("https://lp.example/vpn?cid={clickid}")
    page.get_by_role("button", name="Create lander").click()
    expect(page.locator("#e-url")).to_contain_text("unknown macros {clickid}")
    expect(page.get_by_label("Lander URL")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Lander URL")).to_have_value("https://lp.example/vpn?cid={clickid}")
    page.get_by_label("Lander URL").fill("https://lp.example/vpn?cid={click_id}&o={offer_id}")
    page.get_by_role("button", name="Create lander").click()
    expect(page.get_by_role("cell", name="VPN review")).to_be_visible()
    lander = next(lp for lp in api.api("GET", "/landers").json()["items"] if lp["name"] == "VPN review")

    # Renaming it on its own page goes through the same PATCH as the API's.
    page.get_by_role("link", name="VPN review").click()
    expect(page.get_by_role("heading", name=f"Lander {lander['id']} · VPN review")).to_be_visible()
    expect(page.get_by_role("region", name="Links on the lander")).to_contain_text(
        f"{server.base_url}/lp/click?click_id={{click_id}}"
    )
    page.get_by_label("Name").fill("VPN review v2")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    assert api.api("GET", f"/landers/{lander['id']}").json()["name"] == "VPN review v2"
    audit = api.api("GET", "/audit", params={"object_type": "lander"}).json()["items"]
    changes = [e for e in audit if str(e["object_id"]) == str(lander["id"])]
    assert len(changes) == 2
    assert {e["actor"] for e in changes} == {"admin token"}

    page.get_by_role("link", name="Campaigns").click()
    page.get_by_label("Name").fill("Lander campaign")
    page.get_by_label("Traffic source").select_option(label="Lander source")
    page.get_by_label("Offer").select_option(label="Lander offer")
    page.get_by_label("Lander").select_option(label="VPN review v2")
    page.get_by_role("button", name="Create campaign").click()
    row = page.get_by_role("row").filter(has_text="Lander campaign")
    tracking_url = row.locator("code").inner_text()
    row.get_by_role("link", name="Lander campaign").click()
    flow = page.get_by_role("list", name="The tracking flow")
    expect(flow).to_contain_text(f"{lander['id']} · VPN review v2")
    expect(flow).to_contain_text("https://lp.example/vpn?cid={click_id}&o={offer_id}")
    expect(page.get_by_label("Lander")).to_have_value(str(lander["id"]))

    # The tracking link shows the lander; its button continues the same click to the offer.
    visit = httpx.get(tracking_url, params={"sub1": "lp-test"}, follow_redirects=False)
    assert visit.status_code == 302
    landing = visit.headers["location"]
    assert landing.startswith("https://lp.example/vpn?cid=")
    assert landing.endswith(f"&o={offer['id']}")
    click_id = re.search(r"cid=([0-9a-z]{32})", landing).group(1)  # type: ignore[union-attr]
    through = httpx.get(f"{server.base_url}/lp/click", params={"click_id": click_id}, follow_redirects=False)
    assert through.status_code == 302
    assert through.headers["location"] == f"https://m.example/buy?cid={click_id}&s=lp-test"

    page.goto("/reports?g0=lander")
    row = page.get_by_role("row").filter(has_text="VPN review v2")
    deadline = time.monotonic() + 30
    # Reports are fed every moment: wait for the click and its click-through.
    while not (row.count() and "100.0000" in row.inner_text()) and time.monotonic() < deadline:
        time.sleep(0.3)
        page.reload()
    header = [cell.strip() for cell in page.locator("table thead th").all_inner_texts()]
    values = dict(zip(header, row.locator("td").all_inner_texts(), strict=True))
    assert values["lander"].startswith(f"{lander['id']} · VPN review v2")
    assert (values["lander_views"], values["lander_clicks"], values["lander_ctr"]) == ("1", "1", "100.0000")


def test_an_offer_cap_fallback_and_postback_authentication_are_set_in_the_form(
    page: Page, api: Tracker
) -> None:
    backup = api.create("offers", name="Backup offer", url="https://b.example/?c={click_id}")
    page.goto("/offers")
    page.get_by_label("Name").fill("Capped offer")
    page.get_by_label("Offer URL").fill("https://m.example/?c={click_id}")
    page.get_by_label("Daily cap (optional)").fill("50")
    page.get_by_label("Cap timezone").select_option("Europe/Berlin")
    page.get_by_label("Fallback offer").select_option(label=f"{backup['id']} · Backup offer")
    page.get_by_label("Postback IP allowlist (optional)").fill("203.0.113.7\n198.51.100.9/24")
    page.get_by_role("button", name="Generate a secret").click()
    secret = page.get_by_label("Signing secret (optional)").input_value()
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    page.get_by_role("button", name="Create offer").click()
    expect(page.get_by_role("cell", name="Capped offer")).to_be_visible()

    capped = next(o for o in api.api("GET", "/offers").json()["items"] if o["name"] == "Capped offer")
    assert (capped["daily_cap"], capped["cap_timezone"], capped["fallback_offer_id"]) == (
        50, "Europe/Berlin", backup["id"],
    )  # fmt: skip
    assert capped["postback_ips"] == ["203.0.113.7/32", "198.51.100.0/24"]
    assert capped["postback_secret"] == secret

    page.get_by_role("link", name="Capped offer").click()
    expect(page.get_by_label("Postback IP allowlist (optional)")).to_have_value(
        "203.0.113.7/32\n198.51.100.0/24"
    )
    expect(page.get_by_role("link", name="How the merchant signs, with code")).to_be_visible()
    page.get_by_label("Postback IP allowlist (optional)").fill("203.0.113.7\n10.0.0.300/8")
    page.get_by_label("Signing secret (optional)").fill("too-short")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#e-postback_ips")).to_contain_text(
        "'10.0.0.300/8' is not an IP address or CIDR range"
    )
    expect(page.get_by_label("Postback IP allowlist (optional)")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Postback IP allowlist (optional)")).to_have_value("203.0.113.7\n10.0.0.300/8")
    expect(page.locator("#e-postback_secret")).to_contain_text("at least 16 characters")
    stored = api.api("GET", f"/offers/{capped['id']}").json()
    assert (stored["postback_ips"], stored["postback_secret"]) == (capped["postback_ips"], secret)

    # The backup may not fall back to the capped offer: the chain would come back to it.
    page.goto(f"/offers/{backup['id']}")
    page.get_by_label("Fallback offer").select_option(label=f"{capped['id']} · Capped offer")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#e-fallback_offer_id")).to_contain_text("would come back to this offer")
    expect(page.get_by_label("Fallback offer")).to_have_attribute("aria-invalid", "true")
    assert api.api("GET", f"/offers/{backup['id']}").json()["fallback_offer_id"] is None

    # Emptied, the cap, the fallback, the allowlist and the secret are cleared, as PATCH null would.
    page.goto(f"/offers/{capped['id']}")
    page.get_by_label("Daily cap (optional)").fill("")
    page.get_by_label("Fallback offer").select_option("")
    page.get_by_label("Postback IP allowlist (optional)").fill("")
    page.get_by_label("Signing secret (optional)").fill("")
    page.get_by_role("button", name="Save changes").click()
    expect(page.get_by_role("status")).to_have_text("Saved.")
    cleared = api.api("GET", f"/offers/{capped['id']}").json()
    assert (cleared["daily_cap"], cleared["fallback_offer_id"], cleared["postback_ips"]) == (None, None, [])
    assert cleared["postback_secret"] is None
    assert cleared["cap_timezone"] == "Europe/Berlin"
