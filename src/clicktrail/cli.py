"""The `clicktrail` command: serve, feed, report-engine, migrate, tokens, users, keys, report.

`clicktrail serve` runs in every worker process too (multiprocessing starts them by importing this
module), so what only one command needs is imported inside it: DuckDB (the report feed and engine)
costs a process 20 to 45 MB resident, Alembic ~8 MB."""

import argparse
import getpass
import http.client
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from types import FrameType

from pydantic import ValidationError

from clicktrail import __version__, compiled
from clicktrail.accounts.audit import SYSTEM
from clicktrail.accounts.models import KeyInput, UserInput
from clicktrail.accounts.roles import Role
from clicktrail.accounts.service import Accounts
from clicktrail.bootstrap import prepare, reset_admin_token
from clicktrail.catalog.models import CampaignInput, OfferInput, SourceInput
from clicktrail.catalog.routes import load_snapshot
from clicktrail.catalog.service import Catalog
from clicktrail.config import Settings
from clicktrail.errors import ClicktrailError
from clicktrail.reports.costs import cost_updates
from clicktrail.reports.dimensions import DIMENSIONS
from clicktrail.reports.render import csv_text, json_rows, text_table
from clicktrail.reports.request import parse_report_request
from clicktrail.reports.result import AbandonableEngine
from clicktrail.reports.segments import SegmentStore
from clicktrail.storage.database import Database
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


def _migrate_in_a_child(settings: Settings) -> None:
    """Migrate in a forked child, so Alembic and what it imports (~8 MB resident, with pygments and
    rich) never enter this process: with one worker it is the one that serves."""
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()  # before any thread or database connection exists in this process
    if pid == 0:
        code = 1
        try:
            from clicktrail.storage.migrate import upgrade

            database = Database(settings.sqlalchemy_url)
            upgrade(database.engine)
            database.dispose()
            code = 0
        except ClicktrailError as exc:
            print(f"clicktrail: {exc.detail}", file=sys.stderr)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise SystemExit(code)  # the child said why


def serve(args: argparse.Namespace) -> None:
    from clicktrail.web import supervisor  # the server stack is imported only to serve

    if "CLICKTRAIL_PUBLIC_URL" not in os.environ:
        os.environ["CLICKTRAIL_PUBLIC_URL"] = f"http://{args.host}:{args.port}"
    settings = _settings()
    _migrate_in_a_child(settings)
    database = Database(settings.sqlalchemy_url)
    installation = prepare(settings, database, migrate=False)
    catalog = Catalog(database, utc_now)
    if args.demo:
        _seed_demo(catalog)
    campaigns = catalog.list_campaigns(limit=1)
    database.dispose()

    backend = "SQLite" if settings.is_sqlite else "PostgreSQL"
    print(f"clicktrail {__version__} on {settings.public_url} ({backend}; {compiled.state()})")
    if installation.new_admin_token:
        print(f"admin token (shown once, keep it): {installation.new_admin_token}")
    elif settings.admin_token is None:
        print("admin token: printed on first start; `clicktrail tokens reset` makes a new one")
    sys.stdout.flush()  # the token first: shown once, it must not wait for a server that may not start
    links = [f"tracking link: {settings.public_url}/c/{campaigns[0].key}?sub1=test"] if campaigns else []
    links.append(
        f"postback URL:  {settings.public_url}/postback"
        "?click_id={click_id}&event=sale&payout={amount}&txid={order_id}"
    )
    threading.Thread(
        target=_print_once_listening, args=(args.host, args.port, links), name="ready-links", daemon=True
    ).start()

    # The report feed and the report engine run in processes of their own: DuckDB's memory, the
    # feed's batches of CSV and a long report's CPU stay out of the workers.
    parent = ["--parent-pid", str(os.getpid())]
    # On PostgreSQL the feed's CPU is held to its share from here, DuckDB's steps included
    # (supervisor.CpuShare). Not on SQLite: stopped while it held a lock of the database file's
    # shared memory, it would stop the workers' writes too (held there too, one paced run's p99 was 145 ms).
    held = supervisor.CpuShare.possible() and not settings.is_sqlite
    feed = supervisor.Companion(
        "report feed",
        [
            sys.executable,
            "-m",
            "clicktrail.cli",
            "feed",
            *parent,
            *(["--cpu-held-by-parent"] if held else []),
        ],
        cpu_share=settings.analytics_work_share if held else None,
    )
    engine = supervisor.Companion(
        "report engine", [sys.executable, "-m", "clicktrail.cli", "report-engine", *parent]
    )
    # uvicorn drains in-flight requests on SIGTERM/SIGINT, then re-raises the signal to the handler
    # it found: make that an ordinary exit, so a graceful stop reports success.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_after_drain)
    with supervisor.report_engine_address():  # the engine's socket, in the environment of both sides
        supervisor.run(
            "clicktrail.web.app:create_app_from_environment",
            host=args.host,
            port=args.port,
            workers=args.workers or auto_workers(),
            companions=[feed, engine],
            proxy_headers=False,  # X-Forwarded-For is believed only from CLICKTRAIL_TRUSTED_PROXIES
            server_header=False,
            access_log=False,
            timeout_graceful_shutdown=15,
            log_level=args.log_level,
        )


_READY_WAIT_SECONDS = 60.0


def _print_once_listening(host: str, port: int, lines: Sequence[str]) -> None:
    """Print `lines` once the server answers /health on `host`:`port`, so that a link printed is a
    link that answers: the workers start listening a second or two after the command prints its
    token, and a script that followed the link at once was refused. Prints nothing if the server
    never answers (its own error says why)."""
    local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    deadline = time.monotonic() + _READY_WAIT_SECONDS
    while time.monotonic() < deadline:
        # http.client, not urllib: no HTTP_PROXY setting may send this to a proxy.
        connection = http.client.HTTPConnection(local, port, timeout=1)
        try:
            connection.request("GET", "/health")
            if connection.getresponse().status == 200:
                print("\n".join(lines), flush=True)
                return
        except (OSError, http.client.HTTPException):
            pass  # not listening yet
        finally:
            connection.close()
        time.sleep(0.05)


def feed(args: argparse.Namespace) -> None:
    """Copy new clicks and conversions into the report segments every few seconds until SIGTERM or
    SIGINT (or until the --parent-pid process is gone). `clicktrail serve` starts one; a second one
    on the same analytics folder waits its turn (a file lock), so running one more is harmless."""
    from clicktrail.reports.feed import AnalyticsFeed, WorkShare

    settings = _settings()
    # The feed catches up in bursts (after a spike, hundreds of thousands of rows), and on a machine
    # with as many cores as workers its CPU was the workers' latency: with the feed idle, PostgreSQL's
    # paced postbacks had a p99 of 11 ms instead of 28-41 (BENCHMARKS.md, "Session of 2026-12-06
    # (08:47 UTC)"). Reports can wait a few seconds more; a redirect cannot.
    stop, keep_going = _as_companion(args, settings)
    database = Database(settings.sqlalchemy_url)
    try:
        AnalyticsFeed(
            database,
            SegmentStore(settings.analytics_path()),
            lag=timedelta(seconds=settings.analytics_lag_seconds),
            # Asked to stop, it finishes the window in hand without resting: serve kills it after 10 s.
            # Under serve (--cpu-held-by-parent) serve holds it to its share instead, DuckDB included.
            share=WorkShare(
                1.0 if args.cpu_held_by_parent else settings.analytics_work_share, sleep=stop.wait
            ),
        ).run_until(
            stop,
            interval=settings.analytics_interval_seconds,
            clock=utc_now,
            keep_going=keep_going,
        )
    finally:
        database.dispose()


def _as_companion(args: argparse.Namespace, settings: Settings) -> tuple[threading.Event, Callable[[], bool]]:
    """What the report feed and the report engine share as serve's companions: a lower priority than
    the workers, an event SIGTERM and SIGINT set, and whether --parent-pid is still their parent."""
    os.nice(settings.analytics_niceness)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _sig, _frame: stop.set())
    parent = args.parent_pid
    return stop, lambda: parent is None or os.getppid() == parent


def report_engine(args: argparse.Namespace) -> None:
    """Answer the workers' reports (reports/remote.py) until SIGTERM or SIGINT, or until the
    --parent-pid process is gone. Only `clicktrail serve` starts one: it gives the socket's address
    in the environment."""
    from clicktrail.reports import remote

    address = os.environ.get(remote.ADDRESS_VARIABLE)
    if not address:
        raise CommandError(f"{remote.ADDRESS_VARIABLE} is not set: serve starts the report engine")
    settings = _settings()
    stop, keep_going = _as_companion(args, settings)  # as the feed: a redirect cannot wait, a report can

    def make_engine() -> AbandonableEngine:
        from clicktrail.reports.engine import DuckDbReports

        segments = SegmentStore(settings.analytics_path())
        return DuckDbReports(segments, memory_limit=settings.report_memory_limit)

    remote.ReportServer(address, make_engine).serve_until(stop, keep_going)


def migrate(_: argparse.Namespace) -> None:
    from clicktrail.storage.migrate import upgrade  # Alembic: only to migrate

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
    Accounts(database, utc_now).close_admin_token_sessions()
    database.dispose()
    print(f"new admin token (shown once, keep it): {token}")


def _accounts() -> tuple[Accounts, Database]:
    settings = _settings()
    database = Database(settings.sqlalchemy_url)
    prepare(settings, database)
    return Accounts(database, utc_now), database


def _invalid(exc: ValidationError) -> CommandError:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {str(e['msg']).removeprefix('Value error, ')}"
        for e in exc.errors()
    )
    return CommandError(problems)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise CommandError("no terminal to ask for the password: pipe it in with --password-stdin")
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise CommandError("the two passwords differ")
    return first


def _bounded(name: str, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not 1 <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{name} is a whole number from 1 to {high}")
        return int(text)

    return parse


_row_id = _bounded("an ID", 2_147_483_647)


def users_add(args: argparse.Namespace) -> None:
    password = _read_password(args.password_stdin)
    offer_ids = [part.strip() for part in (args.offer_ids or "").split(",") if part.strip()]
    try:
        data = UserInput.model_validate(
            {"username": args.username, "password": password, "role": args.role,
             "source_id": args.source_id, "offer_ids": offer_ids}
        )  # fmt: skip
    except ValidationError as exc:
        raise _invalid(exc) from exc
    accounts, database = _accounts()
    try:
        user = accounts.create_user(data, SYSTEM)
    finally:
        database.dispose()
    print(f"user {user.id} {user.username} ({user.role}) created")


def users_list(_: argparse.Namespace) -> None:
    accounts, database = _accounts()
    users, after = [], 0
    while batch := accounts.list_users(after, 1000):
        users.extend(batch)
        after = batch[-1].id
    database.dispose()
    if not users:
        print("no users yet: clicktrail users add EMAIL --role ROLE")
        return
    rows = [("id", "username", "role", "bound to", "state")]
    for user in users:
        bound = (
            f"source {user.source_id}" if user.source_id is not None
            else f"offers {', '.join(map(str, user.offer_ids))}" if user.offer_ids else ""
        )  # fmt: skip
        rows.append(
            (str(user.id), user.username, user.role, bound, "disabled" if user.disabled else "active")
        )
    widths = [max(len(row[n]) for row in rows) for n in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def users_disable(args: argparse.Namespace) -> None:
    accounts, database = _accounts()
    try:
        user = accounts.disable_user(args.username, SYSTEM)
    finally:
        database.dispose()
    print(f"user {user.username} disabled: its sessions are closed and its API keys refused")


def keys_create(args: argparse.Namespace) -> None:
    accounts, database = _accounts()
    try:
        user = accounts.find_user(args.username)
        expires = datetime.now(UTC) + timedelta(days=args.expires_days) if args.expires_days else None
        try:
            data = KeyInput(user_id=user.id, name=args.name, expires_at=expires)
        except ValidationError as exc:
            raise _invalid(exc) from exc
        key, secret = accounts.create_key(data, SYSTEM)
    finally:
        database.dispose()
    print(f"API key {key.id} for {user.username} (shown once, keep it): {secret}")


def keys_revoke(args: argparse.Namespace) -> None:
    accounts, database = _accounts()
    try:
        key = accounts.revoke_key(args.key_id, SYSTEM)
    finally:
        database.dispose()
    print(f"API key {key.id} ({key.prefix}…) revoked")


def report(args: argparse.Namespace) -> None:
    """The same report as GET /api/v1/reports, fed up to date first, printed as a table (or CSV/JSON)."""
    from clicktrail.reports.engine import DuckDbReports
    from clicktrail.reports.feed import AnalyticsFeed

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
    serve_cmd.add_argument(
        "--workers",
        type=_worker_count,
        default=None,
        help=f"server processes, or auto (the default): one per CPU, at most {MOST_AUTO_WORKERS}",
    )
    serve_cmd.add_argument("--demo", action="store_true", help="create a demo campaign when there is none")
    serve_cmd.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    serve_cmd.set_defaults(run=serve)

    feed_cmd = commands.add_parser(
        "feed", help="run the report feed alone until stopped (serve starts one beside its workers)"
    )
    feed_cmd.add_argument(
        "--parent-pid", type=int, help="stop when this process is gone (serve passes its own)"
    )
    feed_cmd.add_argument(
        "--cpu-held-by-parent",
        action="store_true",
        help="do not rest to keep to CLICKTRAIL_ANALYTICS_WORK_SHARE: the parent (serve) holds the CPU to it",
    )
    feed_cmd.set_defaults(run=feed)

    engine_cmd = commands.add_parser(
        "report-engine", help="answer the workers' reports (serve starts one beside its workers)"
    )
    engine_cmd.add_argument(
        "--parent-pid", type=int, help="stop when this process is gone (serve passes its own)"
    )
    engine_cmd.set_defaults(run=report_engine)

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

    users_cmd = commands.add_parser("users", help="user accounts (docs/accounts.md)")
    users_sub = users_cmd.add_subparsers(dest="users_command", required=True)
    add_cmd = users_sub.add_parser("add", help="create a user; asks for the password")
    add_cmd.add_argument("username", help="an email address or a name")
    add_cmd.add_argument("--role", required=True, choices=[role.value for role in Role])
    add_cmd.add_argument("--source-id", type=_row_id, help="an affiliate's source")
    add_cmd.add_argument("--offer-ids", help="an advertiser's offers, comma-separated")
    add_cmd.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    add_cmd.set_defaults(run=users_add)
    list_cmd = users_sub.add_parser("list", help="every user with its role and state")
    list_cmd.set_defaults(run=users_list)
    disable_cmd = users_sub.add_parser("disable", help="close a user's sessions and refuse its keys")
    disable_cmd.add_argument("username")
    disable_cmd.set_defaults(run=users_disable)

    keys_cmd = commands.add_parser("keys", help="API keys (docs/accounts.md)")
    keys_sub = keys_cmd.add_subparsers(dest="keys_command", required=True)
    create_cmd = keys_sub.add_parser("create", help="make an API key for a user and print it once")
    create_cmd.add_argument("username")
    create_cmd.add_argument("--name", default="cli", help="what the key is for")
    create_cmd.add_argument(
        "--expires-days",
        type=_bounded("--expires-days", 36_500),
        help="the key stops working after this many days",
    )
    create_cmd.set_defaults(run=keys_create)
    revoke_cmd = keys_sub.add_parser("revoke", help="refuse an API key from now on")
    revoke_cmd.add_argument("key_id", type=_row_id)
    revoke_cmd.set_defaults(run=keys_revoke)
    return parser


MOST_AUTO_WORKERS = 4
"""Measured only on 2 cores (BENCHMARKS.md); past a few, SQLite's workers mostly wait their write
turn, and each costs ~140 MB. Ask for more with --workers N."""


def auto_workers() -> int:
    """One worker per CPU this process may run on: on the 2-core benchmark machine two workers took
    20.5% of nginx's rate against one's 16.0%, and still met the postback targets (BENCHMARKS.md).
    The unique-click memory and the rate limits are shared, so the count changes no figure."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MOST_AUTO_WORKERS))


def _worker_count(text: str) -> int | None:
    if text == "auto":
        return None
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or auto, not {text!r}") from None
    if count < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
