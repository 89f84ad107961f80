"""The `clicktrail` command: serve, migrate, tokens."""

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from datetime import timedelta
from types import FrameType

from pydantic import ValidationError

from clicktrail import __version__
from clicktrail.bootstrap import prepare, reset_admin_token
from clicktrail.catalog.models import CampaignInput, OfferInput, SourceInput
from clicktrail.catalog.routes import load_snapshot
from clicktrail.catalog.service import Catalog
from clicktrail.config import Settings
from clicktrail.errors import ClicktrailError
from clicktrail.reports.costs import cost_updates
from clicktrail.reports.dimensions import DIMENSIONS
from clicktrail.reports.engine import DuckDbReports
from clicktrail.reports.feed import AnalyticsFeed
from clicktrail.reports.render import csv_text, json_rows, text_table
from clicktrail.reports.request import parse_report_request
from clicktrail.reports.segments import SegmentStore
from clicktrail.storage.database import Database
from clicktrail.storage.migrate import upgrade
from clicktrail.types import utc_now

DEMO_OFFER_URL = "https://example.com/offer?click_id={click_id}&sub1={sub1}"


class CommandError(Exception):
    """A problem to tell the user in one line, exit status 2."""


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"CLICKTRAIL_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in exc.errors()
        )
        raise CommandError(f"bad configuration: {problems}") from exc


def _seed_demo(catalog: Catalog) -> None:
    if catalog.list_campaigns(limit=1):
        return
    offer = catalog.create_offer(
        OfferInput(name="Demo offer", url=DEMO_OFFER_URL, revenue="2.00", payout="1.00")
    )
    source = catalog.create_source(SourceInput(name="Demo source"))
    catalog.create_campaign(CampaignInput(name="Demo campaign", source_id=source.id, offer_id=offer.id))


def _exit_after_drain(_sig: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def serve(args: argparse.Namespace) -> None:
    from clicktrail.web import supervisor  # the server stack is imported only to serve

    if "CLICKTRAIL_PUBLIC_URL" not in os.environ:
        os.environ["CLICKTRAIL_PUBLIC_URL"] = f"http://{args.host}:{args.port}"
    settings = _settings()
    database = Database(settings.sqlalchemy_url)
    installation = prepare(settings, database)
    catalog = Catalog(database, utc_now)
    if args.demo:
        _seed_demo(catalog)
    campaigns = catalog.list_campaigns(limit=1)
    database.dispose()

    backend = "SQLite" if settings.is_sqlite else "PostgreSQL"
    print(f"clicktrail {__version__} on {settings.public_url} ({backend})")
    if installation.new_admin_token:
        print(f"admin token (shown once, keep it): {installation.new_admin_token}")
    elif settings.admin_token is None:
        print("admin token: printed on first start; `clicktrail tokens reset` makes a new one")
    if campaigns:
        print(f"tracking link: {settings.public_url}/c/{campaigns[0].key}?sub1=test")
    print(
        f"postback URL:  {settings.public_url}/postback"
        "?click_id={click_id}&event=sale&payout={amount}&txid={order_id}"
    )
    sys.stdout.flush()

    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal to the handler
    # it found: make that an ordinary exit, so a graceful stop reports success.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_after_drain)
    supervisor.run(
        "clicktrail.web.app:create_app_from_environment",
        host=args.host,
        port=args.port,
        workers=args.workers,
        proxy_headers=False,  # X-Forwarded-For is believed only from CLICKTRAIL_TRUSTED_PROXIES
        server_header=False,
        access_log=False,
        timeout_graceful_shutdown=15,
        log_level=args.log_level,
    )


def migrate(_: argparse.Namespace) -> None:
    settings = _settings()
    database = Database(settings.sqlalchemy_url)
    upgrade(database.engine)
    database.dispose()
    print("the database schema is up to date")


def tokens_reset(_: argparse.Namespace) -> None:
    settings = _settings()
    if settings.admin_token is not None:
        raise CommandError("CLICKTRAIL_ADMIN_TOKEN is set: change that variable instead")
    database = Database(settings.sqlalchemy_url)
    prepare(settings, database)
    token = reset_admin_token(database)
    database.dispose()
    print(f"new admin token (shown once, keep it): {token}")


def report(args: argparse.Namespace) -> None:
    """The same report as GET /api/v1/reports, fed up to date first, printed as a table (or CSV/JSON)."""
    settings = _settings()
    database = Database(settings.sqlalchemy_url)
    prepare(settings, database)
    segments = SegmentStore(settings.analytics_path())
    AnalyticsFeed(database, segments, lag=timedelta(seconds=settings.analytics_lag_seconds)).run_once(
        utc_now()
    )
    with database.begin() as connection:
        names = load_snapshot(connection).names

    params = {"group_by": args.group_by, "tz": args.tz, "sort": args.sort, "limit": str(args.limit)}
    params |= {"from": args.start, "to": args.end, "events": args.events, "event": args.event, "by": args.by}
    for item in args.filter:
        name, sep, value = item.partition("=")
        if not sep:
            raise CommandError(f"--filter takes name=value, got {item!r}")
        params[name] = value
    request = parse_report_request({k: v for k, v in params.items() if v}, today=utc_now().date())
    engine = DuckDbReports(segments, memory_limit=settings.report_memory_limit)
    result = engine.run(request, cost_updates(database))
    database.dispose()
    if args.output == "csv":
        sys.stdout.write(csv_text(result, names))
    elif args.output == "json":
        print(json.dumps(json_rows(result, names), indent=2))
    else:
        print(text_table(result, names))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clicktrail", description="Self-hosted S2S postback tracker")
    parser.add_argument("--version", action="version", version=f"clicktrail {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve_cmd = commands.add_parser("serve", help="run the tracker (migrates the database first)")
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--port", type=int, default=8080)
    serve_cmd.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    serve_cmd.add_argument("--demo", action="store_true", help="create a demo campaign when there is none")
    serve_cmd.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve_cmd.set_defaults(run=serve)

    migrate_cmd = commands.add_parser("migrate", help="bring the database schema up to date")
    migrate_cmd.set_defaults(run=migrate)

    report_cmd = commands.add_parser("report", help="print a report (same options as GET /api/v1/reports)")
    report_cmd.add_argument("--group-by", default="campaign", help="up to 4 of: " + ", ".join(DIMENSIONS))
    report_cmd.add_argument(
        "--from", dest="start", help="first day (YYYY-MM-DD, in --tz); default 6 days ago"
    )
    report_cmd.add_argument("--to", dest="end", help="last day, included; default today")
    report_cmd.add_argument("--tz", default="UTC", help="IANA timezone for days, hours and the date range")
    report_cmd.add_argument("--filter", action="append", default=[], help="dimension=value, e.g. country=FR")
    report_cmd.add_argument("--event", help="count only this conversion event")
    report_cmd.add_argument("--events", help="events side by side, e.g. lead,sale")
    report_cmd.add_argument("--by", choices=["click_time", "conversion_time"], default="click_time")
    report_cmd.add_argument(
        "--sort", default="-clicks", help="a dimension or metric; prefix - for descending"
    )
    report_cmd.add_argument("--limit", type=int, default=50)
    report_cmd.add_argument("--output", choices=["table", "csv", "json"], default="table")
    report_cmd.set_defaults(run=report)

    tokens_cmd = commands.add_parser("tokens", help="admin token management")
    tokens_sub = tokens_cmd.add_subparsers(dest="tokens_command", required=True)
    reset_cmd = tokens_sub.add_parser("reset", help="replace the admin token and print the new one")
    reset_cmd.set_defaults(run=tokens_reset)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if getattr(args, "workers", 1) < 1:
        print("clicktrail: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        args.run(args)
    except CommandError as exc:
        print(f"clicktrail: {exc}", file=sys.stderr)
        return 2
    except ClicktrailError as exc:
        print(f"clicktrail: {exc.detail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
