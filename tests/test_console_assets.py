"""The console's static files (app/console/static): the vendored scripts are the pinned copies VENDORED.md names, and
no file asks a browser for anything from another origin or for what the Content-Security-Policy forbids (inline
style, eval). No browser here: the files themselves are read."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from tests.conftest import ROOT_DIR

STATIC = ROOT_DIR / "app" / "console" / "static"
VENDOR = STATIC / "vendor"
VENDORED_MD = VENDOR / "VENDORED.md"
# The line every console page carries in its <head> (VENDORED.md says why); its keys must be htmx's.
HTMX_META = (
    """<meta name="htmx-config" content='{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false}'>"""
)
# Each version's own mark inside its file: htmx's `version:"…"` and Chart.js's banner.
EMBEDDED_VERSION = {
    "htmx.min.js": re.compile(r'version:"(\d+\.\d+\.\d+)"'),
    "chart.umd.min.js": re.compile(r"\* Chart\.js v(\d+\.\d+\.\d+)"),
}
MAJOR = {"htmx.min.js": "2.0.", "chart.umd.min.js": "4."}
MAX_TOTAL_BYTES = 400_000
# Ways a file makes a browser load something from elsewhere (an absolute or scheme-relative URL).
ELSEWHERE = [
    re.compile(r"sourceMappingURL", re.IGNORECASE),
    re.compile(r"@import", re.IGNORECASE),
    re.compile(r"url\(\s*['\"]?\s*(?:https?:)?//", re.IGNORECASE),
    re.compile(r"\b(?:src|href|action)\s*=\s*['\"]?\s*(?:https?:)?//", re.IGNORECASE),
    re.compile(r"fetch\(\s*['\"`]\s*(?:https?:)?//", re.IGNORECASE),
    re.compile(r"\bimport\b[^;\n]*['\"](?:https?:)?//", re.IGNORECASE),
]
# What the policy blocks (or what would only work with 'unsafe-inline' / 'unsafe-eval').
CSP_HOSTILE = [
    re.compile(r"\beval\s*\("),
    re.compile(r"new\s+Function\s*\("),
    re.compile(r"set(?:Timeout|Interval)\s*\(\s*['\"`]"),
    re.compile(r"setAttribute\(\s*['\"]style['\"]"),
    re.compile(r"<style", re.IGNORECASE),
    re.compile(r"createElement\(\s*['\"]style['\"]"),
    re.compile(r"insertRule|adoptedStyleSheets"),
    re.compile(r"\.innerHTML\s*="),
    re.compile(r"\bon[a-z]+\s*=\s*['\"]"),
]


def _table() -> dict[str, str]:
    """VENDORED.md's file -> sha256 rows (the rows whose last cell is a sha256)."""
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", VENDORED_MD.read_text(), re.MULTILINE)
    return dict(rows)


def _versions() -> dict[str, str]:
    """VENDORED.md's file -> version (the first table: file, package, version, tarball, licence)."""
    rows = re.findall(r"^\| `([^`]+)` \| ([\w.-]+) \| (\d+\.\d+\.\d+) \| (\S+) \|", VENDORED_MD.read_text(), re.M)
    return {name: version for name, _package, version, _url in rows}


def _assets() -> list[Path]:
    return sorted(p for p in STATIC.rglob("*") if p.is_file())


def test_each_vendored_file_is_the_copy_vendored_md_names() -> None:
    table = _table()
    on_disk = {p.name for p in VENDOR.iterdir() if p.is_file()} - {"VENDORED.md"}
    assert set(table) == on_disk == {"htmx.min.js", "chart.umd.min.js", "LICENSE-htmx.txt", "LICENSE-chartjs.txt"}
    for name, sha256 in table.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == sha256, name


def test_the_versions_are_named_and_pinned() -> None:
    versions = _versions()
    assert set(versions) == set(EMBEDDED_VERSION)
    text = VENDORED_MD.read_text()
    for name, version in versions.items():
        assert version.startswith(MAJOR[name]), f"{name} {version}: not the major version the console is written for"
        found = EMBEDDED_VERSION[name].findall((VENDOR / name).read_text())
        assert found == [version], f"{name} says {found}, VENDORED.md says {version}"
        package = "htmx.org" if name.startswith("htmx") else "chart.js"
        assert f"https://registry.npmjs.org/{package}/-/{package}-{version}.tgz" in text


def test_the_licences_are_shipped() -> None:
    assert "Zero-Clause BSD" in (VENDOR / "LICENSE-htmx.txt").read_text()
    assert "The MIT License" in (VENDOR / "LICENSE-chartjs.txt").read_text()


# Every stylesheet and script, the ones added later included (the browser loads these; the .md and .txt it does not).
SERVED = sorted(p.relative_to(STATIC).as_posix() for p in STATIC.rglob("*") if p.suffix in {".css", ".js", ".html"})


def test_the_console_files_are_all_there() -> None:
    assert {"console.css", "console.js", "vendor/htmx.min.js", "vendor/chart.umd.min.js"} <= set(SERVED)


@pytest.mark.parametrize("name", SERVED)
def test_no_asset_loads_anything_from_another_origin(name: str) -> None:
    text = (STATIC / name).read_text()
    assert text.strip(), f"{name} is empty"
    assert [p.pattern for p in ELSEWHERE if p.search(text)] == []


def test_every_asset_is_small_and_not_empty() -> None:
    sizes = {p.relative_to(STATIC).as_posix(): p.stat().st_size for p in _assets()}
    assert {"console.css", "console.js", "vendor/htmx.min.js", "vendor/chart.umd.min.js"} <= set(sizes)
    assert all(sizes.values()), sizes
    assert sum(sizes.values()) < MAX_TOTAL_BYTES, sizes


@pytest.mark.parametrize("name", ["console.js", "vendor/chart.umd.min.js"])
def test_no_script_needs_unsafe_inline_or_unsafe_eval(name: str) -> None:
    """htmx is left out: its eval and <style> sit behind the config HTMX_META turns off (the next test)."""
    text = (STATIC / name).read_text()
    assert [p.pattern for p in CSP_HOSTILE if p.search(text)] == []


def test_the_meta_config_turns_off_what_htmx_would_inject_or_eval() -> None:
    assert HTMX_META in VENDORED_MD.read_text()
    content = re.search(r"content='([^']+)'", HTMX_META)
    assert content is not None
    config = json.loads(content.group(1))
    assert config == {"includeIndicatorStyles": False, "allowEval": False, "allowScriptTags": False}
    htmx = (VENDOR / "htmx.min.js").read_text()
    assert 'meta[name="htmx-config"]' in htmx
    for key in config:
        # Its default in htmx.config (on: htmx checks `config.key` before injecting or evaluating) and that check.
        assert re.search(rf"\b{key}:(?:true|!0)[,}}]", htmx), f"{key} is not a config key of the vendored htmx"
        assert f"config.{key}" in htmx, key
    # What the indicator <style> held is in console.css instead.
    css = (STATIC / "console.css").read_text()
    assert ".htmx-indicator {" in css and ".htmx-request .htmx-indicator" in css


def test_the_stylesheet_has_the_classes_the_pages_use() -> None:
    css = (STATIC / "console.css").read_text()
    assert not re.search(r"@import|@font-face|expression\(", css, re.IGNORECASE)
    badges = ["done", "failed", "needs_review", "retrying", "queued", "accepted", "running", "ignored"]
    selectors = [
        ".topbar",
        ".banner-paused",
        *[f".badge.{b} {{" for b in badges],
        ".tile.ok {",
        ".tile.bad {",
        ".tile.unknown {",
        ".table-wrap {",
        ".button.danger {",
        ".button.secondary {",
        ":focus-visible {",
        "progress {",
        ".timeline {",
        ".muted {",
        ".error {",
        ".flash.ok {",
        ".flash.error {",
        ".pager {",
        ".grid {",
        ".visually-hidden {",
        ".chart-box {",
        "@media (prefers-reduced-motion: reduce)",
    ]
    assert [s for s in selectors if s not in css] == []


def test_the_script_answers_the_data_attributes_the_pages_use() -> None:
    js = (STATIC / "console.js").read_text()
    assert '"use strict";' in js
    hooks = [
        "canvas[data-chart]",
        '"data-chart-label"',
        '"[data-chart-switch]"',
        '"aria-pressed"',
        '"data-confirm"',
        "window.confirm(",
        "time[datetime]",
        '"htmx:load"',
        '"htmx:afterSwap"',
        'credentials: "same-origin"',
        "prefers-reduced-motion",
    ]
    assert [h for h in hooks if h not in js] == []
