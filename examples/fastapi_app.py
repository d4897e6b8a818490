"""A FastAPI service that sends signed webhooks through asyncq.

POST /deals/{id}/won answers 202 at once; the webhook goes out later, signed
(Standard Webhooks), paced, retried, and dead-lettered if the receiver never
takes it. GET /dead-letters lists what could not be delivered; POST
/dead-letters/redrive sends it all again.

Configured from the environment:

    WEBHOOK_URL         where the webhooks go
    WEBHOOK_SECRET      the signing secret, whsec_... (space-separated while rotating)
    WEBHOOK_ALLOW       networks allowed past the SSRF guard (for a receiver on
                        127.0.0.1 while trying it out; empty in production)
    ASYNCQ_JOURNAL      the journal file (default outbound.db)
    ASYNCQ_CONCURRENCY  worker coroutines in this process (0: only submit, and let
                        `asyncq worker examples.fastapi_app:queue` deliver)

Run: uvicorn examples.fastapi_app:app (or python examples/fastapi_app.py).
"""

from __future__ import annotations

import os

from fastapi import FastAPI

from asyncq import Http, Queue, Rate, Retry
from asyncq.contrib.fastapi import lifespan

WEBHOOK_URL = os.environ.get("WEBHOOK_URL", "http://127.0.0.1:9000/hooks")

queue = Queue(
    os.environ.get("ASYNCQ_JOURNAL", "outbound.db"),
    concurrency=int(os.environ.get("ASYNCQ_CONCURRENCY", "16")),
)
queue.destination(
    "partner",
    rate=Rate(50, per=1),
    retry=Retry(schedule=[5, 30, 300]),  # then the dead letters
    http=Http(
        signing_secret_env="WEBHOOK_SECRET",
        allow=os.environ.get("WEBHOOK_ALLOW", "").split(),
        timeout=10,
    ),
)

app = FastAPI(lifespan=lifespan(queue))


@app.post("/deals/{deal_id}/won", status_code=202)
async def deal_won(deal_id: int) -> dict[str, int]:
    job = await queue.submit_http(
        "partner",
        WEBHOOK_URL,
        json={"type": "deal.won", "deal": deal_id},
        key=f"deal-won-{deal_id}",  # a second click while it is pending sends nothing more
    )
    return {"job": job.id}  # 202 at once: the webhook is durable, and goes out later


@app.get("/dead-letters")
async def dead_letters() -> list[dict[str, object]]:
    return [
        {
            "id": dead.id,
            "destination": dead.destination,
            "attempts": dead.attempts,
            "error": (dead.last_error or "").splitlines()[0],  # status and body excerpt
        }
        for dead in await queue.dead_letters()
    ]


@app.post("/dead-letters/redrive")
async def redrive() -> dict[str, int]:
    return {"redriven": await queue.redrive(destination="partner")}


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
