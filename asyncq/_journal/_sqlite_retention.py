"""Keeping a SQLite journal small: finished jobs pruned a window of ids at a time,
and the write-ahead log checkpointed so that its file stays bounded.

What SQLite guarantees (https://sqlite.org/wal.html, the `wal_checkpoint` and
`journal_size_limit` pragmas), and what this module adds to it:

- `wal_autocheckpoint` (1,000 pages, SQLite's default): after a commit that leaves
  1,000 pages or more in the WAL, the committing connection runs a PASSIVE
  checkpoint: it copies into the database the frames that no reader still needs,
  waiting for nobody.
- The WAL is rewound (the next writer starts again at its beginning) only once a
  checkpoint has copied every frame and no reader still reads from the WAL;
  otherwise a commit appends and the file grows. So while a reader holds a
  snapshot open, every commit makes the WAL longer: no checkpoint may copy frames
  past that snapshot, nor rewind under it. Readers that always overlap one another
  do the same (checkpoint starvation).
- `journal_size_limit` (set to `max_wal_bytes` on the writer's connection): when
  the WAL is rewound, SQLite cuts the file back to that size. Without it the file
  stays as large as it ever was.
- `checkpoint` (every retention round, see `_retention.py`): a PASSIVE checkpoint
  at every `PASSIVE_EVERY`-th round while the WAL file is under `max_wal_bytes`
  (nothing in between); over it, at every round, a TRUNCATE checkpoint,
  which waits for the other writers and for the readers of older snapshots (new
  readers are not held up: they read the database file), copies every frame and
  empties the file. It waits at most `CHECKPOINT_WAIT_MS`: if a reader still holds
  on, it gives up, having lost nothing, and the next round tries again. Once every
  snapshot older than the WAL's end has been let go, the next round brings the
  WAL file back to empty.
"""

from __future__ import annotations

import os
import sqlite3
from collections import Counter

from . import _sqlite_deps as deps
from . import _sqlite_sql as sql
from ._messages import Pruned

#: Ids one prune call looks at (one window): a call is one share of a writer turn.
#: Deletes run at about 300,000 rows a second whatever the window (measured on the
#: benchmark machine, 2 cores), so a window's share of a turn is about 5 ms when
#: every row in it goes (20 ms for 5,000, 50 ms for 20,000).
PRUNE_WINDOW = 2_000
#: The WAL file's bound, bytes: `journal_size_limit`, and the size over which a
#: checkpoint truncates the file.
MAX_WAL_BYTES = 16 * 2**20
#: A PASSIVE checkpoint runs at every this many calls (rounds) only: SQLite's own
#: autocheckpoint copies the WAL every 1,000 pages anyway, and each checkpoint syncs
#: the database file (once a second made an idle service sync once a second, and
#: a test stepping the clock a second at a time pay a sync a step).
PASSIVE_EVERY = 10
#: How long a truncating checkpoint waits for other connections (milliseconds): it
#: runs on the writer's thread, so the writer waits that long at most.
CHECKPOINT_WAIT_MS = 100

_FINISHED = ("succeeded", "cancelled")

Deltas = Counter[tuple[str, str]]


class Pruner:
    """Walks the table's ids a window at a time, wrapping around; remembers its place."""

    def __init__(self, window: int = PRUNE_WINDOW) -> None:
        self.window = window
        self.after = 0  # the walk goes on after this id
        self._found_this_lap = False  # since the walk last wrapped around

    def prune(
        self, conn: sqlite3.Connection, deltas: Deltas, before: float | None, keep: int | None
    ) -> Pruned:
        """One window's share of pruning, inside the writer's transaction. `deltas`
        are the counts the transaction has changed so far."""
        excess = 0
        if keep is not None:
            (counted,) = conn.execute(sql.FINISHED_COUNT).fetchone()
            unsaved = sum(n for (_, state), n in deltas.items() if state in _FINISHED)
            excess = counted + unsaved - keep
        if before is None and excess <= 0:
            return Pruned(0, more=False)
        start = self.after
        end, size = conn.execute(sql.PRUNE_WINDOW_END, (start, self.window)).fetchone()
        last = size < self.window
        self.after = 0 if last else end
        rows: list[tuple[int, str, str]] = []
        if size and before is not None:
            params = {"start": start, "end": end, "before": before}
            rows = conn.execute(sql.PRUNE_OLD, params).fetchall()
        old = len(rows)
        excess -= old
        if size and excess > 0:
            params = {"start": start, "end": end, "excess": excess}
            oldest = conn.execute(sql.PRUNE_OLDEST, params).fetchall()
            if len(oldest) == excess:  # it may have stopped inside the window
                self.after = max(row[0] for row in oldest)
                last = False
            excess -= len(oldest)
            rows += oldest
        if rows:
            self._forget(conn, rows, deltas)
            self._found_this_lap = True
        more = excess > 0 or old >= self.window // 2
        if last:
            # A whole lap that found nothing: what is over the count cannot go now
            # (parents waiting for their children); the next round tries again.
            more = more and self._found_this_lap
            self._found_this_lap = False
        return Pruned(len(rows), more)

    @staticmethod
    def _forget(conn: sqlite3.Connection, rows: list[tuple[int, str, str]], deltas: Deltas) -> None:
        for (destination, state), n in Counter((d, s) for _, d, s in rows).items():
            deltas[destination, state] -= n
        deps.forget(conn, [row[0] for row in rows])


def limit_wal(conn: sqlite3.Connection, max_wal_bytes: int) -> None:
    """Have SQLite cut the WAL file back to `max_wal_bytes` whenever it rewinds it."""
    conn.execute(f"PRAGMA journal_size_limit = {int(max_wal_bytes)}")


def wal_bytes(path: str) -> int:
    """The size of the journal's WAL file (0 if there is none)."""
    try:
        return os.path.getsize(path + "-wal")
    except FileNotFoundError:
        return 0


def checkpoint(
    conn: sqlite3.Connection,
    path: str,
    max_wal_bytes: int,
    busy_timeout_ms: int,
    *,
    passive: bool = True,
) -> tuple[int, int, int] | None:
    """Checkpoint the WAL, outside any transaction, on the writer's connection:
    PASSIVE (if `passive`) while the file is under `max_wal_bytes`, else TRUNCATE,
    waiting at most `CHECKPOINT_WAIT_MS` for other connections. Returns SQLite's
    (busy, frames in the WAL, frames copied), None if nothing ran; busy is 1 if a
    reader or writer kept it from finishing."""
    if wal_bytes(path) <= max_wal_bytes:
        if not passive:
            return None
        row = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    else:
        conn.execute(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
        try:
            row = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout = {busy_timeout_ms}")
    busy, frames, copied = row
    return int(busy), int(frames), int(copied)
