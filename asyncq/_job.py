"""The job record, its states, the JSON codec and the `Job` handle."""

from __future__ import annotations

import enum
import json
import reprlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._errors import PayloadError

if TYPE_CHECKING:
    from ._queue import Queue

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024


class JobState(enum.StrEnum):
    """Where a job is in its life.

    ========== ============================================= =====================================
    state      how a job enters it                           how it leaves it
    ========== ============================================= =====================================
    pending    submitted; a retry is scheduled; a lease      claimed (running), cancelled
               expired; released at shutdown; redriven
    running    claimed by a worker process under a lease     succeeded, dead, pending (retry,
                                                             release, expired lease)
    succeeded  the handler returned                          never
    dead       the handler failed for good                   redriven (pending)
    cancelled  `queue.cancel` before it started              never
    ========== ============================================= =====================================
    """

    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"
    CANCELLED = "cancelled"


#: The legal transitions, in one table (the journal enforces them in SQL).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.RUNNING, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.SUCCEEDED, JobState.DEAD, JobState.PENDING}),
    JobState.SUCCEEDED: frozenset(),
    JobState.DEAD: frozenset({JobState.PENDING}),
    JobState.CANCELLED: frozenset(),
}


@dataclass(frozen=True, slots=True, kw_only=True)
class JobInfo:
    """A snapshot of one job as the journal holds it. Times are seconds since the epoch."""

    id: int
    task: str
    state: JobState
    destination: str
    priority: int
    payload: dict[str, Any] | None  # None if what the journal holds is not JSON
    key: str | None
    attempts: int
    created_at: float
    run_at: float
    started_at: float | None
    finished_at: float | None
    result: Any
    last_error: str | None
    snoozes: int = 0  # RetryAfter answers, which do not use attempts
    #: One entry per failed attempt: (started_at, ended_at, first line of the error).
    history: list[tuple[float, float, str]] = field(default_factory=list)


def _compact_json_encoder() -> Callable[[Any], str]:
    """What `json.dumps(value, separators=(",", ":"), ensure_ascii=False,
    allow_nan=False)` returns, built once.

    `JSONEncoder.encode` builds its C encoder anew on every call, half the cost of
    encoding a small payload; this builds it once (falling back to `encode` where
    there is no C accelerator). Without a circular-reference check, a circular
    value fails as a `RecursionError`, as a too deeply nested one always did.
    """
    encoder = json.JSONEncoder(
        separators=(",", ":"), ensure_ascii=False, allow_nan=False, check_circular=False
    )
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return encoder.encode
    c_encode = make(
        None, encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False
    )

    def encode(value: Any) -> str:
        return "".join(c_encode(value, 0))

    return encode


_encode_json = _compact_json_encoder()
# What a value JSON cannot hold raises while encoding.
_UNENCODABLE = (TypeError, ValueError, RecursionError)


def encode_payload(task: str, payload: dict[str, Any], max_bytes: int) -> str:
    """The payload as compact JSON text, or `PayloadError` naming the task and the reason."""
    try:
        text = _encode_json(payload)
    except _UNENCODABLE as exc:
        raise PayloadError(task, f"payload is not JSON-serialisable ({exc})") from None
    # A character is at most 4 bytes in UTF-8: only long texts need encoding to be measured.
    if len(text) * 4 > max_bytes and (size := len(text.encode())) > max_bytes:
        raise PayloadError(task, f"payload is {size} bytes, over the {max_bytes}-byte limit")
    return text


def encode_payloads(task: str, payloads: Sequence[dict[str, Any]], max_bytes: int) -> str:
    """Many payloads as the JSON text of one array, or `PayloadError` for the first bad one.

    Sizes are not checked here: the journal checks each element's size as it inserts.
    """
    try:
        return _encode_json(payloads if isinstance(payloads, list | tuple) else list(payloads))
    except _UNENCODABLE as whole:
        for index, payload in enumerate(payloads):  # find the one to name
            try:
                encode_payload(task, payload, max_bytes)
            except PayloadError as exc:
                raise PayloadError(task, f"payload {index}: {exc.reason}") from None
        raise PayloadError(task, f"payloads are not JSON-serialisable ({whole})") from None


def encode_result(value: Any) -> str:
    """A handler's return value as JSON text (a value JSON cannot hold is stored as its repr)."""
    if value is None:  # most calls return nothing: skip the encoder
        return "null"
    try:
        return _encode_json(value)
    except _UNENCODABLE:
        # reprlib: bounded in depth and length, so even a self-nesting value has one.
        return json.dumps({"unserialisable_result": reprlib.repr(value)})


class Job:
    """A handle on a submitted job: its id, and a way to wait for its outcome."""

    __slots__ = ("_queue", "created", "id")

    def __init__(self, queue: Queue, job_id: int, *, created: bool = True) -> None:
        self._queue = queue
        self.id = job_id
        #: False when `key=` matched a live job and this handle points at that job.
        self.created = created

    async def result(self, timeout: float | None = None) -> Any:
        """Wait for the job to finish and return the handler's value.

        Raises `JobDead` or `JobCancelled`, or `TimeoutError` after `timeout` seconds.
        """
        return await self._queue._wait_result(self.id, timeout)

    async def info(self) -> JobInfo:
        """The job as the journal holds it now."""
        return await self._queue.get(self.id)

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id and other._queue is self._queue

    def __hash__(self) -> int:
        return hash(self.id)
