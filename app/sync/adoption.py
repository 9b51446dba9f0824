"""Whether an existing Moodle account may become a contact's: adoption is opt-in and guarded.

An account the sync made itself (an intent recorded before its create call) is always the contact's. Any other
is adopted only with ``users.adopt_existing``, never when it is the token's own user or its ``auth`` is not in
``users.adopt_auths``; a site administrator cannot be told apart through web services, so Moodle's refusal to
update one (``usernotupdatedadmin``) is a refusal too. An adopted account keeps its password unless
``users.adopt_overwrites_password``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.engine import SessionFactory
from app.db.inbox import Outcome
from app.db.models import OPEN_STATUSES, Event, EventStatus, UserIntent
from app.events.registry import CONTACT_KINDS
from app.moodle.client import MoodleClient
from app.settings import UsersSettings
from app.sync.contacts import Contact
from app.sync.links import user_links
from app.sync.operations import audit
from app.sync.user_work import Work

# Moodle's answer to an update of a site administrator by a token that is not one (4.x: usernotupdatedadmin;
# older core code reused useradminodelete).
ADMIN_REFUSALS = frozenset({"usernotupdatedadmin", "useradminodelete"})
WAYS_OUT = (
    "link it by hand (POST /api/links/users with its username and moodle_user_id) and replay the event, or turn "
    "on users.adopt_existing (users.adopt_auths decides which accounts may be adopted)"
)


@dataclass(frozen=True)
class Verdict:
    adopt: bool
    reason: str  # why not, or "adopt"


def describe(account: dict[str, Any]) -> str:
    return f"Moodle account {account.get('username')!r} (id {account.get('id')}, auth {account.get('auth', '?')!r})"


def verdict(account: dict[str, Any], *, rules: UsersSettings, token_user_id: int | None) -> Verdict:
    """Whether this unlinked account, which the sync did not make, may be adopted under ``rules``."""
    if not rules.adopt_existing:
        return Verdict(False, f"{describe(account)} exists and this service did not make it: it is left untouched")
    if token_user_id is not None and int(account.get("id", 0)) == token_user_id:
        return Verdict(False, f"{describe(account)} is the web-service token's own user: it is never adopted")
    auth = account.get("auth")
    if auth not in rules.adoptable_auths:
        allowed = ", ".join(rules.adoptable_auths)
        return Verdict(
            False, f"{describe(account)} has auth {auth!r}, not one of users.adopt_auths ({allowed}): left untouched"
        )
    return Verdict(True, "adopt")


def refusal_message(reason: str) -> str:
    return f"{reason}. To use it for this contact: {WAYS_OUT}."


def adopt(
    session: AsyncSession, w: Work, account: dict[str, Any], *, rules: UsersSettings, token_user_id: int | None
) -> Outcome | None:
    """Adopt ``account`` for this contact when the rules allow it (audited either way); else the refusal."""
    found = verdict(account, rules=rules, token_user_id=token_user_id)
    target = f"moodle_user:{account.get('id')}"
    if not found.adopt:
        audit(session, actor="sync", action="user.adoption_refused", target=target,
              note=f"{found.reason}; contact {w.contact.key}, event {w.event.id}")  # fmt: skip
        return Outcome(
            EventStatus.needs_review, refusal_message(found.reason), alert="user.adoption", fix=refusal_message("")
        )
    w.moodle_user, w.adopting = account, True
    kept = "overwritten" if rules.adopt_overwrites_password else "kept"
    audit(session, actor="sync", action="user.adopted", target=target,
          note=f"{describe(account)} adopted for contact {w.contact.key} (event {w.event.id}); password {kept}")  # fmt: skip
    return None


async def made_by_sync(session: AsyncSession, usernames: list[str]) -> set[str]:
    """The usernames among these that the sync set out to create (an intent is recorded): never someone else's."""
    rows = await session.execute(select(col(UserIntent.username)).where(col(UserIntent.username).in_(usernames)))
    return set(rows.scalars())


class AccountPlan:
    """What the contacts waiting for a Moodle user would find (a reconcile dry run's migration check): a new
    account, one the sync made, one it would adopt, or one it refuses, under the settings as they are now."""

    PAGE = 500

    def __init__(self, *, sessions: SessionFactory, moodle: MoodleClient, rules: UsersSettings) -> None:
        self.sessions = sessions
        self.moodle = moodle
        self.rules = rules

    async def entries(self) -> AsyncIterator[dict[str, Any]]:
        """Plan entries ({action, reason, username, contact_id[, moodle_user_id, auth]}), a page at a time."""
        seen: set[str] = set()
        token_user_id = await self.moodle.token_user_id() if self.rules.adopt_existing else None
        after = 0
        while True:
            contacts, after, more = await self._waiting(after, seen)
            if contacts:
                for entry in await self._judge(contacts, token_user_id):
                    yield entry
            if not more:
                return

    async def _waiting(self, after: int, seen: set[str]) -> tuple[list[Contact], int, bool]:
        """The next page of contacts of events waiting to run (or for a person), without a user link yet."""
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(col(Event.id), col(Event.payload))
                    .where(
                        col(Event.id) > after,
                        col(Event.kind).in_(CONTACT_KINDS),
                        col(Event.status).in_([*OPEN_STATUSES, EventStatus.needs_review]),
                        col(Event.payload).is_not(None),
                    )
                    .order_by(col(Event.id))
                    .limit(self.PAGE)
                )
            ).all()
            found: dict[str, Contact] = {}
            for _, payload in rows:
                data = payload.get("contact") or (payload.get("registration") or {}).get("contact")
                if data:
                    contact = Contact.model_validate({**data, "password": None})
                    if contact.key not in seen:
                        found[contact.key] = contact  # the newest of the page wins
            linked = await user_links(s, found)
        seen.update(found)
        fresh = [c for key, c in found.items() if key not in linked and f"username:{c.moodle_username}" not in linked]
        last = rows[-1][0] if rows else after
        return fresh, last, len(rows) == self.PAGE

    async def _judge(self, contacts: list[Contact], token_user_id: int | None) -> list[dict[str, Any]]:
        names = sorted({c.moodle_username for c in contacts})
        by_name = {u["username"]: u for u in await self.moodle.get_users_by_field("username", names)}
        by_email: dict[str, dict[str, Any]] = {}
        if self.rules.adopt_existing and self.rules.match_by_email:
            missing = sorted({c.email.lower() for c in contacts if c.moodle_username not in by_name})
            by_email = {
                str(u.get("email", "")).lower(): u for u in await self.moodle.get_users_by_field("email", missing)
            }
        async with self.sessions() as s:
            intents = await made_by_sync(s, names)
        out = []
        for c in contacts:
            target: dict[str, Any] = {"username": c.moodle_username, "contact_id": c.contact_id}
            account = by_name.get(c.moodle_username) or by_email.get(c.email.lower())
            if account is None:
                out.append({"action": "user.create", "reason": "no Moodle account has this username", **target})
                continue
            target.update(moodle_user_id=account.get("id"), auth=account.get("auth"))
            if account["username"] in intents:
                out.append({"action": "user.link", "reason": "the account the sync made (its intent is recorded)",
                            **target})  # fmt: skip
                continue
            found = verdict(account, rules=self.rules, token_user_id=token_user_id)
            action = "user.adopt" if found.adopt else "user.refuse"
            reason = f"{describe(account)} would be adopted" if found.adopt else found.reason
            out.append({"action": action, "reason": reason, **target})
        return out
