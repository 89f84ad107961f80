"""Dashboard sign-in with an account: the session carries the user and its role, read-only roles get no
forms and their posts are refused, and sessions end server-side (sign-out, a disabled user)."""

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.accounts.support import PASSWORD, make_user
from tests.support import ADMIN_TOKEN, ServerProcess, Tracker


@pytest.fixture
def admin(server: ServerProcess, backend: str) -> Iterator[Tracker]:
    if backend != "sqlite":
        pytest.skip("the dashboard runs the same queries on both backends; the browser tests use SQLite")
    tracker = Tracker(server)
    yield tracker
    tracker.close()


def sign_in(server: ServerProcess, username: str, secret: str) -> httpx.Client:
    """A browser-like client signed in through the login form."""
    client = httpx.Client(base_url=server.base_url, follow_redirects=False)
    form = client.get("/login").text
    nonce = re.search(r'name="nonce" value="([^"]+)"', form)
    assert nonce is not None
    answer = client.post(
        "/login", data={"username": username, "token": secret, "nonce": nonce[1], "next": "/offers"}
    )
    if answer.status_code != 303:
        client.close()
        raise AssertionError(f"sign-in refused: {answer.status_code}")
    assert answer.headers["location"] == "/offers"
    return client


def csrf_of(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found[1]


def test_an_analyst_signs_in_with_a_password_and_sees_no_forms(admin: Tracker, server: ServerProcess) -> None:
    analyst = make_user(admin, "analyst")
    client = sign_in(server, analyst["username"].upper(), PASSWORD)
    page = client.get("/offers")
    assert page.status_code == 200
    assert f"{analyst['username']} · analyst" in page.text
    assert "Create offer" not in page.text
    posted = client.post(
        "/offers", data={"csrf": csrf_of(page.text), "name": "by analyst", "url": "https://m.example/"}
    )
    assert posted.status_code == 403
    offers = admin.api("GET", "/offers", params={"limit": 1000}).json()["items"]
    assert "by analyst" not in {o["name"] for o in offers}
    client.close()


def test_a_manager_may_create_from_the_dashboard(admin: Tracker, server: ServerProcess) -> None:
    manager = make_user(admin, "manager")
    client = sign_in(server, manager["username"], PASSWORD)
    page = client.get("/offers").text
    assert "Create offer" in page
    posted = client.post(
        "/offers", data={"csrf": csrf_of(page), "name": "by manager", "url": "https://m.example/"}
    )
    assert posted.status_code == 303
    entries = admin.api("GET", "/audit", params={"object_type": "offer"}).json()["items"]
    [entry] = [e for e in entries if e["after"]["name"] == "by manager"]
    assert entry["actor"] == manager["username"]
    assert entry["actor_user_id"] == manager["id"]
    client.close()


def test_a_wrong_password_or_a_disabled_user_cannot_sign_in(admin: Tracker, server: ServerProcess) -> None:
    user = make_user(admin, "analyst")
    client = httpx.Client(base_url=server.base_url)
    form = client.get("/login").text
    nonce = re.search(r'name="nonce" value="([^"]+)"', form)
    assert nonce is not None
    wrong = client.post(
        "/login", data={"username": user["username"], "token": "not it at all", "nonce": nonce[1]}
    )
    assert wrong.status_code == 401
    assert "Wrong username or password" in wrong.text
    assert "clicktrail_session" not in wrong.headers.get("set-cookie", "")
    admin.api("PATCH", f"/users/{user['id']}", json={"disabled": True})
    with pytest.raises(AssertionError):
        sign_in(server, user["username"], PASSWORD)
    client.close()


def test_signing_out_ends_the_session_on_the_server(admin: Tracker, server: ServerProcess) -> None:
    user = make_user(admin, "analyst")
    client = sign_in(server, user["username"], PASSWORD)
    stolen = dict(client.cookies)
    page = client.get("/offers").text
    assert client.post("/logout", data={"csrf": csrf_of(page)}).status_code == 303
    replayed = httpx.get(f"{server.base_url}/offers", cookies=stolen, follow_redirects=False)
    assert replayed.status_code == 303
    assert replayed.headers["location"].startswith("/login")
    client.close()


def test_disabling_a_user_ends_its_sessions_at_once(admin: Tracker, server: ServerProcess) -> None:
    user = make_user(admin, "manager")
    client = sign_in(server, user["username"], PASSWORD)
    assert client.get("/offers").status_code == 200
    admin.api("PATCH", f"/users/{user['id']}", json={"disabled": True})
    assert client.get("/offers").status_code == 303
    client.close()


def test_an_affiliate_sees_its_own_page_and_nothing_else(admin: Tracker, server: ServerProcess) -> None:
    mine = admin.campaign(revenue="77.00", payout="11.00")
    theirs = admin.campaign(revenue="88.00", payout="22.00")
    for campaign, txid in ((mine, "aff-mine"), (theirs, "aff-theirs")):
        click_id = admin.click(campaign["key"], sub1="s")
        assert admin.postback(click_id=click_id, event="sale", txid=txid).status_code == 200
    affiliate = make_user(admin, "affiliate", source_id=mine["source"]["id"])
    client = sign_in(server, affiliate["username"], PASSWORD)
    home = client.get("/")
    assert home.status_code == 303
    assert home.headers["location"] == "/partner"
    page = client.get("/partner").text
    assert f"/c/{mine['key']}" in page
    assert f"/c/{theirs['key']}" not in page
    assert "aff-mine" in page
    assert "aff-theirs" not in page
    assert "11.00" in page
    for secret in ("77.00", "88.00", "revenue", "profit"):
        assert secret not in page, secret
    assert 'href="/offers"' not in page
    for path in ("/offers", "/reports", "/reports.csv", "/logs/clicks", "/lookup?q=x"):
        refused = client.get(path)
        assert refused.status_code == 403, path
        assert "/partner" in refused.text
    client.close()


def test_an_advertiser_sees_its_offers_conversions_without_payouts(
    admin: Tracker, server: ServerProcess
) -> None:
    mine = admin.campaign(revenue="66.00", payout="33.00")
    click_id = admin.click(mine["key"])
    assert admin.postback(click_id=click_id, event="sale", txid="adv-mine").status_code == 200
    advertiser = make_user(admin, "advertiser", offer_ids=[mine["offer"]["id"]])
    client = sign_in(server, advertiser["username"], PASSWORD)
    page = client.get("/partner").text
    assert "adv-mine" in page
    assert "66.00" in page
    assert "33.00" not in page
    assert "payout" not in page
    client.close()


def test_the_login_form_takes_a_password_or_the_admin_token(
    browser: Browser, admin: Tracker, server: ServerProcess
) -> None:
    manager = make_user(admin, "manager")
    context = browser.new_context(base_url=server.base_url)
    page = context.new_page()
    page.goto("/offers")
    page.get_by_label("Email or username").fill(manager["username"])
    page.get_by_label("Password or admin token").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Offers")).to_be_visible()
    expect(page.get_by_text(f"{manager['username']} · manager")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    page.get_by_label("Password or admin token").fill(ADMIN_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("admin token · admin")).to_be_visible()
    context.close()
