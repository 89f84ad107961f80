"""The delivery pipeline's pure rules: the retry schedule, the SSRF guard's judgement, the breaker's
transitions. (The end-to-end behaviour is in test_delivery.py.)"""

import ipaddress
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from clicktrail.config import Settings
from clicktrail.delivery.breaker import Breaker, BreakerPolicy, BreakerState
from clicktrail.delivery.guard import HostGuard
from clicktrail.delivery.schedule import RetrySchedule
from clicktrail.delivery.sender import AttemptOutcome, outcome_of
from clicktrail.types import SourceId

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_default_schedule_retries_within_10_seconds_doubling_for_at_least_a_day() -> None:
    schedule = RetrySchedule.from_settings(Settings())

    assert schedule.delay(1) <= timedelta(seconds=10)
    assert [schedule.delay(n).total_seconds() for n in range(1, 6)] == [5, 10, 20, 40, 80]
    assert schedule.delay(30) == timedelta(hours=1)
    assert schedule.span() >= timedelta(hours=24)
    assert schedule.next_attempt(34, NOW) == NOW + timedelta(hours=1)
    assert schedule.next_attempt(35, NOW) is None  # the 35th failure is the last: dead


@pytest.mark.parametrize(
    ("codes", "outcome"),
    [
        ((200, 201, 202, 204, 299), AttemptOutcome.DELIVERED),
        ((400, 401, 403, 404, 405, 409, 410, 413, 422, 451, 499), AttemptOutcome.REJECTED),
        ((408, 425, 429), AttemptOutcome.FAILED),  # "not now": tried again
        ((301, 302, 307, 308), AttemptOutcome.FAILED),  # redirects are not followed
        ((100, 500, 502, 503, 504, 599), AttemptOutcome.FAILED),
    ],
)
def test_2xx_delivers_4xx_refuses_for_good_except_not_now_and_the_rest_is_retried(
    codes: tuple[int, ...], outcome: AttemptOutcome
) -> None:
    assert {code: outcome_of(code) for code in codes} == dict.fromkeys(codes, outcome)


def test_a_huge_attempt_count_does_not_overflow() -> None:
    schedule = RetrySchedule(timedelta(seconds=5), timedelta(hours=1), 1000)
    assert schedule.delay(999) == timedelta(hours=1)


@pytest.mark.parametrize(
    ("host", "addresses", "allowed"),
    [
        ("partner.example", ["93.184.216.34"], True),
        ("partner.example", ["93.184.216.34", "10.0.0.7"], False),  # one private answer is enough
        ("evil.example", ["127.0.0.1"], False),  # a name for an allowlisted IP is still refused
        ("127.0.0.1", [], True),  # allowlisted literally
        ("127.0.0.2", [], False),
        ("::ffff:127.0.0.1", [], False),  # IPv4-mapped loopback
        ("169.254.169.254", [], False),
        ("100.64.0.1", [], False),  # carrier-grade NAT
        ("224.0.0.1", [], False),
        ("0.0.0.0", [], False),
        ("hooks.internal", ["10.1.1.1"], True),  # allowlisted by name
        ("HOOKS.internal.", ["10.1.1.1"], True),
        ("10.20.30.40", [], True),  # inside an allowlisted CIDR, named literally
        ("2606:4700::1111", [], True),
    ],
)
def test_the_guard_allows_public_addresses_and_the_allowlist_only(
    host: str, addresses: list[str], allowed: bool
) -> None:
    guard = HostGuard(
        frozenset({"hooks.internal"}),
        (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.20.0.0/16")),
    )
    assert (guard.judge(host, addresses) is None) is allowed


def test_the_allowlist_setting_refuses_what_is_neither_a_host_nor_a_network() -> None:
    names, networks = Settings(delivery_allow_hosts="localhost, 10.0.0.0/8 ,::1").delivery_allowed
    assert names == frozenset({"localhost"})
    assert [str(n) for n in networks] == ["10.0.0.0/8", "::1/128"]
    with pytest.raises(ValueError, match="neither a host name"):
        Settings(delivery_allow_hosts="http://x/")


def test_the_breaker_trips_after_the_threshold_and_a_failed_probe_keeps_when_it_tripped() -> None:
    policy = BreakerPolicy(threshold=3, cooldown=timedelta(seconds=60))
    breaker = Breaker(SourceId(1))
    for _ in range(2):
        breaker = policy.after_failure(breaker, "answered 500", NOW)
    assert breaker.state is BreakerState.CLOSED

    tripped = policy.after_failure(breaker, "answered 502", NOW)
    assert (tripped.state, tripped.reason, tripped.opened_at) == (BreakerState.OPEN, "answered 502", NOW)
    assert tripped.probe_at == NOW + timedelta(seconds=60)

    later = NOW + timedelta(minutes=5)
    probing = Breaker(SourceId(1), BreakerState.HALF_OPEN, 3, "answered 502", NOW, later)
    failed_probe = policy.after_failure(probing, "timed out", later)
    assert (failed_probe.state, failed_probe.opened_at) == (BreakerState.OPEN, NOW)
    assert failed_probe.probe_at == later + timedelta(seconds=60)
    assert policy.after_success(failed_probe) == Breaker(SourceId(1))


def test_the_lease_must_outlast_an_attempt() -> None:
    with pytest.raises(ValueError, match="LEASE_SECONDS"):
        Settings(delivery_lease_seconds=5, delivery_connect_timeout=3, delivery_read_timeout=10)


def test_a_ca_file_for_https_receivers_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"nowhere\.pem is not a file"):
        Settings(delivery_ca_file=str(tmp_path / "nowhere.pem"))
    (tmp_path / "receivers.pem").write_text("")
    assert Settings(delivery_ca_file=str(tmp_path / "receivers.pem")).delivery_ca_file is not None
    assert Settings(delivery_ca_file="").delivery_ca_file is None
