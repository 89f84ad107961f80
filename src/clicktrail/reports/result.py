"""What a report engine answers, apart from any engine: the web layer and the renderers need these
shapes without loading DuckDB (a worker that never answers a report never imports it)."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from clicktrail.reports.costs import CostUpdate
from clicktrail.reports.request import ReportRequest

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReportResult:
    columns: list[str]
    rows: list[Row]
    totals: Row
    total_rows: int


class ReportEngine(Protocol):
    def run(self, request: ReportRequest, updates: Sequence[CostUpdate] = ()) -> ReportResult: ...


class AbandonableEngine(Protocol):
    """An engine that stops a report once `abandoned()` is true (looked at while the report runs),
    raising ReportAbandoned: the report engine process's, whose worker may stop waiting."""

    def run(
        self,
        request: ReportRequest,
        updates: Sequence[CostUpdate] = (),
        *,
        abandoned: Callable[[], bool] | None = None,
    ) -> ReportResult: ...


class ReportAbandoned(Exception):
    """The report was stopped unfinished: the one who asked for it stopped waiting."""
