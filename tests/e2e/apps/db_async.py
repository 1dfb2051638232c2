"""An asyncio service over PostgreSQL (asyncpg) and Redis (redis.asyncio)
on FastAPI and uvicorn, with no tracing code: the same routes as
db_threaded.py. Both pools open at start-up.

    DB_PG_DSN=... DB_REDIS_PORT=... uvicorn db_async:app
"""
import os

import asyncpg
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.responses import JSONResponse

app = FastAPI()


@app.on_event("startup")
async def open_pools():
    app.state.pg = await asyncpg.create_pool(os.environ["DB_PG_DSN"], min_size=4, max_size=8)
    app.state.redis = aioredis.Redis(host="127.0.0.1", port=int(os.environ["DB_REDIS_PORT"]),
                                     max_connections=16)
    async with app.state.pg.acquire() as conn:
        await conn.fetchval("SELECT 1")
    await app.state.redis.ping()


@app.get("/orders/{k}")
async def orders(k: int, secret: str):
    rows = await app.state.pg.fetch(
        f"SELECT id, total FROM orders_{k} WHERE customer = $1 AND total > $2", secret, 4242.5)
    for i in range(k % 3 + 1):
        await app.state.redis.get(f"order:{secret}:{i}")
    await app.state.redis.set(f"last:{secret}", f"value-{secret}")
    return {"rows": len(rows)}


@app.get("/fail")
async def fail(secret: str):
    try:
        await app.state.pg.execute(
            "INSERT INTO orders_0 (id, customer, total) VALUES (1, $1, 7)", secret)
    except asyncpg.UniqueViolationError:
        pass
    try:
        await app.state.redis.lpush("a-string", secret)
    except aioredis.ResponseError:
        pass
    return JSONResponse({"error": "conflict"}, status_code=409)
