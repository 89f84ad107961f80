"""The clicktrail error tree.

    ClicktrailError
    ├── ClientError            the caller sent something we refuse (maps to a 4xx)
    │   ├── ValidationFailed   a field is missing or wrong (422)
    │   │   └── InvalidQuery   a query names an unknown dimension, timezone… (400)
    │   ├── NotFound           the thing named does not exist
    │   ├── Conflict           the thing is busy or in a state that refuses the request
    │   ├── Unauthorized       no or wrong credentials (401)
    │   ├── Forbidden          the credentials are good but their role may not do this (403)
    │   └── RateLimited        too many requests from this key, account or address (429)
    ├── StorageError           the database failed; the request may be retried (maps to 503)
    │   └── ReportsUnavailable the report engine process cannot be reached (reports/remote.py)
    └── ReportFailed           the report engine failed on a report (reports/remote.py; 500)

Domain code raises these; the web layer maps `code` to an HTTP status in one table.
"""

from collections.abc import Mapping


class ClicktrailError(Exception):
    code = "internal_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ClientError(ClicktrailError):
    code = "bad_request"


class ValidationFailed(ClientError):
    code = "validation_error"

    def __init__(self, detail: str, fields: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.fields = dict(fields or {})


class InvalidQuery(ValidationFailed):
    """A query (report parameters, say) names something that does not exist; answered 400."""

    code = "invalid_query"


class NotFound(ClientError):
    code = "not_found"


class Conflict(ClientError):
    code = "conflict"


class Unauthorized(ClientError):
    code = "unauthorized"


class Forbidden(ClientError):
    code = "forbidden"


class RateLimited(ClientError):
    code = "rate_limited"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class StorageError(ClicktrailError):
    code = "storage_unavailable"
