"""asyncq: a durable, asyncio-native job queue for outbound API calls."""

from ._backlog import BacklogCause, BacklogEvent
from ._clock import Clock, SystemClock
from ._context import JobContext, current_job
from ._errors import (
    AsyncqError,
    CircuitOpen,
    JobCancelled,
    JobDead,
    JobNotFound,
    JournalCorrupt,
    JournalError,
    LeaseExpired,
    NotInJob,
    PayloadError,
    PermanentFailure,
    QueueFailed,
    QueueNotRunning,
    RetryAfter,
    UnknownTask,
    WrongEventLoop,
)
from ._http import (
    AddressRefused,
    Http,
    HttpConnectionFailed,
    HttpExtraMissing,
    HttpRejected,
    HttpResponse,
    HttpResult,
    HttpRetryAfter,
    HttpStatusError,
    HttpTimeout,
    Verdict,
    classify_response,
)
from ._job import Job
from ._journal import DestinationCounts, JournalStats
from ._policy import Circuit, Rate, Retry
from ._queue import Queue
from ._records import JobInfo, JobState
from ._tasks import Task, TaskOptions

__version__ = "0.1.0"

__all__ = [
    "AddressRefused",
    "AsyncqError",
    "BacklogCause",
    "BacklogEvent",
    "Circuit",
    "CircuitOpen",
    "Clock",
    "DestinationCounts",
    "Http",
    "HttpConnectionFailed",
    "HttpExtraMissing",
    "HttpRejected",
    "HttpResponse",
    "HttpResult",
    "HttpRetryAfter",
    "HttpStatusError",
    "HttpTimeout",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobDead",
    "JobInfo",
    "JobNotFound",
    "JobState",
    "JournalCorrupt",
    "JournalError",
    "JournalStats",
    "LeaseExpired",
    "NotInJob",
    "PayloadError",
    "PermanentFailure",
    "Queue",
    "QueueFailed",
    "QueueNotRunning",
    "Rate",
    "Retry",
    "RetryAfter",
    "SystemClock",
    "Task",
    "TaskOptions",
    "UnknownTask",
    "Verdict",
    "WrongEventLoop",
    "__version__",
    "classify_response",
    "current_job",
]
