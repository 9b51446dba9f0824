"""Browser tests: Debian's chromium, driven by Playwright for Python, against a real `moodle-sync serve` with the
Moodle and CourseSales fakes on their own ports.

Fixtures: `service` (the serve process, its fakes and its environment, one per package), `browser` (one chromium per
package) and `visit` (a fresh browser context and page for each test: every request it makes and every console
message are recorded, requests for any other host are refused, and a screenshot is saved when the test ends).
Without chromium the folder is skipped with one line saying how to install it; under CI (CI=true) it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser.serving import ServeProcess
from tests.conftest import TEST_TOKENS
from tests.procs import ROOT, RedisServer, ServedApp, moodle_sync_command, worker_env

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = (
    "browser tests need Debian's chromium: apt-get install chromium (and playwright: pip install -e '.[test]')"
)
SCREENSHOTS = ROOT / "docs" / "console"
UNSAFE_IN_NAMES = re.compile(r"[^\w.-]+")
# A page's own report of each Content-Security-Policy violation, as a console error the `visit` fixture records. Chromium
# logs one too ("... violates the following Content Security Policy directive ..."); this one does not depend on its
# wording, and names the directive and the blocked URL.
REPORT_CSP = """document.addEventListener("securitypolicyviolation", (e) => console.error(
  "Content Security Policy violation: " + e.violatedDirective + " blocked " + (e.blockedURI || "inline")));"""


def missing() -> str | None:
    """Why these tests cannot run here, or None."""
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return INSTALL_HINT
    return None if shutil.which("chromium") else INSTALL_HINT


def require_chromium() -> None:
    """Skip the folder without chromium (one line: raised once, by the package's setup); under CI fail instead."""
    reason = missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(reason)  # CI installs chromium (.ci/run): its absence there is a fault, not a reason to skip
    pytest.skip(reason)


@dataclass
class Service:
    """A running `moodle-sync serve`, the fakes it calls and the environment to run the CLI against it."""

    process: ServeProcess
    moodle: Any
    coursesales: Any
    env: dict[str, str]

    @property
    def url(self) -> str:
        return self.process.url

    def cli(self, *args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run `moodle-sync ARGS` on the service's database and settings (an operator made with the CLI, say)."""
        return subprocess.run(  # noqa: S603 (our own CLI)
            [*moodle_sync_command(), *args], env=self.env, cwd=ROOT, input=stdin, capture_output=True,
            text=True, timeout=timeout, check=False,
        )  # fmt: skip


@pytest.fixture(scope="package")
def chromium_path() -> str:
    require_chromium()  # the package's setup did this first; repeated so that the fixture stands on its own
    return str(shutil.which("chromium"))


@pytest.fixture(scope="package")
def service(chromium_path: str, migrated: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """`moodle-sync serve` on its own Redis (its worker must not take other tests' jobs) and the suite's database."""
    from tests.fakes.coursesales import CourseSalesFake
    from tests.fakes.moodle import MoodleFake

    work = tmp_path_factory.mktemp("browser-service")
    moodle, coursesales = MoodleFake(version="4.3", token="test-token"), CourseSalesFake()
    # A healthy site for the console's health tile: the recorded site's service lacks the reconcile's one function.
    moodle.add_function("core_enrol_get_users_courses")
    with RedisServer(work / "redis") as redis, ServedApp(moodle) as served_moodle, ServedApp(coursesales) as cs:
        env = worker_env(
            database_url=migrated, redis_url=redis.url, moodle_url=served_moodle.url, var_dir=work / "var",
            lease_seconds=30,
            SYNC_COURSESALES__URL=cs.url,
            SYNC_COURSESALES__USERNAME=coursesales.username,
            SYNC_COURSESALES__PASSWORD=coursesales.password,
            SYNC_WEBHOOKS__MOODLE_TOKEN=TEST_TOKENS["moodle"],
            SYNC_COMPAT__WSTOKEN=TEST_TOKENS["compat"],
        )  # fmt: skip
        with ServeProcess(env, work / "serve.log") as process:
            yield Service(process=process, moodle=moodle, coursesales=coursesales, env=env)


@pytest.fixture(scope="package")
async def browser(chromium_path: str) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("screenshots")


@dataclass
class Visit:
    """One test's page and what it did: every request's URL, every console message."""

    page: Any
    base_url: str
    shots: Path
    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    def foreign_requests(self) -> list[str]:
        """Requests for anything but the service itself (data: and blob: URLs stay in the page)."""
        own = urlsplit(self.base_url)
        return [
            url
            for url in self.requests
            if urlsplit(url).scheme not in ("data", "blob")
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (own.scheme, own.netloc)
        ]

    def csp_violations(self) -> list[str]:
        return [m for m in self.console if "content security policy" in m.lower()]

    async def goto(self, path: str) -> Any:
        return await self.page.goto(self.base_url + path)

    async def snap(self, name: str, *, full_page: bool = True) -> Path:
        """A screenshot now, as NAME.png in this session's screenshot folder (see publish_screenshot)."""
        path = self.shots / (UNSAFE_IN_NAMES.sub("_", name) + ".png")
        await self.page.screenshot(path=path, full_page=full_page)
        return path


@pytest.fixture
async def visit(
    browser: Any, service: Service, screenshot_dir: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Visit]:
    """A fresh context and page on the service; a screenshot of the page is saved when the test ends."""
    context = await browser.new_context(base_url=service.url, viewport={"width": 1280, "height": 900})
    await context.add_init_script(REPORT_CSP)
    seen = Visit(page=await context.new_page(), base_url=service.url, shots=screenshot_dir)
    context.on("request", lambda r: seen.requests.append(r.url))
    seen.page.on("console", lambda m: seen.console.append(f"{m.type}: {m.text}"))
    seen.page.on("pageerror", lambda e: seen.console.append(f"pageerror: {e}"))

    async def only_the_service(route: Any) -> None:
        # Recorded above; refused here, so that a page that reaches out fails fast instead of waiting on a network.
        if route.request.url.startswith(service.url + "/"):
            await route.continue_()
        else:
            await route.abort("blockedbyclient")

    await context.route("**/*", only_the_service)
    try:
        yield seen
    finally:
        try:
            seen.screenshot = await seen.snap(request.node.name)
        finally:
            await context.close()


def publish_screenshot(shot: Path, name: str) -> Path | None:
    """Copy a test's screenshot to docs/console/NAME.png (the README shows them), when SYNC_TEST_SCREENSHOTS=docs."""
    if os.environ.get("SYNC_TEST_SCREENSHOTS") != "docs":
        return None
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    target = SCREENSHOTS / f"{name}.png"
    shutil.copyfile(shot, target)
    return target
