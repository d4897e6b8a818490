"""Dependencies between jobs, inside the SQLite journal's transactions.

A STUB, made on the `cancel` branch so that the cancel paths can call it: the
`deps` branch owns this module, and its real `settle_children` replaces this one.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._sqlite_writes import Deltas


def settle_children(
    conn: sqlite3.Connection,
    succeeded: Sequence[int],
    failed: Sequence[int],
    now: float,
    deltas: Deltas,
) -> list[int]:
    """Jobs `succeeded` succeeded and jobs `failed` ended dead or cancelled in this
    transaction: unblock their children, or cancel them (and their subtrees) as each
    child's on_parent_failure says. Returns the ids of the jobs it cancelled."""
    return []
