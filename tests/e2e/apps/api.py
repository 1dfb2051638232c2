"""FastAPI app for the end-to-end tests. No tracing code: sonde sees it
from the kernel."""
import asyncio

from fastapi import FastAPI, Response
from fastapi.responses import StreamingResponse

app = FastAPI()


@app.get("/health")
async def health():
    return {"status": "ok"}


@app.get("/items/{item_id}")
async def item(item_id: int):
    return {"id": item_id}


@app.get("/fail")
async def fail():
    return Response(content="unavailable", status_code=503)


@app.get("/stream")
async def stream():
    async def parts():
        for i in range(5):
            yield b"x" * 1000
            await asyncio.sleep(0.01)

    return StreamingResponse(parts(), media_type="text/plain")


@app.post("/echo")
async def echo(body: dict):
    return body
