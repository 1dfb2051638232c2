"""FastAPI handlers whose client calls are made by asyncio tasks they
spawn, in each shape a request's child tasks take. No tracing code. Every
call's path carries the id of the request it is made for, /p/{rid}/{n}:
the ground truth of the tests."""
import asyncio
import os
import time

import httpx
from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool

BACKEND = os.environ["FANOUT_BACKEND"]
client = httpx.AsyncClient(timeout=10)
app = FastAPI()


async def leaf(rid: str, n: int) -> int:
    reply = await client.get(f"{BACKEND}/p/{rid}/{n}")
    return reply.status_code


@app.get("/long/{rid}")
async def long_poll(rid: str, seconds: float, request: Request):
    """Open for `seconds` or until its client leaves, making no call, as a
    long poll is."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not await request.is_disconnected():
        await asyncio.sleep(0.1)
    return rid


@app.get("/gather/{rid}")
async def fan_out(rid: str):
    return await asyncio.gather(*(leaf(rid, n) for n in range(3)))


@app.get("/awaited/{rid}")
async def awaited(rid: str):
    return await asyncio.create_task(leaf(rid, 0))


@app.get("/nested/{rid}")
async def nested(rid: str):
    async def pair(j: int):
        return await asyncio.gather(leaf(rid, 2 * j), leaf(rid, 2 * j + 1))
    return await asyncio.gather(pair(0), pair(1))


@app.get("/wait/{rid}")
async def wait(rid: str):
    tasks = [asyncio.create_task(leaf(rid, n)) for n in range(2)]
    await asyncio.wait(tasks)
    return [t.result() for t in tasks]


@app.get("/wait_for/{rid}")
async def wait_for(rid: str):
    return await asyncio.wait_for(leaf(rid, 0), timeout=10)


@app.get("/taskgroup/{rid}")
async def task_group(rid: str):
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(leaf(rid, n)) for n in range(2)]
    return [t.result() for t in tasks]


@app.get("/detached/{rid}")
async def detached(rid: str):
    task = asyncio.create_task(leaf(rid, 0))
    await asyncio.sleep(0.05)
    return await task


def blocking_call(rid: str, n: int) -> int:
    with httpx.Client(timeout=10) as sync_client:
        return sync_client.get(f"{BACKEND}/p/{rid}/{n}").status_code


def blocking_calls(rid: str):
    """A plain generator making a blocking call: its frame, owned by the
    generator as a coroutine's is, sits on a plain function's."""
    yield blocking_call(rid, 0)


def collect(rid: str):
    return list(blocking_calls(rid))


@app.get("/generator/{rid}")
async def generator(rid: str):
    return collect(rid)


@app.get("/sync/{rid}")
def sync_handler(rid: str):
    """A `def` handler: FastAPI runs it in one of anyio's worker threads."""
    return blocking_call(rid, 0)


@app.get("/threads/{rid}")
async def threads(rid: str):
    """Blocking calls handed to worker threads by child tasks."""
    return await asyncio.gather(*(run_in_threadpool(blocking_call, rid, n) for n in range(2)))
