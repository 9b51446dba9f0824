"""The baseline: a bare FastAPI endpoint that parses the same JSON and returns it, served the same way."""

from __future__ import annotations

import json

from fastapi import FastAPI, Request
from fastapi.responses import Response

app = FastAPI()


@app.post("/webhooks/coursesales")
async def echo(request: Request) -> Response:
    return Response(json.dumps(json.loads(await request.body())), media_type="application/json", status_code=202)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}
