"""An aiohttp service that sends signed webhooks through asyncq.

The same service as examples/fastapi_app.py (see there for the environment it
reads), on aiohttp's web server: POST /deals/{id}/won answers 202 at once,
GET /dead-letters lists what could not be delivered, POST /dead-letters/redrive
sends it again.

Run: python examples/aiohttp_app.py (PORT, default 8000, on 127.0.0.1).
"""

from __future__ import annotations

import os

from aiohttp import web

from asyncq import Http, Queue, Rate, Retry
from asyncq.contrib.aiohttp import QUEUE, setup

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


async def deal_won(request: web.Request) -> web.Response:
    deal_id = int(request.match_info["deal_id"])
    job = await request.app[QUEUE].submit_http(
        "partner",
        WEBHOOK_URL,
        json={"type": "deal.won", "deal": deal_id},
        key=f"deal-won-{deal_id}",
    )
    return web.json_response({"job": job.id}, status=202)  # the webhook goes out later


async def dead_letters(request: web.Request) -> web.Response:
    dead = await request.app[QUEUE].dead_letters()
    return web.json_response(
        [
            {
                "id": d.id,
                "destination": d.destination,
                "attempts": d.attempts,
                "error": (d.last_error or "").splitlines()[0],
            }
            for d in dead
        ]
    )


async def redrive(request: web.Request) -> web.Response:
    return web.json_response({"redriven": await request.app[QUEUE].redrive(destination="partner")})


def make_app() -> web.Application:
    app = web.Application()
    setup(app, queue)  # the queue runs while the app runs
    app.router.add_post("/deals/{deal_id}/won", deal_won)
    app.router.add_get("/dead-letters", dead_letters)
    app.router.add_post("/dead-letters/redrive", redrive)
    return app


if __name__ == "__main__":
    web.run_app(make_app(), host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
