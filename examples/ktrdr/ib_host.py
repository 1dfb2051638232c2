"""ktrdr-ib-host-service: stands in for the host service that talks to
Interactive Brokers. No tracing code."""
import asyncio
import logging
import os

from fastapi import FastAPI, Request

SERVICE = os.environ.get("OTEL_SERVICE_NAME", "ktrdr-ib-host-service")
logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {SERVICE} %(message)s")
log = logging.getLogger(SERVICE)

app = FastAPI(title="ktrdr-ib-host-service")


@app.post("/data/historical")
async def historical(body: dict, request: Request):
    rid = request.query_params.get("request_id", "")
    log.info("request_id=%s historical %s %s", rid, body.get("symbol"), body.get("timeframe"))
    await asyncio.sleep(0.01)  # the broker round trip
    return {"symbol": body.get("symbol"), "timeframe": body.get("timeframe"), "bars": 250}
