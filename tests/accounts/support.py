"""Accounts in tests: users of each role made through the admin API, each with an API key."""

import secrets
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support import Tracker

PASSWORD = "correct horse battery staple"


@dataclass
class Account:
    user: dict[str, Any]
    key: str
    tracker: Tracker

    def api(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.tracker.http.request(
            method, f"/api/v1{path}", headers={"Authorization": f"Bearer {self.key}"}, **kwargs
        )


def make_user(tracker: Tracker, role: str, **binding: Any) -> dict[str, Any]:
    body = {"username": f"{role}-{secrets.token_hex(4)}@example.com", "password": PASSWORD, "role": role}
    response = tracker.api("POST", "/users", json={**body, **binding})
    assert response.status_code == 201, response.text
    user: dict[str, Any] = response.json()
    return user


def make_key(tracker: Tracker, user_id: int, **fields: Any) -> str:
    response = tracker.api("POST", "/keys", json={"user_id": user_id, "name": "tests", **fields})
    assert response.status_code == 201, response.text
    secret: str = response.json()["secret"]
    return secret


def account(tracker: Tracker, role: str, **binding: Any) -> Account:
    user = make_user(tracker, role, **binding)
    return Account(user, make_key(tracker, user["id"]), tracker)
