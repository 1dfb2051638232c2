"""A training or backtest worker (WORKER_KIND), one of several, named by
WORKER_ID. No tracing code."""
import asyncio
import logging
import os
import uuid

from fastapi import FastAPI, HTTPException, Request

KIND = os.environ["WORKER_KIND"]
WORKER_ID = os.environ["WORKER_ID"]
SERVICE = os.environ.get("OTEL_SERVICE_NAME", f"ktrdr-{KIND}-worker-{WORKER_ID}")
logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {SERVICE} %(message)s")
log = logging.getLogger(SERVICE)

app = FastAPI(title=SERVICE)


@app.get("/health")
async def health():
    return {"status": "ok", "worker_id": WORKER_ID, "kind": KIND}


# The jobs running in the background, after their request was answered.
_jobs = set()


async def _job(rid: str, kind: str):
    await asyncio.sleep(0.05)
    log.info("request_id=%s %s job done", rid, kind)
    _jobs.discard(asyncio.current_task())


async def _start(kind: str, body: dict, request: Request):
    if kind != KIND:
        raise HTTPException(status_code=404, detail=f"this is a {KIND} worker")
    rid = request.query_params.get("request_id", "")
    log.info("request_id=%s %s start %s %s", rid, kind, body.get("symbol"), body.get("strategy"))
    await asyncio.sleep(0.02)  # set the job up
    _jobs.add(asyncio.get_running_loop().create_task(_job(rid, kind)))
    return {"operation_id": uuid.uuid4().hex, "worker_id": WORKER_ID, "kind": kind,
            "status": "running", "request_id": rid}


@app.post("/training/start")
async def training_start(body: dict, request: Request):
    return await _start("training", body, request)


@app.post("/backtests/start")
async def backtest_start(body: dict, request: Request):
    return await _start("backtest", body, request)
