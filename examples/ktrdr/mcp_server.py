"""ktrdr-mcp: an MCP-style tool server (the plan's Phase 3.5.2): an agent
calls a tool with POST /tools/{tool} and a JSON body of arguments, and the
server calls the api. No tracing code."""
import logging
import os
import uuid

import httpx
from fastapi import FastAPI, HTTPException, Request

SERVICE = os.environ.get("OTEL_SERVICE_NAME", "ktrdr-mcp")
API_URL = os.environ["KTRDR_API_URL"]
logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {SERVICE} %(message)s")
log = logging.getLogger(SERVICE)

# tool -> the api call it makes
TOOLS = {
    "train_model": ("POST", "/api/v1/training/start"),
    "run_backtest": ("POST", "/api/v1/backtests/start"),
    "load_data": ("POST", "/api/v1/data/load"),
    "get_operation": ("GET", "/api/v1/operations/{operation_id}"),
}

_client = httpx.AsyncClient(timeout=30.0)
app = FastAPI(title=SERVICE)


@app.get("/health")
async def health():
    return {"status": "ok", "service": SERVICE}


@app.post("/tools/{tool}")
async def call_tool(tool: str, arguments: dict, request: Request):
    if tool not in TOOLS:
        raise HTTPException(status_code=404, detail=f"no tool {tool}")
    rid = request.query_params.get("request_id") or uuid.uuid4().hex
    log.info("request_id=%s tool %s", rid, tool)
    method, path = TOOLS[tool]
    try:
        url = API_URL + path.format(**arguments)
    except KeyError as e:
        raise HTTPException(status_code=422, detail=f"{tool} needs {e}") from None
    reply = await _client.request(method, url, params={"request_id": rid},
                                  json=arguments if method == "POST" else None)
    return {"tool": tool, "status": reply.status_code, "result": reply.json()}
