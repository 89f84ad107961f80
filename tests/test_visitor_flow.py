"""Who clicked, end to end through a real server (SQLite and PostgreSQL): the stored click carries the
visitor's device, OS, browser, country, bot and unique flags, and its conversion carries them too."""

from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from tests import corpora
from tests.reports.test_reports_api import _report_when
from tests.support import ServerProcess, Tracker, fresh_database, start_server

BOT_RANGE = "198.51.100.0/24"


@pytest.fixture(scope="module")
def visitor_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server behind a trusted proxy (this test), so X-Forwarded-For names the visitor."""
    directory = tmp_path_factory.mktemp(f"visitors-{backend}")
    with fresh_database(backend, directory) as url:
        env = {"CLICKTRAIL_TRUSTED_PROXIES": "127.0.0.1/32", "CLICKTRAIL_BOT_NETWORKS": BOT_RANGE}
        process = start_server(url, directory, extra_env=env)
        yield process
        assert process.stop() == 0, process.log()


@pytest.fixture
def visitors(visitor_server: ServerProcess) -> Iterator[Tracker]:
    client = Tracker(visitor_server)
    yield client
    client.close()


def _iphone() -> str:
    return next(ua for ua, kind in corpora.real_browsers() if kind == "mobile" and "iPhone" in ua)


def _click(tracker: Tracker, key: str, ip: str, user_agent: str) -> dict[str, object]:
    response = tracker.http.get(
        f"/c/{key}", headers={"x-forwarded-for": ip, "user-agent": user_agent}, params={"sub1": "s"}
    )
    assert response.status_code == 302, response.text
    click_id = parse_qs(urlsplit(response.headers["location"]).query)["cid"][0]
    stored: dict[str, object] = _api(tracker, f"/clicks/{click_id}")
    return stored


def _api(tracker: Tracker, path: str) -> dict[str, object]:
    response = tracker.api("GET", path)
    assert response.status_code == 200, response.text
    found: dict[str, object] = response.json()
    return found


def test_a_click_is_stored_with_who_clicked_and_its_conversion_carries_it(visitors: Tracker) -> None:
    campaign = visitors.campaign()

    click = _click(visitors, campaign["key"], "8.8.8.8", _iphone())

    assert click["ip"] == "8.8.8.8"
    assert click["country"] == "US"
    assert click["region"] is not None
    assert (click["device_type"], click["os"], click["browser"]) == ("mobile", "iOS", "Mobile Safari")
    assert click["os_version"] is not None
    assert click["browser_version"] is not None
    assert click["is_bot"] is False
    assert click["is_unique"] is True
    assert isinstance(click["visitor_id"], str)
    assert len(click["visitor_id"]) == 16

    assert visitors.postback(click_id=str(click["click_id"]), txid="t-1").status_code == 200
    conversion = _api(visitors, f"/conversions?click_id={click['click_id']}")["items"]
    assert isinstance(conversion, list)
    assert [(c["country"], c["device_type"], c["os"], c["browser"], c["is_bot"]) for c in conversion] == [
        ("US", "mobile", "iOS", "Mobile Safari", False)
    ]


def test_a_repeat_click_of_the_same_visitor_is_not_unique_but_another_campaign_counts_it(
    visitors: Tracker,
) -> None:
    first, second = visitors.campaign(), visitors.campaign()
    iphone = _iphone()
    assert _click(visitors, first["key"], "81.2.69.160", iphone)["is_unique"] is True
    assert _click(visitors, first["key"], "81.2.69.160", iphone)["is_unique"] is False
    assert _click(visitors, second["key"], "81.2.69.160", iphone)["is_unique"] is True
    visitors.http.cookies.clear()  # another visitor: no cookie of ours, another address
    assert _click(visitors, first["key"], "81.2.69.161", iphone)["is_unique"] is True


def test_a_visitor_who_kept_our_cookie_is_recognised_from_a_new_address(visitors: Tracker) -> None:
    key = visitors.campaign()["key"]
    iphone = _iphone()
    first = _click(visitors, key, "81.2.69.170", iphone)
    moved = _click(visitors, key, "81.2.69.171", iphone)  # same browser, new IP: the cookie names it
    assert (first["is_unique"], moved["is_unique"]) == (True, False)
    assert moved["visitor_id"] == first["visitor_id"]
    visitors.http.cookies.clear()
    assert _click(visitors, key, "81.2.69.172", iphone)["is_unique"] is True


def test_crawlers_and_configured_ranges_are_recorded_as_bots_and_still_redirected(visitors: Tracker) -> None:
    key = visitors.campaign()["key"]
    crawler = corpora.crawler_list()[0]
    assert _click(visitors, key, "8.8.4.4", crawler)["is_bot"] is True
    assert _click(visitors, key, "198.51.100.7", _iphone())["is_bot"] is True
    assert _click(visitors, key, "8.8.4.4", "")["is_bot"] is True
    assert _click(visitors, key, "8.8.4.4", _iphone())["is_bot"] is False


def test_versions_region_and_city_are_report_dimensions_carried_by_conversions_and_filterable(
    visitors: Tracker,
) -> None:
    campaign = visitors.campaign()
    click = _click(visitors, campaign["key"], "8.8.8.8", _iphone())
    other = _click(visitors, campaign["key"], "81.2.69.160", _iphone())  # another region
    assert click["city"] is not None
    assert click["region"] != other["region"]
    assert visitors.postback(click_id=str(click["click_id"]), txid="dims-1").status_code == 200

    conversion = _api(visitors, f"/conversions?click_id={click['click_id']}")["items"]
    assert isinstance(conversion, list)
    carried = ("os_version", "browser_version", "region", "city")
    assert [tuple(c[name] for name in carried) for c in conversion] == [
        tuple(click[name] for name in carried)
    ]

    dims = "region,city,os_version,browser_version"
    params = {"group_by": dims, "campaign_id": str(campaign["id"])}
    body = _report_when(visitors, params, lambda b: b["totals"]["clicks"] == 2 and b["totals"]["conversions"])
    assert len(body["rows"]) == 2
    mine = next(row for row in body["rows"] if row["city"] == click["city"])
    assert (mine["region"], mine["os_version"], mine["browser_version"]) == (
        click["region"], click["os_version"], click["browser_version"]
    )  # fmt: skip
    assert (mine["clicks"], mine["conversions"]) == (1, 1)

    filtered = _report_when(
        visitors, {**params, "region": str(other["region"])}, lambda b: b["totals"]["clicks"] == 1
    )
    assert [row["city"] for row in filtered["rows"]] == [other["city"]]
    assert filtered["totals"]["conversions"] == 0
    by_city = _api(visitors, f"/clicks?campaign_id={campaign['id']}&city={click['city']}")["items"]
    assert isinstance(by_city, list)
    assert [c["click_id"] for c in by_city] == [click["click_id"]]
