"""Postbacks are decided in batches (one transaction each): within a batch every postback is decided
in arrival order against what came before it, exactly as if they had arrived one by one."""

import asyncio
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import sqlalchemy

from clicktrail.catalog.models import CampaignInput, OfferInput, SourceInput, SourcePatch
from clicktrail.config import Settings
from clicktrail.conversions.decision import Decision
from clicktrail.conversions.intake import PostbackIntake, RawPostback
from clicktrail.errors import StorageError
from clicktrail.storage import delivery_store, event_store
from clicktrail.storage.database import Database
from clicktrail.types import utc_now
from clicktrail.web.runtime import Runtime
from tests.delivery_support import wait_until
from tests.stored import stored_clicks
from tests.support import SECRET_KEY, Tracker, fresh_database


@pytest.fixture
def runtime(backend: str, tmp_path: Path) -> Iterator[Runtime]:
    with fresh_database(backend, tmp_path) as url:
        settings = Settings(database_url=url, secret_key=SECRET_KEY, analytics_dir=tmp_path / "analytics")
        runtime = Runtime(settings, migrate=True)
        offer = runtime.catalog.create_offer(
            OfferInput(name="Offer", url="https://m.example/?c={click_id}", revenue="10", payout="4")
        )
        source = runtime.catalog.create_source(
            SourceInput(
                name="Net",
                postback_url="https://net.example/pb?c={external_id}&s={status}",
                postback_statuses=["approved", "rejected"],
            )
        )
        runtime.catalog.create_campaign(CampaignInput(name="C", source_id=source.id, offer_id=offer.id))
        runtime.cache.reload()
        yield runtime
        runtime.database.dispose()


def _click(runtime: Runtime) -> str:
    [click_id] = stored_clicks(runtime, runtime.catalog.list_campaigns(limit=1)[0])
    return click_id


def _postback(**params: str) -> RawPostback:
    return RawPostback("GET", params, "203.0.113.9")


def _status_history(runtime: Runtime, conversion_id: str | None) -> list[tuple[str | None, str]]:
    """A conversion's status changes, oldest first: (old status, new status)."""
    with runtime.database.begin() as connection:
        rows = connection.execute(
            sqlalchemy.text(
                "SELECT old_status, new_status FROM conversion_status_history"
                " WHERE conversion_id = :id ORDER BY changed_at, old_status NULLS FIRST"
            ),
            {"id": conversion_id},
        ).all()
    return [(row[0], row[1]) for row in rows]


def test_one_batch_is_decided_in_arrival_order(runtime: Runtime) -> None:
    click_id, other = _click(runtime), _click(runtime)
    outcomes = runtime.postbacks.handle_batch(
        [
            _postback(click_id=click_id, event="sale", txid="t1"),
            _postback(click_id=click_id, event="sale", txid="t1"),
            _postback(click_id=click_id, event="sale", txid="t1", status="rejected"),
            _postback(click_id=click_id, event="sale", txid="t2", payout="3.50"),
            _postback(click_id="not-an-id", event="sale", txid="t3"),
            _postback(click_id=other[:-1] + ("0" if other[-1] != "0" else "1"), txid="t4"),
            _postback(click_id=other, event="lead", txid="t5"),
            _postback(click_id=click_id, event="sale", txid="t1", status="approved"),
        ]
    )

    decisions = [outcome.decision for outcome in outcomes]
    assert decisions == [
        Decision.ACCEPTED,
        Decision.DUPLICATE,
        Decision.UPDATED,
        Decision.ACCEPTED,
        Decision.MALFORMED,
        Decision.MALFORMED,
        Decision.ACCEPTED,
        Decision.UPDATED,
    ]
    first = outcomes[0].conversion_id
    assert first is not None
    assert outcomes[1].conversion_id == first
    assert outcomes[2].conversion_id == first
    assert outcomes[7].conversion_id == first

    with runtime.database.begin() as connection:
        stored = {row.txid: row for row in event_store.conversions_of_clicks(connection, [click_id, other])}
        history = event_store.status_history(connection, [first])
        log = event_store.list_postbacks(
            connection, click_id=None, txid=None, decision=None, start=None, end=None, before=None, limit=50
        )
    assert sorted(stored) == ["t1", "t2", "t5"]
    assert stored["t1"].status == "approved"
    assert stored["t2"].revenue == Decimal("3.50")
    assert [(row.old_status, row.new_status) for row in history] == [
        (None, "approved"),
        ("approved", "rejected"),
        ("rejected", "approved"),
    ]
    assert sorted(entry.decision for entry in log) == sorted(decision.value for decision in decisions)


def test_a_refused_postback_with_control_characters_is_logged_and_its_batch_stored(runtime: Runtime) -> None:
    """`%00` decodes to NUL, which PostgreSQL refuses in text: logged as it came, such a value failed
    the whole batch, and every postback in it was answered 503."""
    click_id = _click(runtime)
    outcomes = runtime.postbacks.handle_batch(
        [
            _postback(click_id=f"{click_id}\x00", event="sa\x00le", txid="t\x00\r\n1"),
            _postback(click_id="\x00", event="sale", txid="t2"),
            _postback(click_id=click_id, event="sale", txid="t3"),
        ]
    )

    assert [outcome.decision for outcome in outcomes] == [
        Decision.MALFORMED,
        Decision.MALFORMED,
        Decision.ACCEPTED,
    ]
    with runtime.database.begin() as connection:
        log = event_store.list_postbacks(
            connection,
            click_id=None,
            txid=None,
            decision="malformed",
            start=None,
            end=None,
            before=None,
            limit=5,
        )
    assert {(entry.click_id, entry.event, entry.txid) for entry in log} == {
        (click_id, "sale", "t1"),  # as it came, without its control characters
        (None, "sale", "t2"),
    }
    assert all("%00" in entry.query for entry in log)


def test_a_batch_continues_a_conversion_stored_by_an_earlier_batch(runtime: Runtime) -> None:
    click_id = _click(runtime)
    [accepted] = runtime.postbacks.handle_batch([_postback(click_id=click_id, txid="o-1")])
    later = runtime.postbacks.handle_batch(
        [
            _postback(click_id=click_id, txid="o-1"),
            _postback(click_id=click_id, txid="o-1", status="chargeback"),
        ]
    )
    assert [outcome.decision for outcome in later] == [Decision.DUPLICATE, Decision.UPDATED]
    assert {outcome.conversion_id for outcome in later} == {accepted.conversion_id}


def test_several_status_changes_of_stored_conversions_in_one_batch_end_at_the_last(runtime: Runtime) -> None:
    """On PostgreSQL a batch's status changes go in one statement: each conversion must end at its
    last status, with every change in its history."""
    first, second = _click(runtime), _click(runtime)
    stored = runtime.postbacks.handle_batch(
        [_postback(click_id=first, txid="o-1"), _postback(click_id=second, txid="o-2", status="pending")]
    )
    later = runtime.postbacks.handle_batch(
        [
            _postback(click_id=first, txid="o-1", status="pending"),
            _postback(click_id=second, txid="o-2", status="approved"),
            _postback(click_id=first, txid="o-1", status="rejected"),
            _postback(click_id=first, txid="o-1", status="chargeback"),
        ]
    )

    assert {outcome.decision for outcome in later} == {Decision.UPDATED}
    ids = [outcome.conversion_id for outcome in stored]
    assert all(conversion_id is not None for conversion_id in ids)
    with runtime.database.begin() as connection:
        now = {row.txid: row.status for row in event_store.conversions_of_clicks(connection, [first, second])}
        history = event_store.status_history(connection, [str(conversion_id) for conversion_id in ids])
    assert now == {"o-1": "chargeback", "o-2": "approved"}
    assert [(row.old_status, row.new_status) for row in history if row.conversion_id == ids[0]] == [
        (None, "approved"),
        ("approved", "pending"),
        ("pending", "rejected"),
        ("rejected", "chargeback"),
    ]


def test_every_queued_status_gets_its_outbound_postback(runtime: Runtime) -> None:
    click_id = _click(runtime)
    runtime.postbacks.handle_batch(
        [
            _postback(click_id=click_id, txid="d-1"),
            _postback(click_id=click_id, txid="d-1"),
            _postback(click_id=click_id, txid="d-1", status="rejected"),
        ]
    )
    with runtime.database.begin() as connection:
        jobs = delivery_store.list_deliveries(
            connection, click_id=click_id, source_id=None, status=None, before=None, limit=10
        )
    assert sorted(job.conversion_status for job in jobs) == ["approved", "rejected"]


def test_a_batch_in_which_no_postback_names_a_well_formed_click_is_decided_and_logged(
    runtime: Runtime,
) -> None:
    """Nothing to look up but the catalog's version: every postback is refused as malformed (a
    400 for the merchant), none as a database failure."""
    outcomes = runtime.postbacks.handle_batch([_postback(click_id="x"), _postback(txid="no-click")])

    assert [outcome.decision for outcome in outcomes] == [Decision.MALFORMED, Decision.MALFORMED]
    with runtime.database.begin() as connection:
        log = event_store.list_postbacks(
            connection, click_id=None, txid=None, decision=None, start=None, end=None, before=None, limit=10
        )
    assert [entry.decision for entry in log] == ["malformed", "malformed"]


def _source_without_a_postback_url(runtime: Runtime) -> tuple[int, str]:
    """A second source, wanting no outbound postbacks, its campaign and a click on it; the worker's
    snapshot reloaded after."""
    offer = runtime.catalog.list_offers(limit=1)[0]
    source = runtime.catalog.create_source(SourceInput(name="No postbacks"))
    campaign = runtime.catalog.create_campaign(
        CampaignInput(name="C2", source_id=source.id, offer_id=offer.id)
    )
    runtime.cache.reload()
    [click_id] = stored_clicks(runtime, campaign)
    return source.id, click_id


def test_a_source_given_its_postback_url_on_another_worker_a_moment_ago_is_sent_the_conversion(
    runtime: Runtime,
) -> None:
    """This worker's snapshot does not know the URL yet (its reload comes a moment later): the batch
    sees the catalog changed since and asks the database, so the conversion is not left unsent."""
    source_id, click_id = _source_without_a_postback_url(runtime)
    runtime.catalog.patch_source(  # as through another worker's API: this snapshot is not reloaded
        source_id, SourcePatch(postback_url="https://net2.example/pb?c={click_id}")
    )

    [outcome] = runtime.postbacks.handle_batch([_postback(click_id=click_id, txid="late-url")])

    assert outcome.decision is Decision.ACCEPTED
    with runtime.database.begin() as connection:
        jobs = delivery_store.list_deliveries(
            connection, click_id=click_id, source_id=source_id, status=None, before=None, limit=10
        )
    assert [job.conversion_id for job in jobs] == [outcome.conversion_id]


def test_a_batch_for_a_source_without_a_postback_url_does_not_ask_the_database_for_it(
    runtime: Runtime,
) -> None:
    """With the catalog as the snapshot knows it, the snapshot's word that a source wants no
    postbacks is good: asking the database again cost every such batch one more round trip."""
    source_id, click_id = _source_without_a_postback_url(runtime)
    statements: list[str] = []

    def remember(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sqlalchemy.event.listen(runtime.database.engine, "before_cursor_execute", remember)
    try:
        [outcome] = runtime.postbacks.handle_batch([_postback(click_id=click_id, txid="no-url")])
    finally:
        sqlalchemy.event.remove(runtime.database.engine, "before_cursor_execute", remember)

    assert outcome.decision is Decision.ACCEPTED
    assert not [statement for statement in statements if "FROM sources" in statement]
    with runtime.database.begin() as connection:
        jobs = delivery_store.list_deliveries(
            connection, click_id=click_id, source_id=source_id, status=None, before=None, limit=10
        )
    assert jobs == []


def test_a_staged_batch_is_stored_and_announced_only_when_its_commit_runs(runtime: Runtime) -> None:
    """On SQLite the writer decides a batch on the event loop and commits it in a thread."""
    click_id = _click(runtime)
    wake_ups: list[str] = []
    intake = PostbackIntake(
        runtime.database,
        runtime.codec,
        lambda: runtime.cache.snapshot,
        utc_now,
        lambda sources: wake_ups.append(f"rung for {sorted(sources)}"),
    )
    staged = intake.prepare_batch(
        [_postback(click_id=click_id, txid="s-1"), _postback(click_id=click_id, txid="s-1")]
    ).write()
    outcomes, commit = staged.results, staged.finish
    assert commit is not None
    assert [outcome.decision for outcome in outcomes] == [Decision.ACCEPTED, Decision.DUPLICATE]
    with runtime.database.begin() as connection:
        assert event_store.conversions_of_clicks(connection, [click_id]) == []
    assert wake_ups == []

    commit()

    with runtime.database.begin() as connection:
        [stored] = event_store.conversions_of_clicks(connection, [click_id])
    assert stored.conversion_id == outcomes[0].conversion_id
    assert wake_ups == [f"rung for {[runtime.catalog.list_campaigns(limit=1)[0].source_id]}"]


def test_many_identical_postbacks_at_once_make_one_conversion(tracker: Tracker) -> None:
    click_id = tracker.click(tracker.campaign()["key"])
    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(
            pool.map(lambda _: tracker.postback(click_id=click_id, event="sale", txid="burst"), range(48))
        )
    results = [answer.json()["result"] for answer in answers]
    assert results.count("accepted") == 1
    assert results.count("duplicate") == 47
    assert len({answer.json()["conversion_id"] for answer in answers}) == 1
    conversions = tracker.api("GET", "/conversions", params={"click_id": click_id}).json()["items"]
    assert len(conversions) == 1


def test_a_postback_waiting_for_a_locked_conversion_does_not_hold_up_the_workers_clicks(
    tracker: Tracker, backend: str
) -> None:
    """On PostgreSQL a batch of postbacks waits for the database without stopping its worker: while
    one waits for a conversion another transaction holds (another worker's batch, an operator's
    edit), the same worker (the test server has one) goes on redirecting clicks, and the postback
    is decided once the conversion is free."""
    if backend == "sqlite":
        pytest.skip("SQLite's writers take turns (storage/write_turn.py): no row waits for another")
    key = tracker.campaign()["key"]
    click_id = tracker.click(key)
    assert tracker.postback(click_id=click_id, event="sale", txid="t1", status="pending").status_code == 200

    with (
        psycopg.connect(tracker.server.database_url) as holder,
        httpx.Client(base_url=tracker.server.base_url, timeout=30) as merchant,
        ThreadPoolExecutor(1) as pool,
    ):
        holder.execute("SELECT 1 FROM conversions WHERE click_id = %s FOR UPDATE", (click_id,))
        approval = pool.submit(
            merchant.get, "/postback", params={"click_id": click_id, "event": "sale", "txid": "t1",
                                               "status": "approved"}
        )  # fmt: skip
        wait_until(
            lambda: (
                holder.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'"
                ).fetchone()
                == (1,)
            ),
            what="the postback's batch to wait for the locked conversion",
        )
        clicks = [tracker.click(key) for _ in range(5)]  # each within the client's 10 s, or an error
        assert not approval.done()
        holder.rollback()
        answer = approval.result(timeout=30)

    assert len(set(clicks)) == 5
    assert answer.status_code == 200
    assert answer.json()["result"] == "updated"


def test_a_conversion_another_process_stored_meanwhile_is_a_duplicate_not_an_error(
    runtime: Runtime, backend: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two servers on one PostgreSQL database decide the same postback at once: the one that commits
    second finds the conversion's key taken when its batch is written (on PostgreSQL the batch's
    writes are pipelined, so the error comes at the end of the batch, not at its statement), and
    decides its batch again, in one more transaction (not one per postback: each is a commit while the
    server waits): that postback is a duplicate of the other's conversion, and the rest of its batch
    is stored as decided."""
    if backend == "sqlite":
        pytest.skip(
            "two servers on PostgreSQL; on SQLite a batch decided before its writer's turn meets the same"
            " race (the prepare_batch tests below)"
        )
    click_id, others = _click(runtime), [_click(runtime) for _ in range(3)]
    other_server = Database(runtime.settings.sqlalchemy_url)
    elsewhere = PostbackIntake(other_server, runtime.codec, lambda: runtime.cache.snapshot, utc_now)
    read = event_store.postback_batch_reads
    raced: list[Decision] = []
    first_read = [True]

    def read_then_let_the_other_server_commit(*args: object, **kwargs: object) -> object:
        found = read(*args, **kwargs)  # type: ignore[arg-type]
        if first_read.pop() if first_read else False:  # the other server reads through here too
            raced.append(elsewhere.handle(_postback(click_id=click_id, event="sale", txid="race")).decision)
        return found

    monkeypatch.setattr(event_store, "postback_batch_reads", read_then_let_the_other_server_commit)
    ours = threading.get_ident()
    transactions: list[object] = []

    def count_ours(connection: object) -> None:
        if threading.get_ident() == ours:
            transactions.append(connection)

    sqlalchemy.event.listen(runtime.database.engine, "begin", count_ours)
    try:
        with caplog.at_level(logging.WARNING):
            outcomes = runtime.postbacks.handle_batch(
                [_postback(click_id=click_id, event="sale", txid="race")]
                + [_postback(click_id=other, event="sale", txid="calm") for other in others]
            )
    finally:
        sqlalchemy.event.remove(runtime.database.engine, "begin", count_ours)

    other_server.dispose()
    assert caplog.records == []  # an expected race, handled: nothing for the operator to read
    assert raced == [Decision.ACCEPTED]
    assert [outcome.decision for outcome in outcomes] == [Decision.DUPLICATE] + [Decision.ACCEPTED] * 3
    assert len(transactions) == 2  # the batch that lost the race, and the batch decided again
    with runtime.database.begin() as connection:
        stored = event_store.conversions_of_clicks(connection, [click_id, *others])
    assert sorted(row.txid for row in stored) == ["calm"] * 3 + ["race"]
    assert outcomes[0].conversion_id == next(row.conversion_id for row in stored if row.txid == "race")


def test_a_status_another_process_changed_meanwhile_is_decided_from_its_new_value(
    runtime: Runtime, backend: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Two servers on one PostgreSQL database get the same approval of a pending conversion at once
    (a merchant retrying), and a batch reads conversions without locking them: the server that
    writes second finds the status changed since its read, and decides its batch again from what
    the other stored. Its approval is a duplicate: one status change, one history row, one outbound
    postback, not two; the rest of its batch is stored as decided."""
    if backend == "sqlite":
        pytest.skip(
            "two servers on PostgreSQL; on SQLite a batch decided before its writer's turn meets the same"
            " race (the prepare_batch tests below)"
        )
    click_id, other = _click(runtime), _click(runtime)
    pending = runtime.postbacks.handle(
        _postback(click_id=click_id, event="sale", txid="t1", status="pending")
    )
    assert pending.decision == Decision.ACCEPTED
    # Were the read to lock again, the other server would wait for this one forever: fail instead.
    impatient = sqlalchemy.make_url(runtime.settings.sqlalchemy_url).update_query_dict(
        {"options": "-c lock_timeout=5000"}
    )
    other_server = Database(impatient.render_as_string(hide_password=False))
    elsewhere = PostbackIntake(other_server, runtime.codec, lambda: runtime.cache.snapshot, utc_now)
    read = event_store.postback_batch_reads
    raced: list[Decision] = []
    first_read = [True]
    approval = _postback(click_id=click_id, event="sale", txid="t1", status="approved")

    def read_then_let_the_other_server_commit(*args: object, **kwargs: object) -> object:
        found = read(*args, **kwargs)  # type: ignore[arg-type]
        if first_read.pop() if first_read else False:  # the other server reads through here too
            raced.append(elsewhere.handle(approval).decision)
        return found

    monkeypatch.setattr(event_store, "postback_batch_reads", read_then_let_the_other_server_commit)
    with caplog.at_level(logging.WARNING):
        outcomes = runtime.postbacks.handle_batch(
            [approval, _postback(click_id=other, event="sale", txid="calm", status="approved")]
        )

    other_server.dispose()
    assert caplog.records == []  # an expected race, handled: nothing for the operator to read
    assert raced == [Decision.UPDATED]
    assert [outcome.decision for outcome in outcomes] == [Decision.DUPLICATE, Decision.ACCEPTED]
    assert outcomes[0].conversion_id == pending.conversion_id
    with runtime.database.begin() as connection:
        [conversion] = event_store.conversions_of_clicks(connection, [click_id])
        outbound = (
            connection.execute(
                sqlalchemy.text("SELECT conversion_status FROM deliveries WHERE conversion_id = :id"),
                {"id": pending.conversion_id},
            )
            .scalars()
            .all()
        )
    assert conversion.status == "approved"
    history = _status_history(runtime, pending.conversion_id)
    assert history == [(None, "pending"), ("pending", "approved")]
    assert outbound == ["approved"]  # the source asked for approved and rejected only


def test_a_batch_whose_database_connection_dies_mid_batch_fails_whole_and_the_next_one_is_stored(
    runtime: Runtime, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection is cut between the batch's reads and its writes (which PostgreSQL receives in
    one pipeline): the batch fails as 'the database is unavailable' (the postbacks' senders get a 503
    and retry), stores nothing, and the next batch gets a fresh connection and is stored."""
    if backend == "sqlite":
        pytest.skip("an SQLite file has no connection to lose")
    click_id = _click(runtime)
    admin = Database(runtime.settings.sqlalchemy_url)
    read = event_store.postback_batch_reads
    cut = [True]

    def read_then_lose_the_connection(connection: Any, *args: Any) -> Any:
        found = read(connection, *args)
        if cut.pop() if cut else False:
            pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
            with admin.begin() as other:
                other.exec_driver_sql("SELECT pg_terminate_backend(%s)", (pid,))
        return found

    monkeypatch.setattr(event_store, "postback_batch_reads", read_then_lose_the_connection)
    with pytest.raises(StorageError, match="unavailable"):
        runtime.postbacks.handle_batch([_postback(click_id=click_id, event="sale", txid="cut")])
    admin.dispose()
    with runtime.database.begin() as connection:
        assert event_store.conversions_of_clicks(connection, [click_id]) == []

    [outcome] = runtime.postbacks.handle_batch([_postback(click_id=click_id, event="sale", txid="cut")])
    assert outcome.decision == Decision.ACCEPTED


def _stored_of(runtime: Runtime, *click_ids: str) -> list[tuple[str, str]]:
    with runtime.database.begin() as connection:
        rows = event_store.conversions_of_clicks(connection, list(click_ids))
    return sorted((row.txid, row.status) for row in rows)


def test_a_batch_decided_before_its_writers_turn_is_written_and_committed_in_it(runtime: Runtime) -> None:
    """How a worker's batch runs on SQLite (storage/batch.py, `prepare`): read and decided first, then
    written, and stored only once its commit runs."""
    click_id = _click(runtime)
    prepared = runtime.postbacks.prepare_batch(
        [
            _postback(click_id=click_id, event="sale", txid="t1", status="pending"),
            _postback(click_id=click_id, event="sale", txid="t1", status="approved"),
        ]
    )
    staged = prepared.write()
    assert [outcome.decision for outcome in staged.results] == [Decision.ACCEPTED, Decision.UPDATED]
    assert _stored_of(runtime, click_id) == []  # not committed yet
    assert staged.finish is not None
    staged.finish()
    assert _stored_of(runtime, click_id) == [("t1", "approved")]


def test_a_conversion_another_worker_stored_after_the_batch_was_decided_is_a_duplicate_not_two(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """The same postback reaches two workers at once (a merchant retrying): one worker's batch is
    decided before its turn, the other stores the conversion meanwhile. The first batch's write
    finds the conversion's key taken, and the batch is decided again: that postback is a duplicate
    of the other's conversion, the rest of its batch stored as decided, nothing logged as an error."""
    click_id, other = _click(runtime), _click(runtime)
    other_worker = Database(runtime.settings.sqlalchemy_url)
    elsewhere = PostbackIntake(other_worker, runtime.codec, lambda: runtime.cache.snapshot, utc_now)
    with caplog.at_level(logging.WARNING):
        prepared = runtime.postbacks.prepare_batch(
            [
                _postback(click_id=click_id, event="sale", txid="race"),
                _postback(click_id=other, event="sale", txid="calm"),
            ]
        )
        theirs = elsewhere.handle(_postback(click_id=click_id, event="sale", txid="race"))
        staged = prepared.write()
        if staged.finish is not None:
            staged.finish()
    other_worker.dispose()
    assert caplog.records == []
    assert theirs.decision == Decision.ACCEPTED
    assert [outcome.decision for outcome in staged.results] == [Decision.DUPLICATE, Decision.ACCEPTED]
    assert staged.results[0].conversion_id == theirs.conversion_id
    assert _stored_of(runtime, click_id, other) == [("calm", "approved"), ("race", "approved")]


def test_a_status_another_worker_changed_after_the_batch_was_decided_is_decided_again_from_it(
    runtime: Runtime,
) -> None:
    """A pending conversion's approval reaches two workers at once: the batch decided before its turn
    finds the status changed when it writes, and is decided again from what the other stored. One
    status change, one history row, not two."""
    click_id = _click(runtime)
    pending = runtime.postbacks.handle(
        _postback(click_id=click_id, event="sale", txid="t1", status="pending")
    )
    other_worker = Database(runtime.settings.sqlalchemy_url)
    elsewhere = PostbackIntake(other_worker, runtime.codec, lambda: runtime.cache.snapshot, utc_now)
    approval = _postback(click_id=click_id, event="sale", txid="t1", status="approved")
    prepared = runtime.postbacks.prepare_batch([approval])
    assert elsewhere.handle(approval).decision == Decision.UPDATED
    staged = prepared.write()
    if staged.finish is not None:
        staged.finish()
    other_worker.dispose()
    assert [outcome.decision for outcome in staged.results] == [Decision.DUPLICATE]
    assert _status_history(runtime, pending.conversion_id) == [(None, "pending"), ("pending", "approved")]


def test_a_prepared_batch_given_up_before_its_turn_stores_nothing_and_frees_its_connection(
    runtime: Runtime,
) -> None:
    click_id = _click(runtime)
    for _ in range(20):  # more than the pool holds: each discarded batch gave its connection back
        runtime.postbacks.prepare_batch([_postback(click_id=click_id, event="sale", txid="t1")]).discard()
    assert runtime.postbacks.handle(_postback(click_id=click_id, event="sale", txid="t1")).decision == (
        Decision.ACCEPTED
    )
    assert _stored_of(runtime, click_id) == [("t1", "approved")]


def test_postbacks_that_came_while_a_prepared_batch_waited_are_decided_after_it_in_its_commit(
    runtime: Runtime,
) -> None:
    """The postbacks that arrive while a worker waits for its turn are decided in the turn, after the
    batch decided before it, in the same transaction: they see its conversions (a repeat is a
    duplicate, a new status an update), and all of them are stored by one commit."""
    click_id, other = _click(runtime), _click(runtime)
    prepared = runtime.postbacks.prepare_batch(
        [_postback(click_id=click_id, event="sale", txid="t1", status="pending")]
    )
    staged = prepared.write(
        [
            _postback(click_id=click_id, event="sale", txid="t1", status="pending"),
            _postback(click_id=click_id, event="sale", txid="t1", status="approved"),
            _postback(click_id=other, event="sale", txid="t2"),
        ]
    )
    assert [outcome.decision for outcome in staged.results] == [
        Decision.ACCEPTED,
        Decision.DUPLICATE,
        Decision.UPDATED,
        Decision.ACCEPTED,
    ]
    assert _stored_of(runtime, click_id, other) == []
    assert staged.finish is not None
    staged.finish()
    assert _stored_of(runtime, click_id, other) == [("t1", "approved"), ("t2", "approved")]


def test_on_sqlite_the_trackers_postback_batch_is_decided_while_another_worker_holds_the_write_turn(
    runtime: Runtime, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tracker's own postback writer prepares its batches on SQLite: while another worker holds
    the file's write turn, the batch is already read and decided, and it is answered once the turn
    is given back and the batch committed."""
    if backend != "sqlite":
        pytest.skip("PostgreSQL's writers take no turn: a batch is read, decided and written at once")
    click_id = _click(runtime)
    other_worker = runtime.database.write_turn()
    assert other_worker is not None
    read = event_store.postback_batch_reads
    reads: list[str] = []

    def counted_read(*args: Any) -> Any:
        reads.append("read")
        return read(*args)

    monkeypatch.setattr(event_store, "postback_batch_reads", counted_read)

    async def scenario() -> Decision:
        other_worker.take()
        answer = asyncio.ensure_future(
            runtime.postback_writer.write(_postback(click_id=click_id, event="sale", txid="t1"))
        )
        for _ in range(500):
            if reads:
                break
            await asyncio.sleep(0.01)
        assert reads == ["read"], "the batch should be read while the other worker holds the turn"
        assert not answer.done()
        other_worker.give_back()
        return (await answer).decision

    try:
        assert asyncio.run(scenario()) == Decision.ACCEPTED
    finally:
        other_worker.close()
    assert _stored_of(runtime, click_id) == [("t1", "approved")]
