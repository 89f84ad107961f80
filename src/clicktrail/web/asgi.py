"""Small helpers for answering raw ASGI requests on the lean edge routes."""

import json
from collections.abc import Sequence
from http.cookies import CookieError, SimpleCookie
from typing import Any

from starlette.types import Receive, Scope, Send

NO_STORE = (b"cache-control", b"no-store")
Headers = Sequence[tuple[bytes, bytes]]


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def joined_header(scope: Scope, name: bytes) -> str | None:
    """Every line of a list header, comma-joined in order (RFC 9110 5.3): a proxy that appends its own
    X-Forwarded-For line instead of extending the client's must not leave the client's line first."""
    values = [value.decode("latin-1") for key, value in scope["headers"] if key == name]
    return ", ".join(values) if values else None


def response_headers(
    body: bytes, content_type: bytes, extra: Headers = (), cache: tuple[bytes, bytes] = NO_STORE
) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), cache]
    headers.extend(extra)
    return headers


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    extra: Headers = (),
    *,
    head: bool = False,
    cache: tuple[bytes, bytes] = NO_STORE,
) -> None:
    headers = response_headers(body, content_type, extra, cache)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if head else body})


async def respond_json(
    send: Send, status: int, payload: dict[str, Any], *, head: bool = False, extra: Headers = ()
) -> None:
    body = json.dumps(payload, separators=(",", ":")).encode()
    await respond(send, status, body, b"application/json", extra, head=head)


async def respond_error(
    send: Send, status: int, code: str, detail: str, *, head: bool = False, extra: Headers = ()
) -> None:
    await respond_json(send, status, {"error": code, "detail": detail}, head=head, extra=extra)


def cookie_value(cookie_header: str | None, name: str) -> str | None:
    if not cookie_header:
        return None
    cookies = SimpleCookie()
    try:
        cookies.load(cookie_header)
    except CookieError:
        return None
    morsel = cookies.get(name)
    return morsel.value if morsel is not None else None


class BodyTooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
