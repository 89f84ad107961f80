"""The dashboard in a real browser (Debian's Chromium) against the real server: sign in, build a
campaign, see its click and conversion in the report and the logs, and no visitor value ever runs as
script."""

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Dialog, Page, expect

from tests.support import ADMIN_TOKEN, ServerProcess

XSS_SUB = '<script>window.__pwned = 1</script>"><img src=x onerror="window.__pwned=1">'
XSS_TXID = "<svg/onload=window.__pwned=1>"


@pytest.fixture
def page(browser: Browser, server: ServerProcess, backend: str) -> Iterator[Page]:
    if backend != "sqlite":
        pytest.skip("the dashboard runs the same queries on both backends; the browser tests use SQLite")
    context = browser.new_context(base_url=server.base_url, viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    dialogs: list[str] = []

    def refuse(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    opened.on("dialog", refuse)
    yield opened
    assert dialogs == [], "a script ran from a value a visitor controls"
    context.close()


def sign_in(page: Page) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


def not_pwned(page: Page) -> None:
    assert page.evaluate("window.__pwned") is None


def test_a_wrong_token_is_refused_and_pages_need_a_session(page: Page) -> None:
    page.goto("/reports")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Freports"))
    page.get_by_label("Admin token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("not this tracker's admin token")
    assert "not-the-token" not in page.url


def test_the_whole_flow_in_the_browser(page: Page, server: ServerProcess, screenshots: Path) -> None:
    sign_in(page)
    page.screenshot(path=str(screenshots / "overview-empty.png"), full_page=True)

    page.get_by_role("link", name="Offers").click()
    page.get_by_label("Name").fill("Browser offer")
    page.get_by_label("Offer URL").fill("https://merchant.example/land?cid={click_id}&s={sub1}")
    page.get_by_label("Revenue per conversion").fill("12.50")
    page.get_by_role("button", name="Create offer").click()
    expect(page.get_by_role("cell", name="Browser offer")).to_be_visible()

    page.get_by_role("link", name="Sources").click()
    page.get_by_label("Name").fill("Browser source")
    page.get_by_role("button", name="Create source").click()
    expect(page.get_by_role("cell", name="Browser source")).to_be_visible()

    page.get_by_role("link", name="Campaigns").click()
    page.get_by_label("Name").fill("Browser campaign")
    page.get_by_label("Traffic source").select_option(label="Browser source")
    page.get_by_label("Offer").select_option(label="Browser offer")
    page.get_by_role("button", name="Create campaign").click()
    row = page.get_by_role("row").filter(has_text="Browser campaign")
    tracking_url = row.locator("code").inner_text()
    page.screenshot(path=str(screenshots / "campaigns.png"), full_page=True)

    visit = httpx.get(tracking_url, params={"sub1": XSS_SUB}, follow_redirects=False)
    assert visit.status_code == 302
    click_id = re.search(r"cid=([0-9a-z]{32})", visit.headers["location"]).group(1)  # type: ignore[union-attr]
    postback = httpx.get(
        f"{server.base_url}/postback",
        params={"click_id": click_id, "event": "sale", "payout": "30", "txid": XSS_TXID},
    )
    assert postback.json()["result"] == "accepted"

    page.get_by_role("link", name="Reports").click()
    page.get_by_label("Group 1").select_option("campaign")
    page.get_by_label("Group 2").select_option("sub1")
    deadline = time.monotonic() + 20
    while True:
        page.get_by_role("button", name="Run").click()
        row = page.get_by_role("row").filter(has_text="Browser campaign")
        # Reports are fed every moment: wait until both the click and its conversion are in.
        if (row.count() and "30.00" in row.inner_text()) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    expect(row).to_contain_text(XSS_SUB)
    expect(row).to_contain_text("30.00")
    not_pwned(page)
    page.screenshot(path=str(screenshots / "report.png"), full_page=True)

    page.get_by_role("link", name="Postbacks").click()
    expect(page.get_by_role("row").filter(has_text=click_id)).to_contain_text("accepted")
    expect(page.get_by_role("row").filter(has_text=click_id)).to_contain_text(XSS_TXID)
    not_pwned(page)
    page.screenshot(path=str(screenshots / "postbacks.png"), full_page=True)

    page.get_by_label("Click ID or txid").fill(click_id)
    page.get_by_label("Click ID or txid").press("Enter")
    expect(page.get_by_role("heading", name=f"The story of {click_id}")).to_be_visible()
    expect(page.get_by_text(XSS_SUB).first).to_be_visible()
    not_pwned(page)
    page.screenshot(path=str(screenshots / "lookup.png"), full_page=True)

    page.goto("/")
    page.screenshot(path=str(screenshots / "overview.png"), full_page=True)
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/campaigns")
    expect(page).to_have_url(re.compile(r"/login\?next="))


def test_validation_errors_show_next_to_the_field(page: Page) -> None:
    sign_in(page)
    page.goto("/offers")
    page.get_by_label("Name").fill("Bad offer")
    page.get_by_label("Offer URL").fill("https://merchant.example/?c={clickid}")
    page.get_by_role("button", name="Create offer").click()
    error = page.locator("#e-url")
    expect(error).to_contain_text("unknown macros {clickid}")
    expect(page.get_by_label("Offer URL")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Offer URL")).to_have_value("https://merchant.example/?c={clickid}")


def test_a_form_posted_without_its_csrf_token_is_refused(page: Page, server: ServerProcess) -> None:
    sign_in(page)
    cookies = {c["name"]: c["value"] for c in page.context.cookies()}
    form = {"name": "forged-offer", "url": "https://m.example/"}
    forged = httpx.post(f"{server.base_url}/offers", data=form, cookies=cookies)
    assert forged.status_code == 403
    offers = httpx.get(
        f"{server.base_url}/api/v1/offers",
        params={"limit": 1000},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ).json()["items"]
    assert "forged-offer" not in {offer["name"] for offer in offers}
