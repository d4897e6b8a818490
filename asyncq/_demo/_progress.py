"""What the demo shows while it runs: the queue's stats as `asyncq top` shows them,
what each receiver sees, and the latest events; or one plain line at a time."""

from __future__ import annotations

import time

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .._cli._documents import stats_document
from .._cli._tables import top_view
from .._journal import JournalStats
from ._receivers import Ledger, Receivers
from ._timeline import Timeline


def calls_in_last(ledger: Ledger, now: float, seconds: float = 1.0) -> int:
    """Calls the receiver saw in the last `seconds`."""
    count = 0
    for at, _ in reversed(ledger.calls):
        if at <= now - seconds:
            break
        count += 1
    return count


def receivers_view(receivers: Receivers, now: float) -> Table:
    table = Table(title="what the receivers see", title_justify="left")
    table.add_column("receiver")
    for header in ("state", "delivered", "calls last 1 s", "refused", "violations"):
        table.add_column(header, justify="right")
    for ledger in receivers.ledgers:
        seen = calls_in_last(ledger, now)
        limit = f" / {ledger.limit}" if ledger.limit is not None else ""
        state = receivers.crm.state if ledger.name == "crm" else "up"
        refused = sum(1 for _, status in ledger.calls if status >= 300)
        table.add_row(
            ledger.name,
            Text(state, style="green" if state == "up" else "bold red"),
            str(len(ledger.accepted)),
            f"{seen}{limit}",
            str(refused),
            Text(str(len(ledger.violations)), style="bold red" if ledger.violations else ""),
        )
    return table


def live_view(
    *,
    journal: str,
    stats: JournalStats,
    receivers: Receivers,
    timeline: Timeline,
    now: float,
    duration: float,
) -> RenderableType:
    """One frame: `now` and `duration` in seconds of the demo; `journal`, its path."""
    header = Text.assemble(
        ("asyncq demo", "bold"), f"  {now:5.1f} s of about {duration:g} s", style=""
    )
    events = Text("\n").join(
        Text(f"{event.at:6.1f} s  {event.text}") for event in timeline.events[-6:]
    )
    return Group(
        header,
        Text("the queue (asyncq top)", style="bold"),
        top_view(journal, stats_document(stats, time.time())),
        receivers_view(receivers, now),
        Text("latest events", style="bold"),
        events,
    )


def progress_line(stats: JournalStats, receivers: Receivers, now: float) -> str:
    """One line for a log or a CI: per destination, delivered, depth, calls last second."""
    parts = []
    for ledger in receivers.ledgers:
        counts = stats.destinations.get(ledger.name)
        depth = 0 if counts is None else counts.pending + counts.claimed + counts.running
        dead = 0 if counts is None else counts.dead
        limit = f"/{ledger.limit}" if ledger.limit is not None else ""
        dead_part = f", {dead} dead" if dead else ""
        parts.append(
            f"{ledger.name}: {len(ledger.accepted)} ok, {depth} left{dead_part}, "
            f"{calls_in_last(ledger, now)}{limit} calls/s"
        )
    return f"{now:5.1f} s  " + " | ".join(parts)
