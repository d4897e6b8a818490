"""HTTP delivery (the `asyncq[http]` extra): configuration, classification,
signing, the address guard, and the delivery itself. Only `_session.py` and
`_deliver.py` use aiohttp, and they import it when a delivery runs."""

from ._api import HttpMethods, http_concurrency
from ._classify import HttpResponse, Verdict, classify_response, parse_retry_after
from ._config import Http
from ._deliver import HttpResult
from ._errors import (
    AddressRefused,
    HttpConnectionFailed,
    HttpExtraMissing,
    HttpRejected,
    HttpRetryAfter,
    HttpStatusError,
    HttpTimeout,
)
from ._request import HTTP_TASK

__all__ = [
    "HTTP_TASK",
    "AddressRefused",
    "Http",
    "HttpConnectionFailed",
    "HttpExtraMissing",
    "HttpMethods",
    "HttpRejected",
    "HttpResponse",
    "HttpResult",
    "HttpRetryAfter",
    "HttpStatusError",
    "HttpTimeout",
    "Verdict",
    "classify_response",
    "http_concurrency",
    "parse_retry_after",
]
