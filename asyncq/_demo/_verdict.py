"""The demo's verdict, from what the receivers counted: was a limit ever exceeded
(or a Retry-After ignored), and was every submitted job delivered?

The queue's own stats play no part here: a queue that lost a job or broke a limit
could not be trusted to say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._receivers import Ledger


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One destination's line in the summary."""

    destination: str
    submitted: int
    delivered: int  # distinct submitted jobs the receiver accepted
    lost: list[int]  # submitted job ids it never accepted
    duplicates: int
    calls: int  # every call the receiver saw, whatever it answered
    refused: int  # calls answered with an error (429, 503)
    limit: int | None
    window: float
    most_in_window: int
    violations: int


@dataclass(frozen=True, slots=True)
class Verdict:
    rows: list[Row]
    failures: list[str]  # empty: every check passed

    @property
    def passed(self) -> bool:
        return not self.failures


def judge(submitted: Mapping[str, Sequence[int]], ledgers: Sequence[Ledger]) -> Verdict:
    """Compare the ids submitted to each destination with what its receiver saw."""
    rows: list[Row] = []
    failures: list[str] = []
    for ledger in ledgers:
        ids = list(submitted.get(ledger.name, ()))
        lost = sorted(set(ids) - set(ledger.accepted))
        rows.append(
            Row(
                destination=ledger.name,
                submitted=len(ids),
                delivered=len(set(ids) & set(ledger.accepted)),
                lost=lost,
                duplicates=ledger.duplicates,
                calls=len(ledger.calls),
                refused=sum(1 for _, status in ledger.calls if status >= 300),
                limit=ledger.limit,
                window=ledger.window,
                most_in_window=ledger.most_in_window,
                violations=len(ledger.violations),
            )
        )
        if ledger.violations:
            first = ledger.violations[0]
            failures.append(
                f"{ledger.name}: the receiver saw its terms broken {len(ledger.violations)} "
                f"time(s), first at {first.at:.1f} s: {first.what}"
            )
        if lost:
            shown = ", ".join(map(str, lost[:5])) + (", ..." if len(lost) > 5 else "")
            failures.append(f"{ledger.name}: {len(lost)} job(s) never delivered (ids {shown})")
    return Verdict(rows, failures)
