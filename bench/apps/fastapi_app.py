"""The benchmark's FastAPI app: one route with a path parameter and a small
JSON body, the typical shape of an API endpoint. No tracing code."""
from fastapi import FastAPI

app = FastAPI()


@app.get("/items/{item_id}")
async def item(item_id: int):
    return {"id": item_id, "name": f"item {item_id}", "tags": ["a", "b"]}
