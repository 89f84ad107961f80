"""Rate limits: the API per key and per address, refused credentials and sign-in per address and per
account, and the optional per-address cap on clicks and postbacks. Each refusal is a 429 with a JSON
reason and Retry-After. Tests tell addresses apart through X-Forwarded-For from a trusted proxy."""

import itertools
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clicktrail.config import Settings
from clicktrail.errors import RateLimited
from clicktrail.web.ratelimit import RateLimiter
from tests.accounts.support import PASSWORD, make_key, make_user
from tests.support import ServerProcess, Tracker, fresh_database, start_server

# Slow refills (one request a minute or less), so a slow machine cannot refill a bucket mid-test.
LIMITS = {
    "CLICKTRAIL_TRUSTED_PROXIES": "127.0.0.1/32",
    "CLICKTRAIL_API_RATE_PER_MINUTE": "0.6",
    "CLICKTRAIL_API_RATE_BURST": "20",
    "CLICKTRAIL_API_IP_RATE_PER_MINUTE": "0.6",
    "CLICKTRAIL_API_IP_RATE_BURST": "40",
    "CLICKTRAIL_AUTH_FAILURES_PER_MINUTE": "0.6",
    "CLICKTRAIL_AUTH_FAILURES_BURST": "3",
    "CLICKTRAIL_SIGN_IN_PER_MINUTE": "0.6",
    "CLICKTRAIL_SIGN_IN_BURST": "3",
    "CLICKTRAIL_EDGE_IP_RATE_PER_SECOND": "0.01",
    "CLICKTRAIL_EDGE_IP_BURST": "3",
}


@pytest.fixture(scope="module")
def limited(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp(f"limited-{backend}")
    with fresh_database(backend, directory) as url:
        process = start_server(url, directory, extra_env=LIMITS)
        yield process
        assert process.stop() == 0, process.log()


@pytest.fixture
def admin(limited: ServerProcess) -> Iterator[Tracker]:
    """The admin token, calling from an address of its own (it has a per-key bucket too: these tests
    make few admin calls)."""
    tracker = Tracker(limited)
    tracker.http.headers.update(address())
    yield tracker
    tracker.close()


_ADDRESSES = itertools.count(1)


def address() -> dict[str, str]:
    """A client address no earlier call handed out, as the trusted proxy reports it. The server lives
    for the whole module, so a reused address would arrive with its bucket already partly spent."""
    n = next(_ADDRESSES)
    return {"X-Forwarded-For": f"198.51.100.7, 10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"}


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert response.json()["error"] == "rate_limited"
    assert int(response.headers["retry-after"]) >= 1


def test_an_api_key_past_its_burst_waits_and_other_keys_do_not(admin: Tracker) -> None:
    user = make_user(admin, "analyst")
    busy = make_key(admin, user["id"])
    calm = make_key(admin, user["id"])
    url = f"{admin.server.base_url}/api/v1/me"
    answers = [httpx.get(url, headers={"Authorization": f"Bearer {busy}", **address()}) for _ in range(21)]
    assert [a.status_code for a in answers[:20]] == [200] * 20
    assert_limited(answers[20])
    assert httpx.get(url, headers={"Authorization": f"Bearer {calm}", **address()}).status_code == 200


def test_refused_credentials_from_one_address_are_slowed_down(limited: ServerProcess) -> None:
    url, one = f"{limited.base_url}/api/v1/me", address()
    answers = [httpx.get(url, headers={"Authorization": "Bearer ctk_wrong", **one}) for _ in range(4)]
    assert [a.status_code for a in answers[:3]] == [401] * 3
    assert_limited(answers[3])
    assert httpx.get(url, headers={"Authorization": "Bearer x", **address()}).status_code == 401


def test_an_address_past_its_api_burst_is_refused(limited: ServerProcess, admin: Tracker) -> None:
    user = make_user(admin, "analyst")
    keys = [make_key(admin, user["id"]) for _ in range(3)]
    url, one = f"{limited.base_url}/api/v1/me", address()
    # Many keys, one address: the address runs out before any key does.
    answers = [httpx.get(url, headers={"Authorization": f"Bearer {keys[n % 3]}", **one}) for n in range(41)]
    assert [a.status_code for a in answers[:40]] == [200] * 40
    assert_limited(answers[40])


def test_sign_in_attempts_are_limited_per_address_and_per_account(
    limited: ServerProcess, admin: Tracker
) -> None:
    user = make_user(admin, "analyst")
    form = {"username": user["username"], "token": "wrong password", "nonce": "n"}
    per_address = httpx.Client(base_url=limited.base_url, headers=address())
    answers = [per_address.post("/login", data={**form, "username": f"nobody{n}"}) for n in range(4)]
    assert [a.status_code for a in answers[:3]] == [401] * 3
    assert answers[3].status_code == 429
    assert int(answers[3].headers["retry-after"]) >= 1
    assert "Too many sign-in attempts" in answers[3].text
    # The account is protected from many addresses as well: the right password waits its turn too.
    tries = [httpx.post(f"{limited.base_url}/login", data=form, headers=address()) for _ in range(3)]
    assert [t.status_code for t in tries] == [401] * 3
    right = httpx.post(
        f"{limited.base_url}/login",
        data={**form, "token": PASSWORD},
        headers=address(),
        follow_redirects=False,
    )
    assert right.status_code == 429
    per_address.close()


def test_clicks_and_postbacks_can_be_capped_per_address(admin: Tracker) -> None:
    tracker = admin
    campaign = tracker.campaign()
    visitor = address()
    clicks = [tracker.http.get(f"/c/{campaign['key']}", headers=visitor) for _ in range(4)]
    assert [c.status_code for c in clicks[:3]] == [302] * 3
    assert_limited(clicks[3])
    assert tracker.http.get(f"/c/{campaign['key']}", headers=address()).status_code == 302
    merchant = address()
    postbacks = [tracker.http.get("/postback", params={"click_id": "x"}, headers=merchant) for _ in range(4)]
    assert [p.status_code for p in postbacks[:3]] == [400] * 3
    assert_limited(postbacks[3])


def test_clicks_and_postbacks_are_not_capped_by_default(tmp_path: Path) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}")
    assert settings.edge_ip_rate_per_second == 0


def test_a_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter("test", per_minute=60, burst=2, clock=lambda: now[0])
    limiter.check("a")
    limiter.check("a")
    with pytest.raises(RateLimited) as refused:
        limiter.check("a")
    assert refused.value.retry_after == 1
    limiter.check("b")
    now[0] = 1.0
    limiter.check("a")
    assert limiter.retry_after("a") == 1
