"""The main pages at phone (390 by 844) and desktop (1280 by 800) size: nothing overflows sideways, and
screenshots are kept under build/screenshots/. And the pages added since the first XSS test (editing,
the delivery log, test traffic, the drill-down, landers) escape every value a visitor or a colleague
can influence."""

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.dashboard.browsing import DESKTOP, PHONE, browser_backend_only, dashboard
from tests.dashboard.test_dashboard import XSS_SUB, XSS_TXID, not_pwned
from tests.delivery_support import TEMPLATE, deliveries_of, wait_until
from tests.receivers import Receiver
from tests.support import ServerProcess, Tracker

XSS_NAME = '<img src=x onerror="window.__pwned=1">Name'
LONG_SUB = "a-very-long-sub-id-without-any-space-" * 6
# A valid URL template (no spaces) that would break out of an attribute if it were not escaped.
XSS_LANDER_URL = 'https://lp.example/?x="><img/src=x/onerror=window.__pwned=1>&cid={click_id}'


@dataclass(frozen=True)
class Traffic:
    campaign: dict[str, object]
    source: dict[str, object]
    offer: dict[str, object]
    lander: dict[str, object]
    click_id: str


@pytest.fixture
def server(backend: str, request: pytest.FixtureRequest) -> ServerProcess:
    browser_backend_only(backend)
    delivering: ServerProcess = request.getfixturevalue("delivery_server")
    return delivering


@pytest.fixture
def traffic(server: ServerProcess, receiver: Callable[..., Receiver]) -> Iterator[Traffic]:
    """A source posting back to a receiver that fails, a campaign showing a lander, a visitor with
    hostile and very long values who clicks through the lander, and their conversion: every page has
    something in it."""
    partner = receiver(status=500)
    api = Tracker(server)
    template = partner.url + TEMPLATE + "&s1={sub1}&tx={txid}"
    source = api.create("sources", name=XSS_NAME, postback_url=template)
    offer = api.create("offers", name=XSS_NAME, url="https://m.example/?cid={click_id}&s={sub1}")
    lander = api.create("landers", name=XSS_NAME, url=XSS_LANDER_URL)
    campaign = api.create(
        "campaigns", name=XSS_NAME, source_id=source["id"], offer_id=offer["id"], lander_id=lander["id"]
    )
    click_id = api.click(campaign["key"], sub1=XSS_SUB, sub2=LONG_SUB, external_id=XSS_TXID)
    assert api.http.get("/lp/click", params={"click_id": click_id}).status_code == 302
    api.http.get(f"/c/{campaign['key']}", params={"sub1": LONG_SUB}, headers={"User-Agent": XSS_SUB})
    answer = api.postback(click_id=click_id, event="sale", payout="9.99", txid=XSS_TXID)
    assert answer.json()["result"] == "accepted", answer.text
    wait_until(
        lambda: [d for d in deliveries_of(api, click_id=click_id) if d["status"] == "dead"], 10, "dead"
    )
    yield Traffic(campaign, source, offer, lander, click_id)
    api.close()


def main_pages(traffic: Traffic) -> dict[str, str]:
    campaign_id, source_id = traffic.campaign["id"], traffic.source["id"]
    return {
        "overview": "/",
        "report": f"/reports?g0=campaign&g1=sub1&g2=sub2&campaign_id={campaign_id}",
        "campaigns": "/campaigns",
        "campaign": f"/campaigns/{campaign_id}?test_click={traffic.click_id}",
        "offers": "/offers",
        "offer": f"/offers/{traffic.offer['id']}",
        "signing": "/help/postback-signing",
        "landers": "/landers",
        "lander": f"/landers/{traffic.lander['id']}",
        "lander-report": f"/reports?g0=lander&g1=sub2&campaign_id={campaign_id}",
        "sources": "/sources",
        "source": f"/sources/{source_id}",
        "clicks": f"/logs/clicks?campaign_id={campaign_id}",
        "conversions": f"/logs/conversions?campaign_id={campaign_id}",
        "postbacks": f"/logs/postbacks?click_id={traffic.click_id}",
        "deliveries": f"/deliveries?click_id={traffic.click_id}",
        "lookup": f"/lookup?q={traffic.click_id}",
    }


def overflow(page: Page) -> int:
    """How many CSS pixels the page is wider than the window (0: no sideways scrolling)."""
    return int(page.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_the_main_pages_fit_the_screen(
    browser: Browser, server: ServerProcess, traffic: Traffic, screenshots: Path, viewport: ViewportSize
) -> None:
    size = f"{viewport['width']}x{viewport['height']}"
    with dashboard(browser, server, viewport) as page:
        for name, path in main_pages(traffic).items():
            page.goto(path)
            expect(page.locator("main h1")).to_be_visible()
            page.screenshot(path=str(screenshots / f"{name}-{size}.png"), full_page=True)
            assert overflow(page) <= 0, f"{name} ({path}) is {overflow(page)}px wider than a {size} screen"
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(re.compile(r"/login$"))
        page.screenshot(path=str(screenshots / f"login-{size}.png"), full_page=True)
        assert overflow(page) <= 0


def test_visitor_values_never_run_on_the_new_pages(
    browser: Browser, server: ServerProcess, traffic: Traffic
) -> None:
    with dashboard(browser, server) as page:
        for path in main_pages(traffic).values():
            page.goto(path)
            not_pwned(page)

        # The delivery log shows the attempt's URL with the visitor's values percent-encoded, as text.
        page.goto(f"/deliveries?click_id={traffic.click_id}")
        expect(page.locator("td.url").first).to_contain_text("%3Cscript%3E")
        expect(page.get_by_role("heading", name="Sources' circuit breakers")).to_be_visible()

        # The whole story of the click ends with the outbound postback that failed.
        page.goto(f"/lookup?q={traffic.click_id}")
        outbound = page.get_by_role("region", name="Outbound postbacks to the source")
        expect(outbound.get_by_role("row").filter(has_text="dead")).to_have_count(1)

        # The test-traffic panel shows the stored click's hostile values as text.
        page.goto(f"/campaigns/{traffic.campaign['id']}?test_click={traffic.click_id}")
        arrived = page.get_by_role("region", name="What arrived")
        expect(arrived).to_contain_text(XSS_SUB)
        expect(arrived).to_contain_text(XSS_TXID)
        expect(page.get_by_role("heading", level=1)).to_have_text(
            f"Campaign {traffic.campaign['id']} · {XSS_NAME}"
        )
        not_pwned(page)

        # Drilling into the hostile sub1: the value travels in the link and shows in the breadcrumb.
        page.goto(f"/reports?g0=sub1&g1=sub2&campaign_id={traffic.campaign['id']}")
        wait_until(lambda: page.reload() or page.get_by_role("link", name=XSS_SUB).count(), 20, "the report")
        page.get_by_role("link", name=XSS_SUB).click()
        crumbs = page.get_by_role("navigation", name="Drill-down")
        expect(crumbs.locator("[aria-current=page]")).to_have_text(f"sub1 = {XSS_SUB} (by sub2)")
        expect(page.get_by_role("row").filter(has_text=LONG_SUB)).to_have_count(1)
        not_pwned(page)

        # A lander's name and URL go back into its inputs, its links and the campaign's flow as text.
        page.goto(f"/landers/{traffic.lander['id']}")
        expect(page.get_by_label("Name")).to_have_value(XSS_NAME)
        expect(page.get_by_label("Lander URL")).to_have_value(XSS_LANDER_URL)
        expect(page.get_by_role("link", name=f"{traffic.campaign['id']} · {XSS_NAME}")).to_be_visible()
        not_pwned(page)
        page.goto("/landers")
        expect(page.get_by_role("cell", name=XSS_LANDER_URL).first).to_be_visible()
        page.goto(f"/campaigns/{traffic.campaign['id']}")
        expect(page.get_by_role("list", name="The tracking flow")).to_contain_text(XSS_LANDER_URL)
        expect(page.get_by_label("Lander")).to_have_value(str(traffic.lander["id"]))
        page.goto("/reports?g0=lander")
        wait_until(lambda: page.reload() or page.get_by_role("row").filter(has_text=XSS_NAME).count(), 20,
                   "the lander report")  # fmt: skip
        not_pwned(page)

        # Editing forms put stored values back into inputs: still only text.
        page.goto(f"/sources/{traffic.source['id']}")
        expect(page.get_by_label("Name")).to_have_value(XSS_NAME)
        page.get_by_role("button", name="Send a test postback").click()
        expect(page.get_by_label("Test postback result")).to_contain_text("500")
        not_pwned(page)
