"""What the registry shows of a tenant (API and CLI alike): never a secret's value, only which ones are set."""

from __future__ import annotations

from typing import Any

from app.db.tenants import DEFAULT_SLUG, Tenant
from app.settings import Settings
from app.settings_secrets import is_set
from app.tenant_settings import SECRET_NAMES

# A tenant's ways in (issue 20's routing serves them); the tenant `default` keeps the classic ones.
INBOUND = {
    "coursesales_webhook": "/webhooks/coursesales",
    "moodle_webhook": "/webhooks/moodle",
    "compat": "/webservice/rest/server.php",
}


def inbound_urls(public_url: str, slug: str) -> dict[str, str]:
    """The URLs a tenant's senders are configured with: under ``hub.public_url`` (paths alone while it is unset)."""
    prefix = public_url.rstrip("/") + ("" if slug == DEFAULT_SLUG else f"/t/{slug}")
    return {name: prefix + path for name, path in INBOUND.items()}


def tenant_view(tenant: Tenant, public_url: str) -> dict[str, Any]:
    return {
        "slug": tenant.slug,
        "name": tenant.name,
        "enabled": tenant.enabled,
        "source": "registry",
        "config": tenant.config,
        "secrets": sorted(tenant.secrets),
        "urls": inbound_urls(public_url, tenant.slug),
        "created_at": tenant.created_at,
        "updated_at": tenant.updated_at,
    }


def default_view(base: Settings) -> dict[str, Any]:
    """The tenant `default`: the file/environment configuration (its settings: GET /api/settings)."""
    held = []
    for name, (section, key) in SECRET_NAMES.items():
        value = getattr(getattr(base, section), key)
        if is_set(value):
            held.append(name)
    return {
        "slug": DEFAULT_SLUG,
        "name": "the file/environment configuration",
        "enabled": True,
        "source": "file",
        "config": None,
        "secrets": sorted(held),
        "urls": inbound_urls(base.hub.public_url, DEFAULT_SLUG),
        "created_at": None,
        "updated_at": None,
    }
