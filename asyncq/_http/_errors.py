"""The errors of HTTP deliveries. Each says on its first line what happened (the
status, its reason and an excerpt of the body), which is what a dead letter's
`last_error` and `JobDead` show first."""

from __future__ import annotations

from .._errors import AsyncqError, PermanentFailure, RetryAfter


def one_line(text: str) -> str:
    """`text` with its runs of whitespace (newlines too) as single spaces."""
    return " ".join(text.split())


class HttpStatusError(AsyncqError):
    """The receiver answered with a status that is retried (a 5xx, say)."""

    def __init__(self, method: str, url: str, status: int, reason: str, excerpt: str) -> None:
        self.method = method
        self.url = url
        self.status = status
        self.excerpt = excerpt  # the first `Http(excerpt=)` bytes of the body, as text
        head = f"HTTP {status} {reason}".rstrip()
        body = one_line(excerpt)
        Exception.__init__(self, f"{head} from {method} {url}" + (f": {body}" if body else ""))


class HttpRejected(HttpStatusError, PermanentFailure):
    """The receiver refused the delivery for good (a 4xx): it is dead-lettered."""


class HttpRetryAfter(HttpStatusError, RetryAfter):
    """The receiver asked to be called again later (429 or 503 with Retry-After)."""

    def __init__(
        self, method: str, url: str, status: int, reason: str, excerpt: str, seconds: float
    ) -> None:
        super().__init__(method, url, status, reason, excerpt)
        self.seconds = float(seconds)
        self.args = (f"{self.args[0]} (Retry-After: {self.seconds:g} s)",)


class HttpConnectionFailed(AsyncqError, ConnectionError):
    """The connection failed, or was closed before the whole answer came."""

    def __init__(self, method: str, url: str, cause: BaseException) -> None:
        self.method = method
        self.url = url
        detail = str(cause) or type(cause).__name__
        super().__init__(f"{method} {url}: {type(cause).__name__}: {one_line(detail)}")


class HttpTimeout(AsyncqError, TimeoutError):
    """No complete answer within the destination's `Http(timeout=)`."""

    def __init__(self, method: str, url: str, seconds: float, what: str = "answer") -> None:
        self.method = method
        self.url = url
        self.seconds = seconds
        super().__init__(f"{method} {url}: no {what} within {seconds:g} s")


class AddressRefused(AsyncqError, PermanentFailure):
    """The address guard refused the URL's address (SSRF protection): no connection
    was made, and the job is dead-lettered."""

    def __init__(self, host: str, address: str, why: str) -> None:
        self.host = host
        self.address = address
        self.why = why
        shown = address if host.strip("[]") == address else f"{address} (for {host!r})"
        Exception.__init__(
            self,
            f"refused to connect to {shown}: {why}. asyncq's address guard refuses "
            "addresses that are not public (SSRF protection); allow them for this "
            "destination with Http(allow=[...networks]) or Http(allow_private=True)",
        )
        self.reason = str(self)


class HttpExtraMissing(AsyncqError, ImportError):
    """HTTP delivery needs aiohttp: pip install 'asyncq[http]'."""
