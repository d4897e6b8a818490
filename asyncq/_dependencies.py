"""The `after=` and `on_parent_failure=` options of a submit, checked before
anything is written. What the journal does with them is in
`_journal/_sqlite_deps.py`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from ._job import Job

#: What a child does when a parent ends dead or cancelled.
OnParentFailure = Literal["cancel", "run"]

#: Parents, as `Job` handles or job ids.
After = Iterable["Job[Any] | int"]


def parent_ids(after: After | None) -> tuple[int, ...]:
    """The distinct parent ids of `after`, in order; `TypeError` or `ValueError`
    naming `after` for anything else."""
    if after is None:
        return ()
    if isinstance(after, Job | int | str | bytes) or not isinstance(after, Iterable):
        raise TypeError(
            f"after= takes a list of jobs or job ids, not {type(after).__name__} "
            "(write after=[job])"
        )
    ids: dict[int, None] = {}
    for parent in after:
        if isinstance(parent, Job):
            job_id = parent.id
        elif isinstance(parent, int) and not isinstance(parent, bool):
            job_id = parent
        else:
            raise TypeError(
                f"after= takes jobs or job ids (int), not {type(parent).__name__}: {parent!r}"
            )
        if job_id <= 0:
            raise ValueError(f"after=: job ids are positive integers, not {job_id}")
        ids[job_id] = None
    return tuple(ids)


def check_on_parent_failure(value: object) -> OnParentFailure:
    if value == "cancel":
        return "cancel"
    if value == "run":
        return "run"
    raise ValueError(f"on_parent_failure must be 'cancel' or 'run', not {value!r}")
