"""A queue's Prometheus metrics, served by a FastAPI app at /metrics.

    pip install 'asyncq[prometheus]' fastapi uvicorn
    uvicorn examples.prometheus_fastapi:app      # then: curl localhost:8000/metrics

The journal is `outbound.db` in the working directory, or $ASYNCQ_JOURNAL.
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from asyncq import Queue, Retry
from asyncq.contrib.prometheus import QueueMetrics

queue = Queue(os.environ.get("ASYNCQ_JOURNAL", "outbound.db"), concurrency=8)
queue.destination("crm", retry=Retry(schedule=[60, 300, 1800]))
metrics = QueueMetrics(queue)  # before the queue starts; in the default registry


@queue.task(name="post_deal", destination="crm")
async def post_deal(deal_id: int) -> int:
    return 200  # a real handler would call the CRM here


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with queue:  # also starts the metrics' refresh of the journal's figures
        yield


app = FastAPI(lifespan=lifespan)


@app.post("/deals/{deal_id}/won", status_code=202)
async def deal_won(deal_id: int) -> dict[str, int]:
    job = await post_deal.submit(deal_id)
    return {"job": job.id}


@app.get("/metrics")
async def prometheus_metrics() -> Response:
    # The journal's figures as of this scrape (a read of a few rows), rather than
    # as of the last background refresh; collecting itself never waits.
    await metrics.refresh()
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
