import asyncio
import shutil
import tempfile
from pathlib import Path

from asyncq import Queue, current_job

workdir = Path(tempfile.mkdtemp(prefix="asyncq-pipeline-"))
queue = Queue(workdir / "pipeline.db", concurrency=8)


@queue.task(name="fetch_contact", destination="crm")
async def fetch_contact(contact_id: int) -> dict[str, str]:
    return {"email": f"contact{contact_id}@example.com"}  # a real one calls the CRM


@queue.task(name="enrich", destination="enrichment")
async def enrich() -> dict[str, str]:
    (contact,) = current_job().parents.values()  # what fetch_contact returned
    return {**contact, "company": "Example Inc."}  # a real one calls an enrichment API


@queue.task(name="notify", destination="chat")
async def notify(channel: str) -> str:
    (profile,) = current_job().parents.values()
    message = f"#{channel}: {profile['email']} works at {profile['company']}"
    print(message)  # a real one posts it to the chat
    return message


async def main() -> None:
    async with queue:
        # All three are written now; enrich and notify wait ("blocked") for their parent.
        fetched = await fetch_contact.submit(7)
        enriched = await enrich.options(after=[fetched]).submit()
        notified = await notify.options(after=[enriched]).submit("sales")
        await notified.result(timeout=10)
        # A fan-out: one submit_many, every job after the same parent.
        notes = await notify.submit_many(
            [{"channel": c} for c in ("ops", "exec")], after=[enriched]
        )
        for job in notes:
            await job.result(timeout=10)
        stats = await queue.stats()
        print(f"{stats.succeeded} jobs succeeded, {stats.blocked} blocked")


try:
    asyncio.run(main())
finally:
    shutil.rmtree(workdir)
