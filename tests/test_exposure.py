"""Who may see the docs and the metrics, and the headers of the HTML pages."""

from __future__ import annotations

import httpx

from app.api.security_headers import CSP
from app.runtime import Runtime
from tests.conftest import bearer


async def test_docs_are_public_by_default_with_safe_html_headers(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["content-security-policy"] == CSP
    assert (await client.get("/redoc")).headers["content-security-policy"] == CSP  # ReDoc is off: a 404, still guarded
    assert (await client.get("/openapi.json")).status_code == 200


async def test_docs_off(client: httpx.AsyncClient, runtime: Runtime) -> None:
    runtime.settings.api.docs = "off"
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert (await client.get(path)).status_code == 404, path
    assert (await client.get("/healthz")).status_code == 200


async def test_metrics_behind_the_ops_token(client: httpx.AsyncClient, runtime: Runtime) -> None:
    assert (await client.get("/metrics")).status_code == 200
    runtime.settings.metrics.access = "token"
    refused = await client.get("/metrics")
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert (await client.get("/metrics", headers={"Authorization": "Bearer wrong-token-0000"})).status_code == 401
    allowed = await client.get("/metrics", headers=bearer("api"))
    assert allowed.status_code == 200 and "sync_events_received_total" in allowed.text
