"""A training or backtest worker (WORKER_KIND), one of several, named by
WORKER_ID. A start, of an operation the api names, answers at once; the job then
runs in the background for KTRDR_JOB_SECONDS (a training job as an asyncio
task, a backtest in a thread), logs its progress, and reports its status
to the api at KTRDR_API_URL half way and at the end. A job with an unknown
strategy fails (a training job raises once it has reported it). The
worker keeps each job by its operation. No tracing code."""
import asyncio
import logging
import os
import threading
import time

import httpx
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


# How long a job runs, and where it reports its progress.
JOB_SECONDS = float(os.environ.get("KTRDR_JOB_SECONDS", "0.2"))
API_URL = os.environ.get("KTRDR_API_URL", "")
STRATEGIES = {"momentum", "mean_reversion", "bench"}

# The jobs started, by operation: training as an asyncio task, backtests
# in a thread of their own; they run on after their request was answered.
_jobs = {}
_client = httpx.AsyncClient(timeout=10.0)
_sync_client = httpx.Client(timeout=10.0)


def _report(operation: dict):
    return {k: operation[k] for k in ("status", "progress", "result", "error")}


async def _training_job(rid: str, operation: dict):
    """Trains in steps, logging each and telling the api half way and at
    the end."""
    op_id = operation["operation_id"]
    try:
        for step in range(1, 5):
            await asyncio.sleep(JOB_SECONDS / 4)
            operation["progress"] = step * 25
            log.info("request_id=%s operation=%s training job progress %d%%", rid, op_id,
                     operation["progress"])
            if step == 2:
                await _client.post(f"{API_URL}/api/v1/operations/{op_id}/status",
                                   json=_report(operation))
        if operation["strategy"] not in STRATEGIES:
            raise ValueError(f"unknown strategy {operation['strategy']}")
        operation.update(status="completed", result={"accuracy": 0.87})
        log.info("request_id=%s operation=%s training job done", rid, op_id)
    except ValueError as e:
        operation.update(status="failed", error=str(e))
        log.info("request_id=%s operation=%s training job failed: %s", rid, op_id, e)
    try:
        await _client.post(f"{API_URL}/api/v1/operations/{op_id}/status",
                           json=_report(operation))
    except httpx.HTTPError as e:
        log.info("request_id=%s operation=%s training job could not report: %s", rid, op_id, e)
    if operation["status"] == "failed":
        raise ValueError(operation["error"])


def _backtest_job(rid: str, operation: dict):
    """The same, blocking, in a thread."""
    op_id = operation["operation_id"]
    try:
        for step in range(1, 5):
            time.sleep(JOB_SECONDS / 4)
            operation["progress"] = step * 25
            log.info("request_id=%s operation=%s backtest job progress %d%%", rid, op_id,
                     operation["progress"])
            if step == 2:
                _sync_client.post(f"{API_URL}/api/v1/operations/{op_id}/status",
                                  json=_report(operation))
        if operation["strategy"] not in STRATEGIES:
            raise ValueError(f"unknown strategy {operation['strategy']}")
        operation.update(status="completed", result={"sharpe": 1.4, "trades": 42})
        log.info("request_id=%s operation=%s backtest job done", rid, op_id)
    except ValueError as e:
        operation.update(status="failed", error=str(e))
        log.info("request_id=%s operation=%s backtest job failed: %s", rid, op_id, e)
    try:
        _sync_client.post(f"{API_URL}/api/v1/operations/{op_id}/status", json=_report(operation))
    except httpx.HTTPError as e:
        log.info("request_id=%s operation=%s backtest job could not report: %s", rid, op_id, e)


async def _start(kind: str, body: dict, request: Request):
    if kind != KIND:
        raise HTTPException(status_code=404, detail=f"this is a {KIND} worker")
    rid = request.query_params.get("request_id", "")
    if not body.get("operation_id"):
        raise HTTPException(status_code=422, detail="the api names the operation: operation_id")
    operation = {"operation_id": body["operation_id"], "worker_id": WORKER_ID, "kind": kind,
                 "status": "running", "progress": 0, "result": None, "error": None,
                 "strategy": body.get("strategy"), "request_id": rid}
    log.info("request_id=%s operation=%s %s start %s %s", rid, operation["operation_id"], kind,
             body.get("symbol"), body.get("strategy"))
    await asyncio.sleep(0.02)  # set the job up
    op_id = operation["operation_id"]
    if kind == "training":
        _jobs[op_id] = asyncio.get_running_loop().create_task(_training_job(rid, operation))
    else:
        _jobs[op_id] = threading.Thread(target=_backtest_job, args=(rid, operation), daemon=True)
        _jobs[op_id].start()
    return dict(operation)


@app.post("/training/start")
async def training_start(body: dict, request: Request):
    return await _start("training", body, request)


@app.post("/backtests/start")
async def backtest_start(body: dict, request: Request):
    return await _start("backtest", body, request)
