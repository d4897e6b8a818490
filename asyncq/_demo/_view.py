"""The live view of a journal's stats: one row per destination, as a rich table.

It takes a `JournalStats` and nothing else, so `asyncq demo` and `asyncq top` can
show the same view. The rates (arrival, completion, calls, retries, the limit) are
the fields of the stats of issue 11; a build whose stats lack one shows "-" there.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from .._journal import DestinationCounts, JournalStats

NOTHING = "-"


def _figure(counts: DestinationCounts, name: str) -> float | None:
    value = getattr(counts, name, None)  # absent in builds before issue 11's stats
    return None if value is None else float(value)


def _rate(value: float | None) -> str:
    return NOTHING if value is None else f"{value:.1f}"


def _calls(counts: DestinationCounts) -> Text:
    """Calls per second against the limit, red when above it."""
    calls, limit = _figure(counts, "call_rate"), _figure(counts, "limit")
    if calls is None:
        return Text(NOTHING)
    if limit is None:
        return Text(f"{calls:.1f}")
    style = "red" if calls > limit else ""
    return Text(f"{calls:.1f} / {limit:g}", style=style)


def _state(counts: DestinationCounts, now: float | None) -> Text:
    """The circuit, and whether calls are held back (paused, a Retry-After)."""
    parts = [counts.circuit]
    if counts.paused:
        parts.append("paused")
    if counts.held_until is not None and (now is None or counts.held_until > now):
        left = "" if now is None else f" {counts.held_until - now:.1f}s"
        parts.append(f"held{left}")
    style = "green" if parts == ["closed"] else "bold red"
    return Text(", ".join(parts), style=style)


def stats_view(stats: JournalStats, *, title: str | None = None) -> Table:
    """A table of `stats`, one row per destination and a total row: jobs waiting
    and running, arrival and completion rates (jobs/s), calls/s against the limit,
    retries per minute, dead letters, the circuit."""
    table = Table(title=title, title_justify="left", expand=False)
    table.add_column("destination")
    for header in ("ready", "waiting", "running", "arrive/s", "done/s", "calls/s of limit"):
        table.add_column(header, justify="right")
    table.add_column("retries/min", justify="right")
    table.add_column("dead", justify="right")
    table.add_column("circuit")
    now = _figure_of(stats, "at")
    for name in sorted(stats.destinations):
        counts = stats.destinations[name]
        table.add_row(
            name,
            str(counts.ready),
            str(counts.scheduled + counts.blocked),
            str(counts.claimed + counts.running),
            _rate(_figure(counts, "arrival_rate")),
            _rate(_figure(counts, "completion_rate")),
            _calls(counts),
            _rate(_figure(counts, "retries_per_minute")),
            Text(str(counts.dead), style="bold red" if counts.dead else ""),
            _state(counts, now),
        )
    if len(stats.destinations) > 1:
        table.add_section()
        table.add_row(
            "total",
            str(stats.ready),
            str(stats.scheduled + stats.blocked),
            str(stats.claimed + stats.running),
            _rate(_total(stats, "arrival_rate")),
            _rate(_total(stats, "completion_rate")),
            _rate(_total(stats, "call_rate")),
            _rate(_total(stats, "retries_per_minute")),
            str(stats.dead),
            "",
        )
    return table


def _figure_of(stats: JournalStats, name: str) -> float | None:
    value = getattr(stats, name, None)
    return None if value is None else float(value)


def _total(stats: JournalStats, name: str) -> float | None:
    figures = [_figure(counts, name) for counts in stats.destinations.values()]
    known = [figure for figure in figures if figure is not None]
    return sum(known) if known and len(known) == len(figures) else None
