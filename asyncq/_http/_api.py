"""The HTTP methods of `Queue`: `submit_http`, `deliver_http`, and the built-in
delivery task that every queue registers (so that any worker process can run
the jobs `submit_http` writes)."""

from __future__ import annotations

import functools
import math
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, cast

from .._context import current_job, running_job
from .._dependencies import After
from .._errors import PermanentFailure
from .._job import Job
from .._tasks import Task, TaskRegistry
from .._validate import check_name
from ._config import Http
from ._deliver import HttpResult, deliver
from ._request import HTTP_TASK, MISSING, Headers, body_bytes, checked_request
from ._request import delivery_payload as _payload
from ._session import HttpClients

if TYPE_CHECKING:
    from .._clock import Clock
    from .._destinations import Destinations
    from .._queue import Queue


def http_concurrency(concurrency: int | None, http: Http | None) -> int | None:
    """A destination's concurrency cap, with `Http(connections=)` taken into it."""
    if http is None or http.connections is None:
        return concurrency
    return int(min(math.inf if concurrency is None else concurrency, http.connections))


class HttpMethods:
    """HTTP delivery, as methods of `Queue` (a base class, like `Submitting`)."""

    _registry: TaskRegistry
    _destinations: Destinations
    clock: Clock
    _http_clients: HttpClients
    _http_task: Task[..., HttpResult]

    def _add_http_task(self) -> None:
        """Register the built-in delivery task (called once, by `Queue.__init__`)."""
        self._http_clients = HttpClients()
        queue = cast("Queue", self)

        async def deliver_job(
            url: str,
            method: str,
            headers: dict[str, str],
            body: str | None,
            base64: bool,
            webhook_id: str,
        ) -> HttpResult:
            try:  # checked at submit; a row changed by hand in the journal is not
                checked = checked_request(method, url, headers)
                sent = body_bytes(body, base64)
            except (TypeError, ValueError) as exc:
                raise PermanentFailure(f"the job's request cannot be sent: {exc}") from None
            return await self._deliver(*checked, sent, webhook_id)

        self._http_task = Task(
            queue, deliver_job, name=HTTP_TASK, destination="default", timeout=None
        )
        self._registry.add(self._http_task)

    async def submit_http(
        self,
        destination: str,
        url: str,
        *,
        method: str = "POST",
        json: Any = MISSING,
        body: str | bytes | None = None,
        headers: dict[str, str] | None = None,
        key: str | None = None,
        delay: float | None = None,
        at: float | None = None,
        priority: int = 0,
        after: After | None = None,
    ) -> Job[HttpResult]:
        """Write a job that sends one HTTP request to `url`, made, signed, guarded
        and classified as `destination`'s `Http(...)` says; returns once it is durable.

        `json=` (sent as compact JSON) or `body=` (str or bytes); `headers` are added
        to the destination's. The options are `submit`'s. A URL that is not http(s)
        or is malformed, a bad method or header, raises `ValueError` or `TypeError`,
        and nothing is written. Its result is an `HttpResult`.
        """
        payload = _payload(url, method=method, json=json, body=body, headers=headers)
        return await self._submit_payload(  # type: ignore[attr-defined,no-any-return]
            self._http_task,
            payload,
            destination=check_name(destination, "destination name"),
            key=key,
            delay=delay,
            at=at,
            priority=priority,
            after=after,
        )

    async def deliver_http(
        self,
        url: str,
        *,
        method: str = "POST",
        json: Any = MISSING,
        body: str | bytes | None = None,
        headers: dict[str, str] | None = None,
        webhook_id: str | None = None,
    ) -> HttpResult:
        """Inside a handler: send one request now, as the job's destination's
        `Http(...)` says (guard, signing, timeouts, classification), on the
        queue's pooled session. For requests made when the job runs (a typed
        task of your own); raises what a failed delivery raises, so the job is
        retried or dead-lettered as a `submit_http` job would be.

        `webhook_id` defaults to `job_<id>`: the same on every attempt of the job.
        """
        job = current_job()
        payload = _payload(url, method=method, json=json, body=body, headers=headers)
        return await self._deliver(
            payload["method"],
            payload["url"],
            tuple(payload["headers"].items()),
            body_bytes(payload["body"], payload["base64"]),
            webhook_id or f"job_{job.id}",
        )

    def _deliver(
        self, method: str, url: str, headers: Headers, body: bytes, webhook_id: str
    ) -> Coroutine[Any, Any, HttpResult]:
        # Not a coroutine of its own: one frame less to resume at every await inside.
        destination = running_job.get().destination  # the handler's own job
        http = self._destinations.policy_for(destination).http or _DEFAULT_HTTP
        pause = functools.partial(cast("Queue", self).pause, destination)
        return deliver(
            http,
            self._http_clients,
            self.clock,
            method=method,
            url=url,
            headers=headers,
            body=body,
            webhook_id=webhook_id,
            on_gone=pause,
        )


_DEFAULT_HTTP = Http()
