"""Swagger UI at /docs, served from the package (app/api/static/): no CDN, so it shows on a network without one.

The page loads only our own files and one external init script (the Content-Security-Policy of
app/api/security_headers.py allows no inline script); the vendored release is named in static/swagger-ui/README.md.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent / "static"
STATIC_PREFIX = "/static"
OPENAPI_URL = "/openapi.json"

router = APIRouter(include_in_schema=False)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - Swagger UI</title>
<link rel="stylesheet" href="{static}/swagger-ui/swagger-ui.css">
<link rel="icon" type="image/png" href="{static}/swagger-ui/favicon-32x32.png" sizes="32x32">
<link rel="icon" type="image/png" href="{static}/swagger-ui/favicon-16x16.png" sizes="16x16">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{openapi}"></div>
<script src="{static}/swagger-ui/swagger-ui-bundle.js"></script>
<script src="{static}/docs.js"></script>
</body>
</html>
"""


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """The Swagger UI page; paths carry the root path, so it works behind a proxy that mounts us under a prefix."""
    root = escape(request.scope.get("root_path", "").rstrip("/"))
    title = escape(request.app.title)
    return HTMLResponse(PAGE.format(title=title, static=root + STATIC_PREFIX, openapi=root + OPENAPI_URL))


def static_files() -> StaticFiles:
    """The package's static files (Swagger UI now, the console's assets later), mounted at STATIC_PREFIX."""
    return StaticFiles(directory=STATIC_DIR)
