"""Daily conversion caps with a fallback offer: once an offer has its day's conversions, new clicks go
to its fallback, and back to it when the cap's day ends. Through a real server (the switch, within a
refresh interval), and on the domain with a settable clock (the day boundary, in the cap's timezone),
on SQLite and PostgreSQL."""

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from clicktrail.catalog.cache import CatalogCache
from clicktrail.catalog.caps import CapBook
from clicktrail.catalog.models import CampaignInput, OfferInput, OfferPatch, SourceInput
from clicktrail.catalog.routes import Route
from clicktrail.catalog.rules import Visit
from clicktrail.catalog.service import Catalog
from clicktrail.config import Settings
from clicktrail.conversions.intake import PostbackIntake, RawPostback
from clicktrail.storage import inserts
from clicktrail.storage.database import Database
from clicktrail.storage.migrate import upgrade
from clicktrail.types import ClickId
from tests.support import ServerProcess, Tracker, codec, fresh_database, start_server

ANYONE = Visit(country=None, device_type="desktop", os=None, browser=None, is_bot=False, subs={}, hour=0)


# Through the server


@pytest.fixture(scope="module")
def capped_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp(f"caps-{backend}")
    with fresh_database(backend, directory) as url:
        process = start_server(url, directory, extra_env={"CLICKTRAIL_CAP_REFRESH_SECONDS": "0.2"})
        yield process
        assert process.stop() == 0, process.log()


@pytest.fixture
def capped(capped_server: ServerProcess) -> Iterator[Tracker]:
    client = Tracker(capped_server)
    yield client
    client.close()


def _lands_on(tracker: Tracker, key: str) -> str:
    response = tracker.http.get(f"/c/{key}")
    assert response.status_code == 302, response.text
    return urlsplit(response.headers["location"]).netloc


def test_once_an_offer_reaches_its_daily_cap_new_clicks_go_to_its_fallback(capped: Tracker) -> None:
    spare = capped.create("offers", name="Spare", url="https://spare.example/?cid={click_id}")
    campaign = capped.campaign(url="https://main.example/?cid={click_id}", daily_cap=2)
    patched = capped.api("PATCH", f"/offers/{campaign['offer_id']}", json={"fallback_offer_id": spare["id"]})
    assert patched.status_code == 200, patched.text
    assert (patched.json()["daily_cap"], patched.json()["cap_timezone"]) == (2, "UTC")

    first, second = capped.click(campaign["key"]), capped.click(campaign["key"])
    assert capped.postback(click_id=first, txid="cap-1").json()["result"] == "accepted"
    assert capped.postback(click_id=first, txid="cap-1b", status="rejected").status_code == 200
    time.sleep(1)  # five refreshes: a rejected conversion does not count
    assert _lands_on(capped, campaign["key"]) == "main.example"

    assert capped.postback(click_id=second, txid="cap-2").json()["result"] == "accepted"
    deadline = time.monotonic() + 10
    while _lands_on(capped, campaign["key"]) != "spare.example" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _lands_on(capped, campaign["key"]) == "spare.example"
    click = capped.api("GET", f"/clicks/{capped.click(campaign['key'])}").json()
    assert click["offer_id"] == spare["id"]  # the click is the fallback's: its conversions count there


def test_a_fallback_that_does_not_exist_or_leads_back_to_the_offer_is_refused(capped: Tracker) -> None:
    first = capped.create("offers", name="A", url="https://a.example/")
    second = capped.create("offers", name="B", url="https://b.example/", fallback_offer_id=first["id"])

    to_itself = capped.api("PATCH", f"/offers/{first['id']}", json={"fallback_offer_id": first["id"]})
    in_a_circle = capped.api("PATCH", f"/offers/{first['id']}", json={"fallback_offer_id": second["id"]})
    missing = capped.api(
        "POST", "/offers", json={"name": "C", "url": "https://c.example/", "fallback_offer_id": 999_999}
    )
    bad_zone = capped.api(
        "POST", "/offers", json={"name": "D", "url": "https://d.example/", "cap_timezone": "Mars/Olympus"}
    )
    zero = capped.api("POST", "/offers", json={"name": "E", "url": "https://e.example/", "daily_cap": 0})

    for refused in (to_itself, in_a_circle, missing, bad_zone, zero):
        assert refused.status_code == 422, refused.text
    assert "come back" in in_a_circle.json()["detail"]
    assert "timezone" in bad_zone.json()["detail"]


# On the domain, with a settable clock


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    with fresh_database(str(request.param), tmp_path) as url:
        db = Database(Settings(database_url=url).sqlalchemy_url)
        upgrade(db.engine)
        yield db
        db.dispose()


class Shop:
    """A capped offer with a fallback chain, a campaign on it, and conversions as the pipeline records
    them, at a time the test sets."""

    def __init__(self, database: Database, clock: Clock, **cap: Any) -> None:
        self.db, self.clock = database, clock
        self.catalog = Catalog(database, clock)
        self.last = self.catalog.create_offer(OfferInput(name="Last", url="https://last.example/"))
        self.spare = self.catalog.create_offer(
            OfferInput(
                name="Spare", url="https://spare.example/", daily_cap=1, fallback_offer_id=self.last.id
            )
        )
        self.main = self.catalog.create_offer(
            OfferInput(name="Main", url="https://main.example/", fallback_offer_id=self.spare.id, **cap)
        )
        source = self.catalog.create_source(SourceInput(name="Source"))
        self.campaign = self.catalog.create_campaign(
            CampaignInput(name="Campaign", source_id=source.id, offer_id=self.main.id)
        )
        self.cache = CatalogCache(database)
        self.cache.reload()
        self.caps = CapBook()
        self.intake = PostbackIntake(database, codec(), lambda: self.cache.snapshot, clock)
        self.sent = 0

    @property
    def route(self) -> Route:
        route = self.cache.route(self.campaign.key)
        assert route is not None
        return route

    def convert(self, offer_id: int, status: str = "approved") -> None:
        """A click on the offer an hour ago, and its conversion now."""
        click_id = ClickId(codec().mint(self.clock.now - timedelta(hours=1)))
        with self.db.begin() as connection:
            inserts.insert_clicks(connection, [{
                "click_id": click_id, "created_at": self.clock.now - timedelta(hours=1),
                "campaign_id": self.campaign.id, "offer_id": offer_id, "source_id": self.campaign.source_id,
                "is_bot": False, "is_unique": True,
            }])  # fmt: skip
        self.sent += 1
        params = {"click_id": click_id, "txid": f"t{self.sent}", "status": status}
        outcome = self.intake.handle(RawPostback("GET", params, None))
        assert outcome.decision.value == "accepted", outcome

    def lands_on(self) -> str:
        """Where a new click goes, counting caps as a worker would after its periodic refresh."""
        self.caps.refresh(self.db, self.cache.snapshot.capped_offers(), self.clock.now)
        return self.landing_without_refresh()

    def landing_without_refresh(self) -> str:
        chosen = self.route.for_visit(ANYONE, "visitor", self.caps, self.clock.now)
        return urlsplit(chosen.offer.url).netloc.split(".")[0]


def test_the_fallback_takes_over_at_the_cap_and_the_offer_returns_the_next_day(database: Database) -> None:
    clock = Clock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    shop = Shop(database, clock, daily_cap=2)

    shop.convert(shop.main.id)
    shop.convert(shop.main.id, status="rejected")
    assert shop.lands_on() == "main"
    shop.convert(shop.main.id)
    assert shop.lands_on() == "spare"
    shop.convert(shop.spare.id)
    assert shop.lands_on() == "last"  # the fallback reached its own cap: on down the chain

    clock.now = datetime(2026, 11, 24, 0, 0, 1, tzinfo=UTC)
    assert shop.landing_without_refresh() == "main"  # yesterday's counts are not today's
    assert shop.lands_on() == "main"


def test_the_caps_day_starts_at_midnight_in_the_offers_timezone(database: Database) -> None:
    clock = Clock(datetime(2026, 11, 23, 18, 0, tzinfo=UTC))  # 13:00 in New York
    shop = Shop(database, clock, daily_cap=1, cap_timezone="America/New_York")
    shop.convert(shop.main.id)
    assert shop.lands_on() == "spare"

    clock.now = datetime(2026, 11, 24, 4, 59, tzinfo=UTC)  # 23:59 in New York: still the same day
    assert shop.lands_on() == "spare"
    clock.now = datetime(2026, 11, 24, 5, 0, tzinfo=UTC)  # midnight in New York
    assert shop.lands_on() == "main"


def test_removing_the_cap_sends_clicks_back_to_the_offer(database: Database) -> None:
    clock = Clock(datetime(2026, 11, 23, 9, 0, tzinfo=UTC))
    shop = Shop(database, clock, daily_cap=1)
    shop.convert(shop.main.id)
    assert shop.lands_on() == "spare"

    shop.catalog.patch_offer(shop.main.id, OfferPatch(daily_cap=None))
    shop.cache.reload()

    assert shop.lands_on() == "main"
    assert shop.route.dynamic is False  # an offer without a cap costs the click path nothing
