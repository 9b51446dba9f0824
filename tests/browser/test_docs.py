"""/docs in a real chromium: Swagger UI renders the operations from the package alone, under the page's
Content-Security-Policy, and the page asks nothing of any host but the service."""

from __future__ import annotations

from tests.browser.conftest import Visit, publish_screenshot


async def test_docs_render_offline_under_the_policy(visit: Visit) -> None:
    response = await visit.goto("/docs")
    assert response is not None and response.status == 200
    assert "script-src 'self'" in response.headers["content-security-policy"]
    webhook = visit.page.locator("#operations-webhooks-coursesales_webhook_webhooks_coursesales_post")
    await webhook.wait_for(state="visible", timeout=20_000)
    assert "/webhooks/coursesales" in await webhook.inner_text()
    # An operation opens (React renders it through the CSSOM, which style-src 'self' allows) with its example.
    await webhook.locator(".opblock-summary").first.click()
    await webhook.locator(".opblock-body").wait_for(state="visible", timeout=10_000)
    assert await visit.page.locator(".opblock").count() > 10
    publish_screenshot(await visit.snap("docs", full_page=False), "docs")
    assert f"{visit.base_url}/openapi.json" in visit.requests
    assert any(url.endswith("/static/swagger-ui/swagger-ui-bundle.js") for url in visit.requests)
    assert visit.foreign_requests() == []
    assert visit.csp_violations() == [], visit.console
    assert not [m for m in visit.console if m.startswith(("error", "pageerror"))], visit.console
