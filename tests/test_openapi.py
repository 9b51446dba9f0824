"""The committed openapi/openapi.json is exactly what the app serves (regenerate with `make openapi`)."""

from __future__ import annotations

import json
from pathlib import Path

from app.main import create_app
from app.settings import Settings

SPEC = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"


def test_committed_spec_matches_app() -> None:
    live = json.loads(json.dumps(create_app(Settings(mode="test")).openapi(), sort_keys=True))
    assert json.loads(SPEC.read_text()) == live, "openapi/openapi.json is stale: run `make openapi`"


def test_every_operation_declares_auth_or_is_public() -> None:
    spec = json.loads(SPEC.read_text())
    public = {"/healthz", "/readyz", "/metrics"}  # metrics hold counts only, for a scraper on the same network
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if path in public:
                continue
            assert op.get("security"), f"{method.upper()} {path} has no security scheme in the spec"
