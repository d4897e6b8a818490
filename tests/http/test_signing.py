"""Standard Webhooks signatures, verified by the independent `standardwebhooks`
package; rotation; a webhook-id stable across retries; secrets never in the journal."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from asyncq import Http, Queue, Retry
from asyncq.testing import run_until_idle

from .conftest import Receiver, Seen

MakeQueue = Callable[..., Queue]
RAW = b'{"raw": "bytes \xc3\xa9"}'  # sent as given (standardwebhooks reads JSON only)
NEW = "whsec_" + base64.b64encode(b"the new secret, 32 bytes long...").decode()
OLD = "whsec_" + base64.b64encode(b"the old secret, 32 bytes long...").decode()


def verify(secret: str, seen: Seen) -> object:
    return Webhook(secret).verify(seen.body, seen.headers)


def real_time_queue(make_queue: MakeQueue, **options: object) -> Queue:
    # Receivers check the signature's timestamp against their own clock.
    from asyncq import SystemClock

    return make_queue(clock=SystemClock(), **options)


async def test_a_delivery_is_signed_as_standard_webhooks_says(
    make_queue: MakeQueue, receiver: Receiver
) -> None:
    queue = real_time_queue(make_queue)
    queue.destination("crm", http=Http(allow=["127.0.0.1"], signing_secret=NEW))
    async with queue:
        job = await queue.submit_http("crm", receiver.url("/hook"), json={"deal": 42})
        await job.result(timeout=10)
    (seen,) = receiver.seen
    assert verify(NEW, seen) == {"deal": 42}
    with pytest.raises(WebhookVerificationError):
        verify(OLD, seen)
    assert seen.headers["webhook-id"].startswith("msg_")


async def test_while_rotating_both_secrets_verify(
    make_queue: MakeQueue, receiver: Receiver
) -> None:
    queue = real_time_queue(make_queue)
    queue.destination("crm", http=Http(allow=["127.0.0.1"], signing_secret=[NEW, OLD]))
    async with queue:
        job = await queue.submit_http("crm", receiver.url("/hook"), json={"deal": 7})
        await job.result(timeout=10)
    (seen,) = receiver.seen
    assert len(seen.headers["webhook-signature"].split(" ")) == 2
    assert verify(NEW, seen) == verify(OLD, seen) == {"deal": 7}


async def test_the_webhook_id_is_the_same_on_every_retry(
    make_queue: MakeQueue, receiver: Receiver
) -> None:
    receiver.hook_statuses = [503, 500]  # down twice, then up
    queue = real_time_queue(make_queue)
    http = Http(allow=["127.0.0.1"], signing_secret=NEW)
    queue.destination("crm", http=http, retry=Retry(schedule=[0, 0]))
    async with queue:
        job = await queue.submit_http("crm", receiver.url("/hook"), body=RAW)
        other = await queue.submit_http("crm", receiver.url("/status/200"), body=b"another")
        assert (await job.result(timeout=10))["status"] == 204
        await other.result(timeout=10)
    attempts = [s for s in receiver.seen if s.body == RAW]
    assert len(attempts) == 3
    assert len({s.headers["webhook-id"] for s in attempts}) == 1
    (second,) = [s for s in receiver.seen if s.body == b"another"]
    assert second.headers["webhook-id"] != attempts[0].headers["webhook-id"]
    for seen in attempts:
        Webhook(NEW).verify(seen.body, seen.headers)  # raises if it does not verify


def journal_bytes(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())


async def test_secrets_are_never_written_to_the_journal(
    make_queue: MakeQueue, receiver: Receiver, db_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_SECRETS", f"{NEW} {OLD}")
    queue = real_time_queue(make_queue)
    queue.destination("code", http=Http(allow=["127.0.0.1"], signing_secret=NEW))
    queue.destination("env", http=Http(allow=["127.0.0.1"], signing_secret_env="CRM_SECRETS"))
    queue.destination("down", http=Http(allow=["127.0.0.1"], signing_secret=OLD), retry=Retry([]))
    path = Path(db_path)
    async with queue:
        jobs = [
            await queue.submit_http(dest, receiver.url(url), json={"n": n})
            for n, (dest, url) in enumerate(
                [("code", "/hook"), ("env", "/hook"), ("down", "/status/404")]
            )
        ]
        await run_until_idle(queue)
        assert [(await queue.get(j.id)).state for j in jobs] == ["succeeded", "succeeded", "dead"]
        written = journal_bytes(path)  # the WAL, before a checkpoint folds it in
        assert Path(f"{path}-wal").exists()
        assert len(written) > 0
    written += journal_bytes(path)
    assert len(receiver.seen) == 3
    for secret in (NEW, OLD):
        key = base64.b64decode(secret.removeprefix("whsec_"))
        for form in (secret.encode(), secret.removeprefix("whsec_").encode(), key):
            assert form not in written


async def test_a_missing_environment_secret_fails_the_delivery_and_says_why(
    make_queue: MakeQueue, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_SECRET", raising=False)
    queue = make_queue()
    http = Http(allow=["127.0.0.1"], signing_secret_env="NO_SUCH_SECRET")
    queue.destination("crm", http=http, retry=Retry.never())
    async with queue:
        job = await queue.submit_http("crm", receiver.url("/hook"))
        await run_until_idle(queue)
        info = await queue.get(job.id)
    assert info.last_error is not None
    assert "NO_SUCH_SECRET is not set" in info.last_error.splitlines()[0]
    assert receiver.seen == []  # nothing unsigned went out


@pytest.mark.parametrize(
    ("secret", "message"),
    [
        ("whsec_not base64!", "secret 1 is not base64"),
        ("whsec_" + base64.b64encode(b"short").decode(), "shorter than 16 bytes"),
        ([], "no secret given"),
    ],
)
def test_a_bad_secret_is_refused_at_declaration_without_showing_it(
    secret: str | list[str], message: str
) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        Http(signing_secret=secret)
    if isinstance(secret, str):
        assert secret.removeprefix("whsec_") not in str(caught.value)


def test_the_secret_is_not_in_the_repr() -> None:
    assert NEW.removeprefix("whsec_") not in repr(Http(signing_secret=NEW))
