"""How often enrichment is right, measured on published corpora (tests/corpora.py), with the figures
printed: `.venv/bin/pytest tests/test_visitor_accuracy.py` shows them in its output."""

from collections import Counter
from collections.abc import Iterator

import pytest

from clicktrail.clicks.enrichment.agents import AgentParser
from clicktrail.clicks.enrichment.bots import BotRules
from tests import corpora


@pytest.fixture(scope="module")
def parser() -> AgentParser:
    return AgentParser(cache_size=100_000)


@pytest.fixture
def report(capsys: pytest.CaptureFixture[str]) -> Iterator[list[str]]:
    lines: list[str] = []
    yield lines
    with capsys.disabled():
        for line in lines:
            print(f"\n[visitor accuracy] {line}", end="")
        print()


def _share(part: int, whole: int) -> str:
    return f"{part}/{whole} = {part / whole:.2%}"


def _bots(parser: AgentParser, agents: tuple[str, ...]) -> int:
    rules = BotRules()
    return sum(1 for ua in agents if rules.judge_agent(ua, parser.parse(ua)) is not None)


def test_device_type_is_right_for_at_least_97_percent_of_real_browsers(
    parser: AgentParser, report: list[str]
) -> None:
    sample = corpora.real_browsers()
    wrong = Counter((kind, parser.parse(ua).device_type.value) for ua, kind in sample)
    right = sum(count for (kind, found), count in wrong.items() if kind == found)
    report.append(f"device type, fake-useragent real-world browsers: {_share(right, len(sample))}")
    assert len(sample) > 5000
    assert right / len(sample) >= 0.97, [pair for pair in wrong.most_common(10) if pair[0][0] != pair[0][1]]


def test_device_type_on_matomos_one_per_model_fixtures_stays_above_85_percent(
    parser: AgentParser, report: list[str]
) -> None:
    # Not weighted by traffic: one user agent per device model, exotic and old ones included, and
    # tablets that send "Mobile". A floor that catches regressions, not the quality bar.
    sample = corpora.matomo_devices()
    right = sum(1 for ua, kind in sample if parser.parse(ua).device_type.value == kind)
    by_kind = Counter(kind for _, kind in sample)
    hits = Counter(kind for ua, kind in sample if parser.parse(ua).device_type.value == kind)
    detail = ", ".join(f"{kind} {hits[kind] / count:.1%}" for kind, count in sorted(by_kind.items()))
    report.append(f"device type, Matomo device fixtures: {_share(right, len(sample))} ({detail})")
    assert len(sample) > 3000
    assert right / len(sample) >= 0.85


def test_at_least_97_percent_of_the_crawler_list_is_flagged(parser: AgentParser, report: list[str]) -> None:
    agents = corpora.crawler_list()
    flagged = _bots(parser, agents)
    report.append(f"bots flagged, crawler-user-agents instances: {_share(flagged, len(agents))}")
    assert len(agents) > 1000
    assert flagged / len(agents) >= 0.97


def test_at_least_97_percent_of_an_independent_crawler_corpus_is_flagged(
    parser: AgentParser, report: list[str]
) -> None:
    # Matomo's bot fixtures are not what we detect with (uap-core, crawler-user-agents and generic
    # crawler tokens): the honest recall figure, and the quality bar.
    agents = corpora.matomo_bots()
    flagged = _bots(parser, agents)
    report.append(f"bots flagged, Matomo bot fixtures (independent): {_share(flagged, len(agents))}")
    assert len(agents) > 1000
    assert flagged / len(agents) >= 0.97


def test_under_half_a_percent_of_real_browsers_are_flagged_as_bots(
    parser: AgentParser, report: list[str]
) -> None:
    real = tuple(ua for ua, _ in corpora.real_browsers())
    models = tuple(ua for ua, _ in corpora.matomo_devices())
    flagged_real = _bots(parser, real)
    flagged_models = _bots(parser, models)
    report.append(f"browsers flagged as bots, fake-useragent: {_share(flagged_real, len(real))}")
    report.append(f"browsers flagged as bots, Matomo device fixtures: {_share(flagged_models, len(models))}")
    assert flagged_real / len(real) < 0.005
    assert flagged_models / len(models) < 0.005
