"""The tenant registry's rules: add, list, show, update, disable, enable, remove; and a credential's tenant.

The caller owns the transaction (these only flush) and names the actor for the audit trail (target
``tenant:<slug>``; the note names the keys and secrets changed, never a value). Secrets are stored encrypted with
the hub's Vault; each credential that names a tenant (app.tenant_settings.REGISTERED) is also stored as its keyed
hash in ``tenant_credentials``, which finds its tenant without a scan and refuses it to a second tenant. A value
the file/environment configuration holds (the tenant ``default``'s, the hub token, SYNC_SECRET_KEY) is refused too.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import SQLModel, col

from app.crypto import Vault
from app.db.tenancy import ALL_TENANTS
from app.db.tenants import DEFAULT_TENANT_ID, Tenant, TenantCredential
from app.db.types import utcnow
from app.settings import Settings
from app.settings_secrets import credentials, secret
from app.sync.operations import audit
from app.sync.tenant_checks import (
    TenantError,
    check_name,
    check_slug,
    checked_settings,
    config_problems,
    secrets_problems,
    weak_secrets,
)
from app.tenant_settings import REGISTERED

__all__ = [
    "TenantError",
    "add",
    "credential_digest",
    "delete_tenant_data",
    "find_by_credential",
    "get_tenant",
    "list_tenants",
    "remove",
    "set_enabled",
    "update",
]

# The digests of tenants' credentials are HMACs of their own kind: never equal to a payload's dedupe hash.
DIGEST_PURPOSE = "tenant-credential"


def credential_digest(vault: Vault, value: str) -> str:
    """The keyed hash a credential is registered and looked up by."""
    return vault.digest([DIGEST_PURPOSE, value])


async def find_by_credential(
    session: AsyncSession, vault: Vault, value: str, *, names: Iterable[str]
) -> tuple[Tenant, str] | None:
    """The tenant this credential was given to, and its name, if it is one of ``names`` (a webhook's token must
    not pass for a wstoken); None otherwise. One primary-key read, whatever the number of tenants."""
    if not value:
        return None
    found = await session.get(TenantCredential, credential_digest(vault, value))
    if found is None or found.name not in set(names):
        return None
    tenant = await session.get(Tenant, found.tenant_id)
    return (tenant, found.name) if tenant is not None else None


async def get_tenant(session: AsyncSession, slug: str) -> Tenant:
    found = (await session.execute(select(Tenant).where(col(Tenant.slug) == slug))).scalars().first()
    if found is None:
        raise TenantError(404, f"no tenant {slug}")
    return found


async def list_tenants(session: AsyncSession, *, offset: int = 0, limit: int | None = None) -> tuple[list[Tenant], int]:
    """Registered tenants by slug, a page of them, and how many there are."""
    query = select(Tenant).order_by(col(Tenant.slug)).offset(offset).limit(limit)
    total = (await session.execute(select(func.count()).select_from(Tenant))).scalar_one()
    return list((await session.execute(query)).scalars()), total


async def add(
    session: AsyncSession,
    vault: Vault,
    base: Settings,
    *,
    slug: str,
    name: str,
    config: Mapping[str, Any],
    secrets: Mapping[str, Any],
    actor: str,
) -> Tenant:
    """A new tenant, its settings validated as its Settings and its credentials registered."""
    slug, name = check_slug(slug), check_name(name)
    _refuse_problems(config_problems(config) + secrets_problems(secrets))
    if (await session.execute(select(col(Tenant.id)).where(col(Tenant.slug) == slug))).first() is not None:
        raise TenantError(409, f"slug: tenant {slug} exists already")
    plain = dict(secrets)
    await _check(session, vault, base, dict(config), plain, tenant_id=None)
    now = utcnow()
    tenant = Tenant(slug=slug, name=name, config=dict(config), secrets=_encrypted(vault, plain))
    tenant.created_at = tenant.updated_at = now
    session.add(tenant)
    await _flush(session, slug)
    await _register(session, vault, tenant.id, plain)
    note = _changes(name=name, config=config, secrets=plain)
    audit(session, actor=actor, action="tenant.add", target=f"tenant:{slug}", note=note)
    await _flush(session, slug)
    return tenant


async def update(
    session: AsyncSession,
    vault: Vault,
    base: Settings,
    slug: str,
    *,
    name: str | None = None,
    config: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
    actor: str,
) -> Tenant:
    """Merge the given sections and keys into the tenant's (None removes a key, a section or a secret)."""
    tenant = await get_tenant(session, slug)
    new_name = check_name(name) if name is not None else tenant.name
    _refuse_problems(config_problems(_given(config or {})) + secrets_problems(secrets or {}, removable=True))
    merged = merge(tenant.config, config or {})
    plain = {k: vault.decrypt(v) for k, v in tenant.secrets.items()}
    for key, value in (secrets or {}).items():
        if value is None:
            plain.pop(key, None)
        else:
            plain[key] = value
    await _check(session, vault, base, merged, plain, tenant_id=tenant.id)
    tenant.name, tenant.config, tenant.secrets = new_name, merged, _encrypted(vault, plain)
    tenant.updated_at = utcnow()
    await session.execute(delete(TenantCredential).where(col(TenantCredential.tenant_id) == tenant.id))
    await _register(session, vault, tenant.id, plain)
    note = _changes(name=name, config=config or {}, secrets=secrets or {})
    audit(session, actor=actor, action="tenant.update", target=f"tenant:{slug}", note=note)
    await _flush(session, slug)
    return tenant


async def set_enabled(session: AsyncSession, slug: str, *, enabled: bool, actor: str) -> Tenant:
    """Disable (its deliveries refused, nothing processed for it) or enable a tenant; the same state twice is no
    change and no audit entry."""
    tenant = await get_tenant(session, slug)
    if tenant.enabled != enabled:
        tenant.enabled, tenant.updated_at = enabled, utcnow()
        action = "tenant.enable" if enabled else "tenant.disable"
        audit(session, actor=actor, action=action, target=f"tenant:{slug}")
        await session.flush()
    return tenant


async def remove(session: AsyncSession, slug: str, *, confirm: str | None, actor: str) -> None:
    """Delete a tenant: its data (delete_tenant_data), its credentials and its row. ``confirm`` must repeat the
    slug: the caller says which tenant it means to lose."""
    if confirm != slug:
        raise TenantError(422, f"confirm: repeat the tenant's slug ({slug}) to delete it and its data")
    tenant = await get_tenant(session, slug)
    await delete_tenant_data(session, tenant.id)
    await session.execute(delete(TenantCredential).where(col(TenantCredential.tenant_id) == tenant.id))
    await session.delete(tenant)
    audit(session, actor=actor, action="tenant.remove", target=f"tenant:{slug}")
    await session.flush()


async def delete_tenant_data(session: AsyncSession, tenant_id: int) -> None:
    """Delete every row the tenant owns (events and their attempts, links, registrations, runs, leases, audit,
    alerts, operators...): every table with a tenant column, children first."""
    if tenant_id == DEFAULT_TENANT_ID:
        raise TenantError(409, "the tenant default is the file configuration's: its data is not deleted here")
    for table in reversed(SQLModel.metadata.sorted_tables):
        if "tenant_id" in table.c and table.name != TenantCredential.__tablename__:
            statement = table.delete().where(table.c.tenant_id == tenant_id).execution_options(**ALL_TENANTS)
            await session.execute(statement)


def merge(stored: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` over ``stored``, table by table; a None removes its key (the setting is back to its default)."""
    out = dict(stored)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = _given(value) if isinstance(value, Mapping) else value
    return {k: v for k, v in out.items() if v != {}}


def _given(values: Any) -> Any:
    """A patch without its removals (None), for the checks of what it sets."""
    if not isinstance(values, Mapping):
        return values
    return {k: _given(v) for k, v in values.items() if v is not None}


def _refuse_problems(problems: list[str]) -> None:
    if problems:
        raise TenantError(422, problems)


async def _check(
    session: AsyncSession,
    vault: Vault,
    base: Settings,
    config: dict[str, Any],
    plain: dict[str, str],
    *,
    tenant_id: int | None,
) -> None:
    """The tenant's Settings must build (422), its credentials be its own (409) and strong (422)."""
    built = checked_settings(base, config, plain)
    await _refuse_in_use(session, vault, base, plain, tenant_id=tenant_id)
    _refuse_problems(weak_secrets(built, plain))


async def _refuse_in_use(
    session: AsyncSession, vault: Vault, base: Settings, plain: Mapping[str, str], *, tenant_id: int | None
) -> None:
    """409 for a credential the file/environment configuration holds or another tenant was given."""
    held = [v for v in (secret(c) for c in credentials(base).values()) if v]
    digests = {credential_digest(vault, plain[n]): n for n in sorted(REGISTERED & set(plain))}
    taken = select(col(TenantCredential.digest)).where(col(TenantCredential.digest).in_(list(digests)))
    if tenant_id is not None:
        taken = taken.where(col(TenantCredential.tenant_id) != tenant_id)
    in_use = {digests[d] for d in (await session.execute(taken)).scalars()}
    # Compared in constant time, every value against every held one: a refusal's timing says nothing.
    in_use |= {n for n in digests.values() if any([_same(plain[n], h) for h in held])}
    if in_use:
        raise TenantError(
            409,
            [f"secrets.{n} is already in use (by another tenant or the file configuration)" for n in sorted(in_use)],
        )


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass"))


async def _register(session: AsyncSession, vault: Vault, tenant_id: int, plain: Mapping[str, str]) -> None:
    for name in sorted(REGISTERED & set(plain)):
        session.add(TenantCredential(digest=credential_digest(vault, plain[name]), tenant_id=tenant_id, name=name))


def _encrypted(vault: Vault, plain: Mapping[str, str]) -> dict[str, str]:
    return {name: vault.encrypt(value) for name, value in sorted(plain.items())}


async def _flush(session: AsyncSession, slug: str) -> None:
    try:
        await session.flush()
    except IntegrityError:  # another request took the slug or a credential since the checks
        raise TenantError(409, f"tenant {slug} or one of its credentials is already in use") from None


def _changes(*, name: str | None, config: Mapping[str, Any], secrets: Mapping[str, Any]) -> str:
    """What changed, by key and secret name only."""
    keys = sorted(_paths(config))
    parts = ["name"] if name is not None else []
    parts += [f"config: {', '.join(keys)}"] if keys else []
    set_ = sorted(k for k, v in secrets.items() if v is not None)
    removed = sorted(k for k, v in secrets.items() if v is None)
    parts += [f"secrets set: {', '.join(set_)}"] if set_ else []
    parts += [f"secrets removed: {', '.join(removed)}"] if removed else []
    return "; ".join(parts) or "no change"


def _paths(values: Mapping[str, Any], prefix: str = "") -> Iterable[str]:
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            yield from _paths(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"
