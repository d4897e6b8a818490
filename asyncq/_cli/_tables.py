"""The documents of `_documents.py` as rich tables. Imported only by the commands
that draw tables, after `require_rich()`: rich is the optional `asyncq[cli]` extra.

Every value that comes from the journal goes in as `Text`, never as a string that
rich would read as markup (a task named "[bold]" is shown as written)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console, Group, JustifyMethod, RenderableType
from rich.table import Table
from rich.text import Text

from ._documents import COUNTS, Document

NONE = "-"
COUNT_COLUMNS = (
    "destination", "ready", "sched", "blocked", "claimed", "running", "succeeded", "dead",
    "cancelled", "oldest",
)  # fmt: skip
FLOW_COLUMNS = (
    "destination", "in", "done", "calls", "limit", "used",
    "retries", "dead", "p50", "p95", "p99", "holds",
)  # fmt: skip
TOP_COLUMNS = (
    "destination", "depth", "ready", "running", "oldest", "in/s", "done/s", "calls/s",
    "limit", "used", "retry/m", "dead/m", "dead", "holds",
)  # fmt: skip


#: Columns for output that is not a terminal (a pipe, a file), unless $COLUMNS says:
#: wide enough that no table is squeezed.
PIPE_WIDTH = 200


def console() -> Console:
    out = Console(markup=False, emoji=False, highlight=False)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out.width = PIPE_WIDTH
    return out


# -- values as text -------------------------------------------------------------


def text(value: object, style: str = "") -> Text:
    """A value as plain text; text that is not valid UTF-8 (surrogate escapes)
    comes out as backslash escapes instead of failing the output."""
    shown = NONE if value is None else str(value)
    return Text(shown.encode("utf-8", "backslashreplace").decode("utf-8"), style=style)


def count(value: int | None) -> str:
    return NONE if value is None else f"{value:,}"


def rate(value: float | None) -> str:
    """Per second (or per minute), to the precision a person reads."""
    if value is None:
        return NONE
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def share(value: float | None) -> str:
    return NONE if value is None else f"{value:.0%}"


def span(seconds: float | None) -> str:
    """A duration: 0.42 s, 12.3 s, 5m 03s, 2h 05m, 3d 04h."""
    if seconds is None:
        return NONE
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 1 else f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def left(seconds: float) -> str:
    """Time left, short: 3s, 48s, then as `span` says it."""
    return f"{math.ceil(seconds)}s" if seconds < 60 else span(seconds)


def latency(seconds: float | None) -> str:
    if seconds is None:
        return NONE
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def moment(at: float | None, now: float | None = None) -> str:
    """A time in UTC, and how long ago (or how soon) it is if `now` is given."""
    if at is None:
        return NONE
    shown = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if now is None:
        return shown
    delta = now - at
    return f"{shown} ({span(delta)} ago)" if delta >= 0 else f"{shown} (in {span(-delta)})"


def clock(at: float | None) -> str:
    """A time in UTC, short, for a column of times."""
    return NONE if at is None else datetime.fromtimestamp(at, UTC).strftime("%m-%d %H:%M:%S")


def holds(destination: Document, at: float) -> Text:
    """What holds a destination's calls back: pause, a RetryAfter hold, its circuit."""
    parts: list[Text] = []
    if destination["paused"]:
        parts.append(Text("paused", style="yellow"))
    if destination["held_until"] is not None and destination["held_until"] > at:
        parts.append(Text(f"held {left(destination['held_until'] - at)}", style="yellow"))
    circuit = destination["circuit"]
    if circuit not in (None, "closed"):
        until = destination["circuit_until"]
        after = f" {left(until - at)}" if until is not None and until > at else ""
        parts.append(Text(f"circuit {circuit}{after}", style="red"))
    return Text(", ").join(parts) if parts else Text("ok", style="green")


def first_line(error: str | None) -> str | None:
    return error.strip().splitlines()[0] if error and error.strip() else error


# -- stats and top --------------------------------------------------------------


#: Columns of text, read from the left; the others hold numbers.
_TEXT_COLUMNS = frozenset(
    {"destination", "holds", "state", "task", "run at", "finished", "died", "started", "error"}
)


def _table(title: str | None, columns: Sequence[str]) -> Table:
    # The box's blank divider and a right padding of one: two spaces between columns.
    table = Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        padding=(0, 1, 0, 0),
        pad_edge=False,
        show_edge=False,
    )
    for name in columns:
        justify: JustifyMethod = "left" if name in _TEXT_COLUMNS else "right"
        table.add_column(name, justify=justify, no_wrap=True)
    return table


Cells = Callable[[Document, float], Sequence[str | Text]]


def _rows(table: Table, document: Document, cells: Cells) -> Table:
    """A row per destination, then the totals row."""
    at = document["at"]
    for name, destination in document["destinations"].items():
        table.add_row(text(name, "bold"), *cells(destination, at))
    if len(document["destinations"]) != 1:
        total = {**document["totals"], "paused": False, "held_until": None, "circuit": None}
        table.add_section()
        table.add_row(text("all", "bold"), *cells(total, at))
    return table


def header(path: str, document: Document, extra: str = "") -> Text:
    workers = document["workers"]
    shown = Text.assemble(
        ("asyncq ", "bold"),
        text(path, "bold cyan"),
        f"  {moment(document['at'])}  workers: {NONE if workers is None else workers}",
    )
    if extra:
        shown.append(f"  {extra}", style="dim")
    return shown


def stats_view(path: str, document: Document) -> RenderableType:
    """`asyncq stats`: jobs by state, then the flow of the last minute."""
    if not document["destinations"]:
        return Group(header(path, document), Text("no jobs in this journal"))

    def counted(d: Document, at: float) -> list[str]:
        return [*(count(d[name]) for name in COUNTS), span(d["oldest_ready_age"])]

    def flowing(d: Document, at: float) -> list[str | Text]:
        return [
            rate(d["arrival_rate"]),
            rate(d["completion_rate"]),
            rate(d["call_rate"]),
            rate(d["limit"]),
            share(d["limit_used"]),
            rate(d["retries_per_minute"]),
            rate(d["dead_per_minute"]),
            latency(d["latency_p50"]),
            latency(d["latency_p95"]),
            latency(d["latency_p99"]),
            holds(d, at) if d["circuit"] is not None else text(""),
        ]

    jobs = _table("jobs", COUNT_COLUMNS)
    flow = _table(
        "last minute (rates per second; retries and dead per minute)",
        FLOW_COLUMNS,
    )
    return Group(
        header(path, document),
        _rows(jobs, document, counted),
        _rows(flow, document, flowing),
    )


def top_view(path: str, document: Document, note: str = "") -> RenderableType:
    """One frame of `asyncq top`: a row per destination."""

    def cells(d: Document, at: float) -> list[str | Text]:
        waiting = sum(d[name] or 0 for name in ("ready", "scheduled", "blocked"))
        return [
            count(waiting),
            count(d["ready"]),
            count((d["claimed"] or 0) + (d["running"] or 0)),
            span(d["oldest_ready_age"]),
            rate(d["arrival_rate"]),
            rate(d["completion_rate"]),
            rate(d["call_rate"]),
            rate(d["limit"]),
            share(d["limit_used"]),
            rate(d["retries_per_minute"]),
            rate(d["dead_per_minute"]),
            count(d["dead"]),
            holds(d, at) if d["circuit"] is not None else text(""),
        ]

    table = _table(
        None,
        TOP_COLUMNS,
    )
    if document["destinations"]:
        _rows(table, document, cells)
    parts: list[RenderableType] = [header(path, document, note), table]
    if not document["destinations"]:
        parts.append(Text("no jobs in this journal"))
    return Group(*parts)


# -- jobs -----------------------------------------------------------------------


def jobs_view(documents: Sequence[Document], next_after: int | None, now: float) -> RenderableType:
    table = _table(
        None, ["id", "state", "destination", "task", "attempts", "run at", "finished", "error"]
    )
    for job in documents:
        table.add_row(
            text(job["id"]),
            text(job["state"], _STATE_STYLE.get(job["state"], "")),
            text(job["destination"]),
            text(job["task"]),
            text(job["attempts"]),
            text(clock(job["run_at"])),
            text(clock(job["finished_at"])),
            text(first_line(job["last_error"]), "red"),
        )
    parts: list[RenderableType] = [table]
    if not documents:
        parts = [Text("no jobs")]
    if next_after is not None:
        parts.append(Text(f"more: --after {next_after}", style="dim"))
    return Group(*parts)


def dead_view(documents: Sequence[Document], now: float) -> RenderableType:
    if not documents:
        return Text("no dead jobs")
    table = _table(None, ["id", "destination", "task", "attempts", "died", "error"])
    for job in documents:
        table.add_row(
            text(job["id"]),
            text(job["destination"]),
            text(job["task"]),
            text(job["attempts"]),
            text(clock(job["finished_at"])),
            text(first_line(job["last_error"]), "red"),
        )
    return table


_STATE_STYLE = {"succeeded": "green", "dead": "red", "cancelled": "yellow", "running": "cyan"}


def job_view(job: Document, now: float) -> RenderableType:
    """`asyncq show`: every field, then the history of failed attempts."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()

    def add(name: str, value: object, style: str = "") -> None:
        fields.add_row(name, value if isinstance(value, Text) else text(value, style))

    add("id", job["id"])
    add("task", job["task"])
    add("state", job["state"], _STATE_STYLE.get(job["state"], ""))
    add("destination", job["destination"])
    add("priority", job["priority"])
    add("key", job["key"])
    add("attempts", f"{job['attempts']} (RetryAfter answers: {job['snoozes']})")
    add("created", moment(job["created_at"], now))
    add("run at", moment(job["run_at"], now))
    add("first started", moment(job["first_started_at"], now))
    add("started", moment(job["started_at"], now))
    add("finished", moment(job["finished_at"], now))
    add("owner", job["owner"])
    add("lease until", moment(job["lease_until"], now))
    add("cancel requested", "yes" if job["cancel_requested"] else "no")
    add("parents", _ids(job["parents"]))
    add("children", _ids(job["children"]))
    add("on parent failure", job["on_parent_failure"])
    add("cancelled by", job["cancelled_by"])
    add("payload", _json(job["payload"]))
    add("result", _json(job["result"]) if job["state"] == "succeeded" else None)
    add("last error", job["last_error"], "red")
    parts: list[RenderableType] = [fields]
    if job["history"]:
        history = _table("history (failed attempts)", ["#", "started", "took", "error"])
        for i, attempt in enumerate(job["history"], 1):
            took = attempt["ended_at"] - attempt["started_at"]
            history.add_row(
                text(i),
                text(clock(attempt["started_at"])),
                span(took),
                text(first_line(attempt["error"]), "red"),
            )
        parts.append(history)
    return Group(*parts)


def _ids(ids: Iterable[int]) -> str:
    return ", ".join(map(str, ids)) or NONE


def _json(value: Any) -> str:
    return json.dumps(value, indent=2)


def show(renderable: RenderableType) -> None:
    console().print(renderable)
