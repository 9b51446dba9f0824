"""The shape the architecture promises (docs/architecture.md), checked so that it stays: layers import only
downwards, files and functions stay small, and every `# type: ignore` says why."""

from __future__ import annotations

import ast
import re
from pathlib import Path

APP = Path(__file__).resolve().parent.parent / "app"
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60
MAX_TYPE_IGNORES = 10

# Which packages a layer may not import (downwards only; app.runtime and app.settings are shared by all).
FORBIDDEN = {
    "sync": ("fastapi", "starlette", "arq", "app.api", "app.jobs", "app.cli"),
    "events": ("fastapi", "arq", "app.api", "app.jobs", "app.db", "app.cli"),
    "db": ("fastapi", "arq", "app.api", "app.jobs", "app.sync", "app.cli"),
    "moodle": ("fastapi", "arq", "app.api", "app.jobs", "app.sync", "app.cli"),
    "coursesales": ("fastapi", "arq", "app.api", "app.jobs", "app.sync", "app.cli"),
    "notify": ("fastapi", "arq", "app.api", "app.jobs", "app.cli"),
    "api": ("arq", "app.cli", "app.console"),
    "console": ("arq", "app.cli"),
}


def _modules() -> list[Path]:
    return sorted(APP.rglob("*.py"))


def _imports(tree: ast.Module) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_layers_import_only_downwards() -> None:
    wrong = []
    for path in _modules():
        layer = path.relative_to(APP).parts[0]
        banned = FORBIDDEN.get(layer, ())
        for name in _imports(ast.parse(path.read_text())):
            if any(name == b or name.startswith(b + ".") for b in banned):
                wrong.append(f"{path.relative_to(APP)} imports {name}")
    assert wrong == []


def test_no_module_or_function_is_too_long() -> None:
    long = []
    for path in _modules():
        source = path.read_text()
        if (n := len(source.splitlines())) > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(APP)}: {n} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = (node.end_lineno or node.lineno) - node.lineno + 1
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(APP)}:{node.lineno} {node.name}: {size} lines")
    assert long == []


def test_type_ignores_are_few_and_each_says_why() -> None:
    ignores = [
        (path.relative_to(APP), line)
        for path in _modules()
        for line in path.read_text().splitlines()
        if "type: ignore" in line
    ]
    assert len(ignores) <= MAX_TYPE_IGNORES, ignores
    unexplained = [
        (p, line) for p, line in ignores if not re.search(r"type: ignore\[[\w-]+(, [\w-]+)*\]\s+#\s*\S", line)
    ]
    assert unexplained == []


# Who may build a runtime without opening the keyring: open_runtime itself, and `check`, which only asks the upstreams
# (and may run before the first migrate). Anything else that encrypts, decrypts or digests with keys derived from
# SYNC_SECRET_KEY would be wrong after a rotation (app/sync/keyring.py).
BUILDS_WITHOUT_KEYRING = {("runtime.py", "open_runtime"), ("cli/upstreams.py", "_check")}


def test_every_process_opens_the_keyring() -> None:
    found: set[tuple[str, str]] = set()
    for path in _modules():
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "build_runtime":
                    found.add((path.relative_to(APP).as_posix(), func.name))
    assert found <= BUILDS_WITHOUT_KEYRING, f"use open_runtime: {sorted(found - BUILDS_WITHOUT_KEYRING)}"
    assert ("runtime.py", "open_runtime") in found  # the scan sees calls: a test that can fail
