"""ktrdr-api: the backend. Plain FastAPI and httpx: no tracing code.

Workers are found in a registry given by the environment; each job is
dispatched to the next healthy worker of its kind (round robin), once every
worker of that kind has been asked for its health, all at once
(asyncio.gather, so each check runs in a task of its own). Every request
carries a business id, `request_id`, in its query string, and every line
this service logs names it.
"""
import asyncio
import itertools
import uuid

import httpx
from fastapi import FastAPI, HTTPException, Request

from api_settings import IB_HOST_URL, SERVICE, WORKERS, log

_next_worker = {kind: itertools.cycle(urls) for kind, urls in WORKERS.items()}
# One client per process, as services usually do: connections to the
# workers and the host service are kept alive and reused across requests.
_client = httpx.AsyncClient(timeout=30.0)
_operations = {}

app = FastAPI(title="ktrdr-api")


def _request_id(request: Request) -> str:
    return request.query_params.get("request_id") or uuid.uuid4().hex


@app.get("/health")
async def health():
    return {"status": "ok", "service": SERVICE}


@app.get("/api/v1/data/{symbol}/{timeframe}")
async def show_data(symbol: str, timeframe: str, request: Request):
    rid = _request_id(request)
    log.info("request_id=%s data show %s %s", rid, symbol, timeframe)
    bars = [{"t": i, "close": 100.0 + i} for i in range(5)]
    return {"symbol": symbol, "timeframe": timeframe, "bars": bars, "request_id": rid}


@app.post("/api/v1/data/load")
async def load_data(body: dict, request: Request):
    rid = _request_id(request)
    log.info("request_id=%s data load %s %s", rid, body.get("symbol"), body.get("timeframe"))
    reply = await _client.post(f"{IB_HOST_URL}/data/historical",
                               params={"request_id": rid}, json=body)
    reply.raise_for_status()
    return {"loaded": reply.json(), "request_id": rid}


async def _healthy(kind: str, rid: str):
    """The workers of a kind that answer their health check, all asked at
    once before a dispatch."""
    urls = WORKERS[kind]
    replies = await asyncio.gather(
        *(_client.get(f"{url}/health", params={"request_id": rid}) for url in urls),
        return_exceptions=True)
    return {url for url, reply in zip(urls, replies)
            if not isinstance(reply, Exception) and reply.status_code == 200}


async def _dispatch(kind: str, path: str, body: dict, rid: str):
    healthy = await _healthy(kind, rid)
    worker = next((w for w in itertools.islice(_next_worker[kind], len(WORKERS[kind]))
                   if w in healthy), None)
    if worker is None:
        raise HTTPException(status_code=503, detail=f"no healthy {kind} worker")
    log.info("request_id=%s dispatch %s to %s", rid, kind, worker)
    # The api names the operation and knows it before the job starts: a
    # short job may report its end before the worker's answer is back.
    op_id = uuid.uuid4().hex
    _operations[op_id] = {"operation_id": op_id}
    reply = await _client.post(f"{worker}{path}", params={"request_id": rid},
                               json={**body, "operation_id": op_id})
    if reply.status_code >= 400:
        del _operations[op_id]
        raise HTTPException(status_code=502, detail=f"{kind} worker {worker}: {reply.status_code}")
    # What the job reported already is newer than the worker's answer.
    _operations[op_id] = {**reply.json(), **_operations[op_id]}
    return _operations[op_id]


@app.post("/api/v1/training/start")
async def start_training(body: dict, request: Request):
    return await _dispatch("training", "/training/start", body, _request_id(request))


@app.post("/api/v1/backtests/start")
async def start_backtest(body: dict, request: Request):
    return await _dispatch("backtest", "/backtests/start", body, _request_id(request))


@app.post("/api/v1/operations/{operation_id}/status")
async def operation_status(operation_id: str, body: dict):
    """A worker's job reports its progress, and its end."""
    if operation_id not in _operations:
        raise HTTPException(status_code=404, detail="no such operation")
    _operations[operation_id].update(body)
    log.info("operation=%s %s %s%%", operation_id, body.get("status"), body.get("progress"))
    return {"ok": True}


@app.get("/api/v1/operations/{operation_id}")
async def operation(operation_id: str, request: Request):
    log.info("request_id=%s operation %s", _request_id(request), operation_id)
    if operation_id not in _operations:
        raise HTTPException(status_code=404, detail="no such operation")
    return _operations[operation_id]
