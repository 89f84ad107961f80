"""Dashboard sessions: a signed, expiring cookie (HttpOnly, SameSite=Strict) and a CSRF token bound
to it. The admin token or password is typed into a form once; it never appears in a URL or a cookie.

The signature only proves the cookie is ours; the session must also still be open server-side
(accounts/service.py): signing out or disabling the user closes it everywhere at once."""

import base64
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from clicktrail.accounts.models import Principal

COOKIE = "clicktrail_session"
LIFETIME_SECONDS = 12 * 3600


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    expires: int
    principal: Principal | None = None
    """Who holds it, once looked up server-side."""


class SessionSigner:
    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"dashboard-session\0" + key).digest()

    def _mac(self, text: str) -> str:
        digest = hmac.new(self._key, text.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, now: float | None = None) -> str:
        expires = int((now or time.time()) + LIFETIME_SECONDS)
        body = f"{secrets.token_urlsafe(16)}.{expires}"
        return f"{body}.{self._mac(body)}"

    def read(self, cookie: str | None, now: float | None = None) -> Session | None:
        if not cookie or cookie.count(".") != 2:
            return None
        session_id, expires_text, mac = cookie.split(".")
        body = f"{session_id}.{expires_text}"
        if not expires_text.isdigit() or not hmac.compare_digest(mac, self._mac(body)):
            return None
        if int(expires_text) < (now or time.time()):
            return None
        return Session(session_id, int(expires_text))

    def csrf_token(self, session: Session) -> str:
        return self._mac(f"csrf:{session.session_id}")

    def csrf_ok(self, session: Session, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf_token(session))
