"""`asyncq demo`: play the three stories against local receivers, show progress,
judge by what the receivers counted, write the report. Exit status 1 if a
receiver saw its limit exceeded or a job was lost."""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table

from .._journal import JournalStats
from ._alerts import watch_backlog
from ._jobs import DemoJobs
from ._progress import live_view, progress_line
from ._receivers import Clock, Receivers
from ._report import CHART_JS, chart_library, write_report
from ._scenario import Scenario
from ._timeline import Timeline, per_second
from ._verdict import Verdict, judge

STORIES = {
    "email": "a campaign of sends, paced under the provider's limit",
    "crm": "deal webhooks; the receiver goes down, then comes back",
    "enrichment": "a contact import; the API answers 429 + Retry-After when pushed",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Options:
    scenario: Scenario
    report: Path
    keep: bool
    live: bool


class Demo:
    """One run: the receivers, the queue, what was submitted, what happened."""

    def __init__(self, options: Options, console: Console, workdir: Path) -> None:
        self.options = options
        self.scenario = options.scenario
        self.console = console
        self.clock = Clock()
        self.receivers = Receivers(self.scenario, self.clock)
        self.jobs = DemoJobs(workdir / "demo.db", self.scenario, self.clock)
        self.timeline = Timeline()
        self.submitted: dict[str, list[int]] = collections.defaultdict(list)
        self.submitting = 3  # stories still submitting
        watch_backlog(
            self.jobs.queue,
            destination="crm",
            depth=self.scenario.backlog_depth,
            clock=self.clock,
            record=self.timeline.alert,
        )
        self.redriven = 0

    async def until(self, at: float) -> None:
        """Sleep until `at` seconds after the start."""
        await asyncio.sleep(max(0.0, at - self.clock()))

    # -- the stories -----------------------------------------------------------

    async def campaign(self) -> None:
        url = self.receivers.urls["email"]
        rows = [
            {"url": url, "to": f"user{i}@example.com", "campaign": "launch"}
            for i in range(self.scenario.emails)
        ]
        jobs = await self.jobs.send_email.submit_many(rows)
        self.submitted["email"] += [job.id for job in jobs]
        self.event(f"campaign: {len(jobs)} emails submitted at once")
        self.submitting -= 1

    async def deals(self) -> None:
        url = self.receivers.urls["crm"]
        pace = self.scenario.crm_deals_per_second
        for deal in range(self.scenario.crm_deals):
            await self.until(deal / pace)
            job = await self.jobs.post_deal.submit(url, deal, "won")
            self.submitted["crm"].append(job.id)
        self.event(f"deals: the last of {self.scenario.crm_deals} webhooks submitted")
        self.submitting -= 1

    async def contacts(self) -> None:
        await self.until(self.scenario.contacts_at)
        url = self.receivers.urls["enrichment"]
        rows = [{"url": url, "contact": c} for c in range(self.scenario.contacts)]
        jobs = await self.jobs.enrich_contact.submit_many(rows)
        self.submitted["enrichment"] += [job.id for job in jobs]
        self.event(f"import: {len(jobs)} contacts to enrich submitted at once")
        self.submitting -= 1

    async def crm_outage(self) -> None:
        scenario = self.scenario
        await self.until(scenario.crm_down_at)
        await self.receivers.crm_goes("failing")
        self.event("the CRM goes down: it answers 503")
        await self.until(scenario.crm_unreachable_at)
        await self.receivers.crm_goes("unreachable")
        self.event("the CRM is unreachable: connections refused")
        await self.until(scenario.crm_up_at)
        await self.receivers.crm_goes("up")
        self.event("the CRM is back")

    def event(self, text: str) -> None:
        self.timeline.event(self.clock(), text)
        if not self.options.live:
            self.console.print(f"{self.clock():5.1f} s  {text}", soft_wrap=True)

    # -- watching --------------------------------------------------------------

    async def redrive_if_due(self, stats: JournalStats) -> None:
        """Once the CRM is back, the operator redrives its dead letters."""
        crm = stats.destinations.get("crm")
        if crm is None or not crm.dead or self.clock() < self.scenario.redrive_at:
            return
        count = await self.jobs.queue.redrive(destination="crm")
        if count:
            self.redriven += count
            self.event(f"the operator redrives {count} dead CRM webhook(s)")

    def finished(self, stats: JournalStats) -> bool:
        live = stats.pending + stats.blocked + stats.claimed + stats.running
        return self.submitting == 0 and live == 0 and stats.dead == 0

    async def watch(self, show: Live | None) -> None:
        """Sample the stats, redrive, show progress, until every job is done or
        the deadline passes."""
        scenario = self.scenario
        line_every = max(1.0, scenario.duration / 12)
        next_line = 0.0
        while True:
            await asyncio.sleep(scenario.sample_every)
            stats = await self.jobs.queue.stats()
            now = self.clock()
            self.timeline.sample(now, stats)
            await self.redrive_if_due(stats)
            if show is not None:
                show.update(
                    live_view(
                        journal=self.jobs.queue.path,
                        stats=stats,
                        receivers=self.receivers,
                        timeline=self.timeline,
                        now=now,
                        duration=scenario.duration,
                    )
                )
            elif now >= next_line:
                self.console.print(progress_line(stats, self.receivers, now), soft_wrap=True)
                next_line = now + line_every
            if self.finished(stats):
                self.event("every job has finished")
                return
            if now > scenario.deadline:
                self.event("deadline: giving up on the jobs still not delivered")
                return

    async def play(self) -> float:
        """Run the stories; return how long it took (seconds)."""
        await self.receivers.start()
        try:
            async with self.jobs.queue:
                stories = [self.campaign(), self.deals(), self.contacts(), self.crm_outage()]
                with _live(self.console, self.options.live) as show:
                    async with asyncio.TaskGroup() as group:
                        tasks = [group.create_task(story) for story in stories]
                        await self.watch(show)
                        for task in tasks:  # only at the deadline are some still going
                            task.cancel()
            return self.clock()
        finally:
            await self.receivers.stop()

    # -- the end ---------------------------------------------------------------

    def alerts_note(self) -> str:
        fired = [a for a in self.timeline.alerts if not a.cleared]
        cleared = [a for a in self.timeline.alerts if a.cleared]
        if not fired:
            return f"backlog alert on crm (depth > {self.scenario.backlog_depth}): did not fire"
        text = f"backlog alert on crm: fired at {fired[0].at:.1f} s ({fired[0].cause})"
        if cleared:
            return text + f", cleared at {cleared[-1].at:.1f} s"
        return text + ", not cleared"

    def report_data(self, verdict: Verdict, ended: float) -> dict[str, Any]:
        scenario = self.scenario
        limits = {"email": scenario.email_limit, "enrichment": scenario.enrichment_limit}
        outage = [(e.at, e.text) for e in self.timeline.events if e.text.startswith("the CRM ")]
        crm_bands = [
            {"from": at, "to": outage[i + 1][0] if i + 1 < len(outage) else ended, "label": label}
            for i, (at, label) in enumerate(
                zip([at for at, _ in outage], ["503", "refused"], strict=False)
            )
        ]
        destinations = []
        for ledger in self.receivers.ledgers:
            name = ledger.name
            limit = limits.get(name)
            destinations.append(
                {
                    "name": name,
                    "story": STORIES[name],
                    "limit": None if limit is None else limit / scenario.window,
                    "accepted": per_second([t for t, s in ledger.calls if s < 300], ended),
                    "refused": per_second([t for t, s in ledger.calls if s >= 300], ended),
                    "failed": per_second(self.jobs.failed_calls.get(name, []), ended),
                    "bands": crm_bands if name == "crm" else [],
                }
            )
        names = [ledger.name for ledger in self.receivers.ledgers]
        samples = self.timeline.samples
        return {
            "subtitle": (
                f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, a run of "
                f"{ended:.0f} s (scenario of {scenario.duration:g} s) on a SQLite journal, "
                "three local receivers on 127.0.0.1. Every figure below comes from the "
                "receivers' own counts."
            ),
            "length": max(1, int(ended + 0.999)),
            "failures": verdict.failures,
            "rows": [{**asdict(row), "lost": len(row.lost)} for row in verdict.rows],
            "destinations": destinations,
            "sampled_at": [round(s.at, 3) for s in samples],
            "depth": {name: [s.depth.get(name, 0) for s in samples] for name in names},
            "dead": {name: [s.dead.get(name, 0) for s in samples] for name in names},
            "crm_bands": crm_bands,
            "alerts": [asdict(a) for a in self.timeline.alerts],
            "alerts_note": self.alerts_note(),
            "events": [{"at": e.at, "text": e.text} for e in self.timeline.events],
            "chart_js": _chart_js_version(),
        }


def _chart_js_version() -> str:
    first_lines = chart_library()[:200]
    marker = "Chart.js v"
    start = first_lines.find(marker)
    if start < 0:
        return f"({CHART_JS})"
    return first_lines[start + len(marker) :].split()[0]


@contextmanager
def _live(console: Console, live: bool) -> Iterator[Live | None]:
    if not live:
        with nullcontext():
            yield None
        return
    with Live(console=console, refresh_per_second=4, transient=False) as show:
        yield show


@contextmanager
def _queue_logs_to(console: Console) -> Iterator[None]:
    """The queue's warnings (a circuit opens, a backlog alert) go through rich, above
    the live view; not one line per dead webhook: the demo counts those itself."""
    logger = logging.getLogger("asyncq")
    handler = RichHandler(console=console, show_path=False, level=logging.WARNING)
    handler.addFilter(lambda record: getattr(record, "event", None) != "dead_lettered")
    saved = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = saved


def summary_table(verdict: Verdict) -> Table:
    table = Table(title="what the receivers counted", title_justify="left")
    table.add_column("destination")
    for header in ("submitted", "delivered", "lost", "calls seen", "refused"):
        table.add_column(header, justify="right")
    table.add_column("most in any window", justify="right")
    table.add_column("violations", justify="right")
    for row in verdict.rows:
        window = (
            f"{row.most_in_window} (limit {row.limit} in {row.window:g} s)"
            if row.limit is not None
            else "no limit"
        )
        table.add_row(
            row.destination,
            str(row.submitted),
            str(row.delivered),
            str(len(row.lost)),
            str(row.calls),
            str(row.refused),
            window,
            str(row.violations),
        )
    return table


async def run(options: Options, console: Console) -> int:
    """Play the demo; the exit status: 0 if every check passed, 1 if not."""
    workdir = Path(tempfile.mkdtemp(prefix="asyncq-demo-"))
    try:
        demo = Demo(options, console, workdir)
        scenario = options.scenario
        console.print(
            f"asyncq demo: three stories in about {scenario.duration:g} s, journal in {workdir}"
        )
        with _queue_logs_to(console):
            ended = await demo.play()
        verdict = judge(demo.submitted, demo.receivers.ledgers)
        console.print(summary_table(verdict))
        console.print(demo.alerts_note())
        if demo.redriven:
            console.print(f"dead CRM webhooks redriven once it was back: {demo.redriven}")
        try:
            write_report(options.report, demo.report_data(verdict, ended))
        except OSError as exc:
            console.print(f"asyncq demo: cannot write the report: {exc}")
            return 1
        for failure in verdict.failures:
            console.print(f"[bold red]FAILED[/] {failure}")
        if verdict.passed:
            console.print(
                "[bold green]passed[/]: no receiver saw its limit exceeded, every job was delivered"
            )
        console.print(f"report: {options.report.resolve()}")
        return 0 if verdict.passed else 1
    finally:
        if options.keep:
            console.print(f"journal kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
