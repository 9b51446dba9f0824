"""The pages a browser shows (/docs and its files) are served from the package, under a Content-Security-Policy
that allows no inline script and no other origin; the webhooks' hot path is left as it was."""

from __future__ import annotations

import re

import httpx

from app.api.security_headers import CSP
from tests.helpers import post_contact

ASSETS = ("/static/swagger-ui/swagger-ui-bundle.js", "/static/swagger-ui/swagger-ui.css", "/static/docs.js")


def assert_browser_headers(response: httpx.Response) -> None:
    assert response.headers.get_list("content-security-policy") == [CSP], response.url
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_docs_page_has_the_policy_and_names_no_other_origin(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert_browser_headers(page)
    assert "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP and "unsafe" not in CSP
    # No absolute URL, no protocol-relative one, no inline script: every reference is a path of this service.
    assert not re.search(r"https?:|//[a-z0-9]", page.text, re.IGNORECASE), page.text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.DOTALL)
    assert scripts and all('src="/' in attrs and body.strip() == "" for attrs, body in scripts), scripts
    refs = re.findall(r'(?:src|href|data-openapi-url)="([^"]*)"', page.text)
    assert refs and all(ref.startswith("/") for ref in refs), refs
    assert "/openapi.json" in refs and set(ASSETS) <= set(refs)


async def test_vendored_swagger_ui_is_served_with_the_policy(client: httpx.AsyncClient) -> None:
    for path in ASSETS:
        asset = await client.get(path)
        assert asset.status_code == 200, path
        assert_browser_headers(asset)
    bundle = await client.get(ASSETS[0])
    assert "javascript" in bundle.headers["content-type"] and "SwaggerUIBundle" in bundle.text
    assert (await client.get(ASSETS[1])).headers["content-type"].startswith("text/css")
    missing = await client.get("/static/no-such-file.js")
    assert missing.status_code == 404
    assert_browser_headers(missing)
    assert (await client.get("/static/../app/settings.py")).status_code == 404


async def test_swagger_ui_init_sends_nothing_elsewhere(client: httpx.AsyncClient) -> None:
    """The validator badge calls validator.swagger.io unless switched off."""
    script = (await client.get("/static/docs.js")).text
    assert "validatorUrl: null" in script and "http" not in script


async def test_redoc_and_the_oauth2_redirect_are_not_served(client: httpx.AsyncClient) -> None:
    """ReDoc only loads from a CDN; the OAuth2 redirect page has an inline script and no scheme here needs it."""
    for path in ("/redoc", "/docs/oauth2-redirect"):
        gone = await client.get(path)
        assert gone.status_code == 404, path
        assert_browser_headers(gone)


async def test_webhook_hot_path_answers_without_the_browser_headers(client: httpx.AsyncClient) -> None:
    accepted = await post_contact(client, "d-headers-1")
    assert accepted.status_code == 202
    for name in ("content-security-policy", "x-content-type-options", "referrer-policy"):
        assert name not in accepted.headers, name
    assert "content-security-policy" not in (await client.get("/healthz")).headers
