"""Answers shaped for a scoped principal (affiliate, advertiser): only its rows, never its hidden
fields. Shared by the API and the dashboard's partner page."""

import dataclasses
from collections.abc import Callable
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from clicktrail.accounts.models import Principal
from clicktrail.accounts.roles import redact
from clicktrail.errors import Forbidden
from clicktrail.reports.request import ReportRequest
from clicktrail.reports.result import ReportResult


def shaped(who: Principal, model: BaseModel) -> Any:
    """The answer for this principal: the model itself, or its JSON without the role's hidden fields."""
    if not who.hidden:
        return model
    return JSONResponse(redact(model.model_dump(mode="json"), who.hidden))


def scoped_page(
    fetch: Callable[[int, int], list[Any]], keep: Callable[[Any], bool], after: int, limit: int
) -> tuple[list[Any], str | None]:
    """A page of the catalog rows `keep` accepts, read in batches (catalogs are small)."""
    kept: list[Any] = []
    while len(kept) < limit:
        batch = fetch(after, 1000)
        kept.extend(item for item in batch if keep(item))
        if len(batch) < 1000:
            return kept[:limit], None
        after = batch[-1].id
    return kept[:limit], str(kept[limit - 1].id)


def scoped_report(who: Principal, request: ReportRequest) -> ReportRequest:
    """The report limited to the principal's rows; refused when it groups, filters or sorts by a field
    the principal may not see (the order of rows would tell it)."""
    if who.scope is None:
        return request
    asked = {request.sort, *request.group_by, *(column for column, _ in request.filters)}
    refused = sorted(asked & who.hidden)
    if refused:
        raise Forbidden(f"the {who.role} role cannot see {', '.join(refused)}")
    return dataclasses.replace(request, within=who.scope)


def report_without(who: Principal, result: ReportResult) -> ReportResult:
    """The result without the principal's hidden columns, in rows and totals."""
    gone = who.hidden
    if not gone:
        return result
    return ReportResult(
        columns=[c for c in result.columns if c not in gone],
        rows=[{k: v for k, v in row.items() if k not in gone} for row in result.rows],
        totals={k: v for k, v in result.totals.items() if k not in gone},
        total_rows=result.total_rows,
    )
