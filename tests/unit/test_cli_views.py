"""What `stats --json`, `stats` and `top` show of the figures of the stats contract
(rates, latency, limit, workers), whether or not this journal gives them."""

from __future__ import annotations

import io
import json

from rich.console import Console

from asyncq import DestinationCounts, JournalStats
from asyncq._cli._documents import COUNTS, FLOW, HOLDS, stats_document
from asyncq._cli._tables import TOP_COLUMNS, span, stats_view, top_view

AT = 1_800_000_000.0


def monitored() -> JournalStats:
    email = DestinationCounts(
        ready=300, scheduled=12, running=4, succeeded=1200, dead=1,
        oldest_ready_at=AT - 42.0,
        arrival_rate=12.5, completion_rate=4.9, call_rate=4.9, retries_per_minute=3.0,
        dead_per_minute=0.0, latency_p50=0.012, latency_p95=0.080, latency_p99=1.5,
        limit=5.0, limit_used=0.98,
    )  # fmt: skip
    crm = DestinationCounts(
        scheduled=40, dead=7, circuit="open", circuit_until=AT + 25.0,
        arrival_rate=2.0, completion_rate=0.0, call_rate=0.0, retries_per_minute=6.0,
        dead_per_minute=1.0, latency_p50=None, latency_p95=None, latency_p99=None,
        limit=None, limit_used=None,
    )  # fmt: skip
    return JournalStats({"crm": crm, "email": email}, at=AT, workers=2)


def render(renderable: object) -> str:
    out = io.StringIO()
    Console(file=out, width=200, markup=False, highlight=False).print(renderable)
    return out.getvalue()


def rows(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split() for line in text.splitlines() if line.strip()}


def test_the_document_has_the_same_keys_for_an_idle_and_a_busy_journal() -> None:
    plain = JournalStats({"email": DestinationCounts(ready=3)})
    without = stats_document(plain, AT)
    full = stats_document(monitored(), AT + 99)
    assert without.keys() == full.keys() == {"at", "workers", "totals", "destinations"}
    assert without["destinations"]["email"].keys() == full["destinations"]["email"].keys()
    assert set(full["destinations"]["email"]) == {
        *COUNTS,
        *FLOW,
        *HOLDS,
        "oldest_ready_at",
        "oldest_ready_age",
    }
    assert without["totals"].keys() == full["totals"].keys()
    assert (without["at"], without["workers"]) == (AT, 0)
    assert without["destinations"]["email"]["arrival_rate"] == 0.0
    json.dumps(without)  # plain JSON
    json.dumps(full)


def test_the_document_carries_the_figures() -> None:
    shown = stats_document(monitored(), AT + 99)
    assert (shown["at"], shown["workers"]) == (AT, 2)  # the time the stats were taken
    email = shown["destinations"]["email"]
    assert (email["arrival_rate"], email["limit"], email["limit_used"]) == (12.5, 5.0, 0.98)
    assert email["oldest_ready_age"] == 42.0
    assert shown["totals"]["arrival_rate"] == 14.5
    assert shown["totals"]["ready"] == 300


def test_top_shows_depth_rates_calls_against_the_limit_and_the_circuit() -> None:
    shown = rows(render(top_view("jobs.db", stats_document(monitored(), AT))))
    assert shown["destination"] == list(TOP_COLUMNS)
    # depth ready running oldest in/s done/s calls/s limit used retry/m dead/m dead holds
    assert shown["email"][1:] == [
        "312", "300", "4", "42.0", "s", "12.5", "4.9", "4.9", "5.0", "98%", "3.0", "0.0", "1",
        "ok",
    ]  # fmt: skip
    assert shown["crm"][1:] == [
        "40", "0", "0", "-", "2.0", "0.0", "0.0", "-", "-", "6.0", "1.0", "7", "circuit",
        "open", "25s",
    ]  # fmt: skip
    assert shown["all"][1:4] == ["352", "300", "4"]


def test_stats_shows_the_latencies() -> None:
    text = render(stats_view("jobs.db", stats_document(monitored(), AT)))
    assert "workers: 2" in text
    flow = rows(text.split("last minute")[1])
    assert " ".join(flow["email"]).endswith("12 ms 80 ms 1.50 s ok")


def test_spans_read_as_a_person_would_say_them() -> None:
    assert [span(s) for s in (0.42, 12.34, 303, 7500, 3 * 86400 + 4 * 3600)] == [
        "0.42 s",
        "12.3 s",
        "5m 03s",
        "2h 05m",
        "3d 04h",
    ]
