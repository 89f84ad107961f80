"""What the dashboard's page modules share: the runtime, rendering with the security headers, the
signed-in session and CSRF-checked forms. pages.py builds one PageKit and hands it to each module's
routes, so a page module adds routes without reaching into pages.py."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from clicktrail.web.dashboard.session import Session, SessionSigner
from clicktrail.web.runtime import Runtime

MAX_ROW_ID = 2_147_483_647
"""IDs are 32-bit integer columns: a larger one names nothing (and PostgreSQL would refuse it)."""


class BadForm(Exception):
    """The form came without this session's CSRF token."""


@dataclass(frozen=True, slots=True)
class PageKit:
    runtime: Runtime
    render: Callable[..., Response]
    """render(request, template, session, status=200, **context): a page with the security headers."""
    session_of: Callable[[Request], Session]
    """The signed-in session, or SignInRequired (answered with a redirect to /login)."""
    signer: SessionSigner

    async def form(self, request: Request, session: Session) -> FormData:
        """The posted form once its CSRF token is this session's; raises BadForm otherwise."""
        form = await request.form()
        token = form.get("csrf")
        if not isinstance(token, str) or not self.signer.csrf_ok(session, token):
            raise BadForm
        return form

    def problem(self, request: Request, session: Session, status: int, message: str) -> Response:
        return self.render(request, "problem.html", session, status, message=message)

    def expired_form(self, request: Request, session: Session) -> Response:
        return self.problem(request, session, 403, "The form expired; reload the page and try again.")


def text_of(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def field_errors(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> dict[str, str]:
    """pydantic's errors keyed by dotted field path (`url`, `routing.default.0.weight`), first wins."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        loc = (*prefix, *error["loc"])
        key = ".".join(str(part) for part in loc) or "form"
        errors.setdefault(key, str(error["msg"]).removeprefix("Value error, "))
    return errors


def local_path(value: str | None, fallback: str) -> str:
    """Only a path on this site: never an open redirect."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return fallback
    return value


Context = dict[str, Any]
