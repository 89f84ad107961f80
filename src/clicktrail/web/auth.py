"""Who is calling the API, whether their role may call this route, and the rate limits on the way in.

A bearer credential is either a user's API key (`ctk_…`) or the admin token; the principal it resolves
to is kept on `request.state` for the handler. Every route names its Rule, which also goes into the
OpenAPI spec (`x-required-role`, `x-allowed-roles`, and a sentence in the description)."""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.routing import APIRoute

from clicktrail.accounts.models import ADMIN_TOKEN, Principal
from clicktrail.accounts.roles import Rule
from clicktrail.accounts.service import KEY_PREFIX
from clicktrail.errors import Forbidden, Unauthorized
from clicktrail.web.client_ip import client_ip
from clicktrail.web.ratelimit import RateLimiter
from clicktrail.web.runtime import Runtime

RULE_KEY = "x-required-role"


class Limits:
    """The process's rate limiters for the API and sign-in."""

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        shared = settings.shared_memory_dir
        self.per_key = RateLimiter(
            "per API key", settings.api_rate_per_minute, settings.api_rate_burst, shared_dir=shared
        )
        self.per_ip = RateLimiter(
            "per address", settings.api_ip_rate_per_minute, settings.api_ip_rate_burst, shared_dir=shared
        )
        self.failures = RateLimiter(
            "refused credentials from this address",
            settings.auth_failures_per_minute,
            settings.auth_failures_burst,
            shared_dir=shared,
        )
        sign_in = settings.sign_in_per_minute, settings.sign_in_burst
        self.sign_in_ip = RateLimiter("sign-in from this address", *sign_in, shared_dir=shared)
        self.sign_in_account = RateLimiter("sign-in to this account", *sign_in, shared_dir=shared)


def request_ip(runtime: Runtime, request: Request) -> str:
    peer = request.client.host if request.client else None
    forwarded = ", ".join(request.headers.getlist("x-forwarded-for")) or None
    return client_ip(peer, forwarded, runtime.settings.trusted_networks) or "unknown"


class ApiAuth:
    def __init__(self, runtime: Runtime, limits: Limits) -> None:
        self._rt = runtime
        self._limits = limits
        self._guards: dict[Rule, Callable[[Request], Principal]] = {}

    def authenticate(self, request: Request) -> Principal:
        """Blocking (reads the database): FastAPI runs it in a worker thread."""
        address = request_ip(self._rt, request)
        self._limits.per_ip.check(address)
        wait = self._limits.failures.peek(address)
        if wait:
            # Too many wrong credentials from here: refuse before checking another one.
            self._limits.failures.check(address)
        scheme, _, credential = (request.headers.get("authorization") or "").partition(" ")
        credential = credential.strip()
        try:
            if scheme.lower() != "bearer" or not credential:
                raise Unauthorized("send Authorization: Bearer <API key or admin token>")
            principal = self._resolve(credential)
        except Unauthorized:
            self._limits.failures.retry_after(address)  # counts the failure
            raise
        self._limits.per_key.check(f"key:{principal.key_id}" if principal.key_id else "admin-token")
        return principal

    def _resolve(self, credential: str) -> Principal:
        if credential.startswith(KEY_PREFIX):
            return self._rt.accounts.principal_for_key(credential)
        if self._rt.tokens.accepts(credential):
            return ADMIN_TOKEN
        raise Unauthorized("this API key or admin token is not valid")

    def guard(self, rule: Rule) -> Callable[[Request], Principal]:
        """The dependency that lets a request through when its principal's role meets `rule`."""
        if rule not in self._guards:

            def check(request: Request) -> Principal:
                principal = self.authenticate(request)
                if not rule.allows(principal.role):
                    raise Forbidden(f"the {principal.role} role may not do this")
                request.state.principal = principal
                return principal

            self._guards[rule] = check
        return self._guards[rule]

    def on(self, rule: Rule) -> dict[str, Any]:
        """Route keyword arguments: the guard, and the rule stated in the OpenAPI spec."""
        return {
            "dependencies": [Depends(self.guard(rule))],
            "openapi_extra": {
                RULE_KEY: rule.required.value,
                "x-allowed-roles": [role.value for role in rule.roles],
                "x-access": rule.describe(),
            },
        }


def current_principal(request: Request) -> Principal:
    principal: Principal = request.state.principal
    return principal


Who = Annotated[Principal, Depends(current_principal)]


def state_rules_in_descriptions(api: FastAPI) -> None:
    """Put each route's rule at the top of its OpenAPI description; refuse to start if one has none."""
    for route in api.routes:
        if not isinstance(route, APIRoute) or not route.include_in_schema:
            continue
        extra = route.openapi_extra or {}
        if RULE_KEY not in extra:
            raise RuntimeError(f"{route.path} {sorted(route.methods or ())} states no required role")
        route.description = f"**Required role:** {extra['x-access']}.\n\n{route.description}".strip()
