"""The browser harness sees what the other browser tests assert is absent: a request for another host, a Content-
Security-Policy violation. Without this, "no foreign request" and "no violation" could pass by seeing nothing."""

from __future__ import annotations

import pytest

from tests.browser.conftest import Visit

ELSEWHERE = "http://192.0.2.1/elsewhere.png"  # TEST-NET-1: never routed; the harness refuses it before any network


async def test_a_request_for_another_host_is_recorded_and_refused(visit: Visit) -> None:
    await visit.goto("/docs")
    with pytest.raises(Exception, match="ERR_BLOCKED_BY_CLIENT"):
        await visit.page.goto(ELSEWHERE)
    assert visit.foreign_requests() == [ELSEWHERE]


async def test_a_policy_violation_is_reported(visit: Visit) -> None:
    await visit.goto("/docs")
    await visit.page.evaluate(
        """(src) => {
        const script = document.createElement("script");
        script.textContent = "window.inlineRan = true";
        document.body.append(script);
        const img = document.createElement("img");
        img.src = src;
        document.body.append(img);
    }""",
        ELSEWHERE,
    )
    await visit.page.wait_for_function("document.querySelectorAll('img').length > 0")
    await visit.page.wait_for_timeout(300)  # the violation events are dispatched as tasks
    assert await visit.page.evaluate("window.inlineRan === undefined")
    violations = visit.csp_violations()
    assert any("script-src" in v for v in violations), visit.console
    assert any("img-src" in v and "192.0.2.1" in v for v in violations), visit.console
    # Recorded although the policy stopped it: the record holds every attempt, so "none" is a strict test.
    assert visit.foreign_requests() == [ELSEWHERE]
