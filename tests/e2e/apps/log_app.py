"""A FastAPI app that calls nothing and only logs (no tracing code): each
request writes one line naming its request id, after a pause that lets
concurrent requests interleave on the event loop's one thread (or, for
the `def` handler, in anyio's worker threads), so that only the asyncio
task (or the task awaiting the worker) tells their lines apart."""
import asyncio
import logging
import time

from fastapi import FastAPI

logging.basicConfig(level=logging.INFO, format="%(levelname)s:%(name)s:%(message)s")
log = logging.getLogger("logapp")
app = FastAPI()


@app.get("/item")
async def item(request_id: str):
    await asyncio.sleep(0.05)
    log.info("request_id=%s handled", request_id)
    return {"request_id": request_id}


@app.get("/sync_item")
def sync_item(request_id: str):
    time.sleep(0.05)
    log.info("request_id=%s handled", request_id)
    return {"request_id": request_id}
