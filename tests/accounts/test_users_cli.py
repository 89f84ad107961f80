"""`clicktrail users add|list|disable` and `clicktrail keys create|revoke`: clear messages, no tracebacks,
and what they make works against the API at once."""

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest

from tests.accounts.support import PASSWORD
from tests.support import ServerProcess, Tracker, fresh_database, start_server


@pytest.fixture(scope="module")
def cli_server(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    directory = tmp_path_factory.mktemp(f"cli-{backend}")
    with fresh_database(backend, directory) as url:
        process = start_server(url, directory)
        yield process
        assert process.stop() == 0, process.log()


def clicktrail(
    server: ServerProcess, *args: str, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLICKTRAIL_DATABASE_URL": server.database_url}
    return subprocess.run(
        [sys.executable, "-m", "clicktrail.cli", *args], input=password, env=env, capture_output=True,
        text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_user_added_on_the_command_line_gets_a_key_and_can_be_disabled(cli_server: ServerProcess) -> None:
    added = clicktrail(cli_server, "users", "add", "Ana@Example.com", "--role", "analyst", "--password-stdin",
                       password=PASSWORD + "\n")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "ana@example.com (analyst) created" in added.stdout
    listed = clicktrail(cli_server, "users", "list")
    assert "ana@example.com" in listed.stdout
    assert "active" in listed.stdout

    created = clicktrail(
        cli_server, "keys", "create", "ana@example.com", "--name", "laptop", "--expires-days", "30"
    )
    assert created.returncode == 0, created.stderr
    secret = created.stdout.strip().rsplit(" ", 1)[-1]
    assert secret.startswith("ctk_")
    me = httpx.get(f"{cli_server.base_url}/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.json()["role"] == "analyst"

    disabled = clicktrail(cli_server, "users", "disable", "ana@example.com")
    assert disabled.returncode == 0, disabled.stderr
    assert "disabled" in clicktrail(cli_server, "users", "list").stdout
    me = httpx.get(f"{cli_server.base_url}/api/v1/me", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 401
    admin = Tracker(cli_server)
    audit = admin.api("GET", "/audit", params={"object_type": "user"}).json()["items"]
    admin.close()
    assert [(e["action"], e["actor"]) for e in audit[:2]] == [("disable", "system"), ("create", "system")]


@pytest.mark.parametrize(
    ("args", "password", "message"),
    [
        (("users", "add", "x@example.com", "--role", "analyst", "--password-stdin"), "short\n", "password"),
        (("users", "add", "has space", "--role", "analyst", "--password-stdin"), PASSWORD + "\n", "username"),
        (("users", "add", "aff@example.com", "--role", "affiliate", "--password-stdin"), PASSWORD + "\n",
         "an affiliate is bound to one source"),
        (("users", "add", "adv@example.com", "--role", "advertiser", "--offer-ids", "12345",
          "--password-stdin"), PASSWORD + "\n", "no offer with id 12345"),
        (("users", "add", "y@example.com", "--role", "analyst"), "", "--password-stdin"),
        (("users", "disable", "nobody@example.com"), None, "no user called nobody@example.com"),
        (("keys", "create", "nobody@example.com"), None, "no user called"),
        (("keys", "revoke", "99999999999"), None, "from 1 to"),
        (("keys", "revoke", "424242"), None, "no API key with id 424242"),
    ],
)  # fmt: skip
def test_mistakes_get_a_clear_message_and_no_traceback(
    cli_server: ServerProcess, args: tuple[str, ...], password: str | None, message: str
) -> None:
    result = clicktrail(cli_server, *args, password=password)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_taken_username_is_refused(cli_server: ServerProcess) -> None:
    add = ("users", "add", "--role", "manager", "--password-stdin")
    first = clicktrail(cli_server, *add, "twin@example.com", password=PASSWORD + "\n")
    assert first.returncode == 0
    again = clicktrail(cli_server, *add, "TWIN@example.com", password=PASSWORD + "\n")
    assert again.returncode == 1
    assert "a user called twin@example.com exists" in again.stderr
