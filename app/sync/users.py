"""Contacts -> Moodle users: create, rename, update under the field policy, suspend; adopt only when allowed.

One call handles a batch of contact events: it reads Moodle in a few array calls, creates the new users
in all-or-nothing batches (split to isolate a refused one) and updates the rest per user. A registration whose
contact brings nothing new, for a user confirmed in Moodle moments ago, is answered from its link without a read.

An unlinked Moodle account with the contact's username is the contact's only when the sync made it: an intent
(username, contact) is committed before every create call and dropped with the link, so a crash or a race between
the create and the link still ends in one linked user. Any other account is someone else's: it is adopted only
under app.sync.adoption's rules, else left untouched and the event goes to needs_review.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import delete, insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.crypto import Vault
from app.db.inbox import Outcome
from app.db.models import Event, EventStatus, UserIntent, UserLink
from app.db.types import utcnow
from app.db.upsert import insert_for
from app.events.registry import EventKind
from app.moodle.client import MoodleClient
from app.moodle.errors import MoodleError, MoodleInvalidParameter, MoodlePasswordPolicy
from app.settings import FieldPolicy, UsersSettings
from app.sync.adoption import ADMIN_REFUSALS, describe, refusal_message, verdict
from app.sync.contacts import Contact, password_failures
from app.sync.gone import deleted_in_moodle, held
from app.sync.operations import audit

log = structlog.get_logger(__name__)

# Contact attribute -> Moodle user field.
FIELD_MAP = {"firstname": "firstname", "lastname": "lastname", "email": "email", "phone1": "phone"}
# A link written this recently (a Moodle read or write confirmed the user) is trusted for a registration as it is.
CONFIRMED_FOR = timedelta(minutes=5)
# Set in an event's result to have its next attempt read the user from Moodle (its enrolment was refused).
VERIFY_USER = "verify_user"


@dataclass
class Work:
    """One contact to bring into Moodle, and the events it answers for."""

    event: Event
    contact: Contact
    password: str | None
    superseded: list[Event] = field(default_factory=list)
    link: UserLink | None = None
    moodle_user: dict[str, Any] | None = None
    adopting: bool = False  # an existing account this run adopts (its first link)
    lost_user_id: int | None = None  # the linked Moodle user, deleted in Moodle: made again


def contact_of(event: Event) -> Contact:
    """The contact an event carries: its own (contact.upserted) or its registration's."""
    payload = event.payload or {}
    data = payload.get("contact") or payload["registration"]["contact"]
    return Contact.model_validate(data)


def collapse(events: list[Event], vault: Vault) -> list[Work]:
    """One unit of work per contact: the latest event wins, carrying the newest password seen."""
    by_key: dict[str, Work] = {}
    for event in sorted(events, key=lambda e: e.id or 0):
        contact = contact_of(event)
        password = vault.decrypt(event.secret) if event.secret else None
        prior = by_key.get(contact.key)
        if prior is not None:
            password = password or prior.password
            by_key[contact.key] = Work(event, contact, password, [*prior.superseded, prior.event])
        else:
            by_key[contact.key] = Work(event, contact, password)
    return list(by_key.values())


class UserSync:
    """Applies contact events to Moodle; the caller owns the transaction."""

    def __init__(self, *, session: AsyncSession, moodle: MoodleClient, vault: Vault, rules: UsersSettings) -> None:
        self.session = session
        self.moodle = moodle
        self.vault = vault
        self.rules = rules
        # Events answered from their link without a Moodle read (see _settled).
        self.unverified: set[int] = set()
        self._new_links: list[dict[str, Any]] = []
        self._intents: set[str] = set()  # usernames the sync set out to create (committed before the create call)
        self._settled_intents: set[str] = set()  # intents to drop with this run's links (or failed creates)
        self._token_user_id: int | None = None
        self._made_intents = False

    async def run(self, events: list[Event]) -> dict[int, Outcome]:
        """Outcome per event id. Transient Moodle errors propagate: the whole batch is retried."""
        works = collapse(events, self.vault)
        outcomes: dict[int, Outcome] = {}
        stopped = await held(
            self.session, [k for w in works for k in (w.contact.key, f"username:{w.contact.moodle_username}")]
        )
        if stopped:
            for w in [w for w in works if {w.contact.key, f"username:{w.contact.moodle_username}"} & stopped]:
                works.remove(w)
                skipped = Outcome(EventStatus.done, result={"skipped": "the contact is marked do not sync"})
                for event in (w.event, *w.superseded):
                    outcomes[event.id] = skipped  # type: ignore[index]
        await self._load_links(works)
        checked: list[Work] = []
        for work in works:
            if self._settled(work):
                outcomes[work.event.id] = self._from_link(work)  # type: ignore[index]
            else:
                checked.append(work)
        await self._load_moodle_users(checked)
        await self._load_intents(checked)
        if self.rules.adopt_existing and any(self._foreign(w) for w in checked):
            self._token_user_id = await self.moodle.token_user_id()
        creates: list[Work] = []
        updates: list[tuple[Work, dict[str, Any]]] = []
        for work in checked:
            decided = self._decide(work, creates, updates)
            if decided is not None:
                outcomes[work.event.id] = decided  # type: ignore[index]
        outcomes.update(await self._create(creates, updates))
        outcomes.update(await self._update(updates))
        await self._insert_links()
        for work in works:
            final = outcomes[work.event.id]  # type: ignore[index]
            for old in work.superseded:
                outcomes[old.id] = Outcome(
                    final.status, final.error, {**(final.result or {}), "superseded_by": work.event.id}
                )  # type: ignore[index]
        return outcomes

    # -- reading ---------------------------------------------------------------------------

    async def _load_links(self, works: list[Work]) -> None:
        ids = [w.contact.contact_id for w in works if w.contact.contact_id]
        names = [w.contact.moodle_username for w in works]
        rows = (
            await self.session.execute(
                select(UserLink).where(or_(UserLink.contact_id.in_(ids), UserLink.username.in_(names)))
            )
        ).scalars()
        by_id = {}
        by_name = {}
        for link in rows:
            if link.contact_id:
                by_id[link.contact_id] = link
            by_name[link.username] = link
        for w in works:
            cid = w.contact.contact_id
            link = by_id.get(cid) if cid else None
            if link is None:
                candidate = by_name.get(w.contact.moodle_username)
                # A username link that belongs to another contact id is not ours to take.
                if candidate is not None and candidate.contact_id in (None, cid):
                    link = candidate
            w.link = link

    async def _load_moodle_users(self, works: list[Work]) -> None:
        linked = [w for w in works if w.link]
        by_id = {
            u["id"]: u for u in await self.moodle.get_users_by_field("id", [w.link.moodle_user_id for w in linked])
        }  # type: ignore[union-attr]
        for w in linked:
            w.moodle_user = by_id.get(w.link.moodle_user_id)  # type: ignore[union-attr]
            if deleted_in_moodle(w.moodle_user, w.link):  # type: ignore[arg-type]
                # Deleted in Moodle (answered by id all the same, renamed: recording 150): forget the link; the user
                # is looked up by name or made again.
                log.warning("moodle.user.link_lost", moodle_user_id=w.link.moodle_user_id)  # type: ignore[union-attr]
                w.lost_user_id, w.moodle_user = w.link.moodle_user_id, None  # type: ignore[union-attr]
                await self.session.delete(w.link)
                await self.session.flush()
                w.link = None
        unlinked = [w for w in works if not w.link]
        names = sorted({w.contact.moodle_username for w in unlinked})
        by_name = {u["username"]: u for u in await self.moodle.get_users_by_field("username", names)}
        for w in unlinked:
            w.moodle_user = by_name.get(w.contact.moodle_username)

    async def _load_intents(self, works: list[Work]) -> None:
        names = sorted({w.moodle_user["username"] for w in works if w.link is None and w.moodle_user})
        if names:
            rows = await self.session.execute(select(UserIntent.username).where(UserIntent.username.in_(names)))
            self._intents = set(rows.scalars())

    def _foreign(self, w: Work) -> bool:
        """An existing account, not linked, that the sync did not set out to make: someone else's until adopted."""
        return w.link is None and w.moodle_user is not None and w.moodle_user["username"] not in self._intents

    # -- deciding --------------------------------------------------------------------------

    def _settled(self, w: Work) -> bool:
        """Registrations only, bringing nothing new, for a user confirmed moments ago: the enrolment needs no read.

        A contact event always reads Moodle (it is how a person repairs a user); so does a registration whose
        enrolment was refused (VERIFY_USER).
        """
        link = w.link
        if link is None or link.data_digest is None or utcnow() - link.updated_at > CONFIRMED_FOR:
            return False
        for event in (w.event, *w.superseded):
            if event.kind != EventKind.registration_registered or (event.result or {}).get(VERIFY_USER):
                return False
        same_password = w.password is None or link.password_digest == self._digest(w.password)
        return same_password and link.data_digest == self._data_digest(w.contact)

    def _from_link(self, w: Work) -> Outcome:
        self.unverified.update(e.id for e in (w.event, *w.superseded))  # type: ignore[misc]
        moodle_user_id = w.link.moodle_user_id  # type: ignore[union-attr]
        return Outcome(EventStatus.done, result={"moodle_user_id": moodle_user_id, "action": "unchanged"})

    def _decide(self, w: Work, creates: list[Work], updates: list[tuple[Work, dict[str, Any]]]) -> Outcome | None:
        c = w.contact
        if w.password is not None and password_failures(w.password, self.rules):
            return Outcome(EventStatus.failed, "password does not meet the site password policy (users.* settings)")
        if w.moodle_user is None:
            if not c.active:
                return Outcome(EventStatus.done, result={"skipped": "contact is inactive: no Moodle user is made"})
            if not w.password:
                return Outcome(
                    EventStatus.failed,
                    "the contact has no password: a Moodle user is only made for a contact with a portal password",
                )
            creates.append(w)
            return None
        if self._foreign(w):
            refused = self._adopt(w, w.moodle_user)  # type: ignore[arg-type]
            if refused is not None:
                return refused
        else:
            self._settled_intents.add(w.moodle_user["username"])
        updates.append((w, self._changes(w)))
        return None

    def _adopt(self, w: Work, account: dict[str, Any]) -> Outcome | None:
        """Adopt ``account`` for this contact when the rules allow it (audited either way); else the refusal."""
        found = verdict(account, rules=self.rules, token_user_id=self._token_user_id)
        target = f"moodle_user:{account.get('id')}"
        if not found.adopt:
            audit(self.session, actor="sync", action="user.adoption_refused", target=target,
                  note=f"{found.reason}; contact {w.contact.key}, event {w.event.id}")  # fmt: skip
            return Outcome(
                EventStatus.needs_review, refusal_message(found.reason), alert="user.adoption", fix=refusal_message("")
            )
        w.moodle_user, w.adopting = account, True
        kept = "overwritten" if self.rules.adopt_overwrites_password else "kept"
        audit(self.session, actor="sync", action="user.adopted", target=target,
              note=f"{describe(account)} adopted for contact {w.contact.key} (event {w.event.id}); password {kept}")  # fmt: skip
        return None

    def _keeps_password(self, w: Work) -> bool:
        """An adopted account's password is its own unless users.adopt_overwrites_password."""
        adopted = w.adopting or (w.link is not None and w.link.adopted)
        return adopted and not self.rules.adopt_overwrites_password

    def _changes(self, w: Work) -> dict[str, Any]:
        """Fields to write to an existing Moodle user under the per-field policy."""
        c, current, link = w.contact, w.moodle_user or {}, w.link
        out: dict[str, Any] = {}
        if current.get("username") != c.moodle_username:
            out["username"] = c.moodle_username
        for mfield, attr in FIELD_MAP.items():
            value = getattr(c, attr) or ""
            policy = self.rules.policy(mfield)
            if mfield not in current:
                # Hidden from this token (names without moodle/site:viewfullnames, recording 040; phone):
                # a locked field is written when the contact changed since we last wrote it.
                if policy == FieldPolicy.locked and (link is None or link.data_digest != self._data_digest(c)):
                    out[mfield] = value
                continue
            have = current.get(mfield)
            if value == (have or ""):
                continue
            if policy == FieldPolicy.locked or (policy == FieldPolicy.unlocked_if_empty and not have):
                out[mfield] = value
        if (
            w.password
            and not self._keeps_password(w)
            and (link is None or link.password_digest != self._digest(w.password))
        ):
            out["password"] = w.password
        if not c.active and self.rules.suspend_inactive and not current.get("suspended"):
            out["suspended"] = 1
        elif c.active and link is not None and link.suspended_by_sync and current.get("suspended"):
            out["suspended"] = 0
        return out

    def _digest(self, password: str) -> str:
        return self.vault.digest(["password", password])

    def _data_digest(self, c: Contact) -> str:
        return self.vault.digest(["contact", c.model_dump(exclude={"password"})])

    # -- writing ---------------------------------------------------------------------------

    async def _create(self, creates: list[Work], updates: list[tuple[Work, dict[str, Any]]]) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        if not creates:
            return outcomes
        taken = await self._emails_taken(creates)
        todo: list[Work] = []
        for w in creates:
            other = taken.get(w.contact.email.lower())
            if other is None:
                todo.append(w)
            elif self.rules.match_by_email and self.rules.adopt_existing:
                if self._token_user_id is None:
                    self._token_user_id = await self.moodle.token_user_id()
                refused = self._adopt(w, other)
                if refused is not None:
                    outcomes[w.event.id] = refused  # type: ignore[index]
                else:
                    updates.append((w, self._changes(w)))
            else:
                outcomes[w.event.id] = Outcome(  # type: ignore[index]
                    EventStatus.failed,
                    f"email {w.contact.email!r} already belongs to Moodle user {other['username']!r} "
                    f"(id {other['id']}); to use that account for this contact set users.adopt_existing and "
                    "users.match_by_email to true, or change one of the emails",
                )
        if not todo:
            return outcomes
        await self._intend(todo)
        results = await self.moodle.create_users([self._new_user(w) for w in todo])
        for w, res in zip(todo, results, strict=True):
            self._settled_intents.add(w.contact.moodle_username)
            if res.ok:
                self._link(w, int(res.value["id"]), created=True)  # type: ignore[index]
                if w.lost_user_id is not None:
                    audit(self.session, actor="sync", action="user.recreated", target=f"moodle_user:{res.value['id']}",  # type: ignore[index]
                          note=f"Moodle user {w.lost_user_id} of contact {w.contact.key} was deleted in Moodle: "
                               f"made again (event {w.event.id})")  # fmt: skip
                outcomes[w.event.id] = Outcome(
                    EventStatus.done, result={"moodle_user_id": int(res.value["id"]), "action": "created"}
                )  # type: ignore[index]
                continue
            # Another worker, holding the same intent, may have made this user a moment ago: it is ours.
            again = await self.moodle.get_users_by_field("username", [w.contact.moodle_username])
            if again:
                w.moodle_user = again[0]
                updates.append((w, self._changes(w)))
                continue
            outcomes[w.event.id] = Outcome(EventStatus.failed, _explain(res.error))  # type: ignore[index, arg-type]
        return outcomes

    async def _intend(self, todo: list[Work]) -> None:
        """Commit the intents before the create call: the one commit inside a run, so that a crash after Moodle
        made the users (before their links commit) leaves proof that they are the sync's own."""
        rows = [
            {"username": w.contact.moodle_username, "contact_id": w.contact.contact_id, "event_id": w.event.id,
             "created_at": utcnow()}
            for w in todo
        ]  # fmt: skip
        statement = insert_for(self.session, UserIntent.__table__).on_conflict_do_nothing(index_elements=["username"])
        await self.session.execute(statement, rows)
        await self.session.commit()
        self._made_intents = True

    async def _emails_taken(self, creates: list[Work]) -> dict[str, dict[str, Any]]:
        emails = sorted({w.contact.email.lower() for w in creates})
        found = await self.moodle.get_users_by_field("email", emails)
        return {str(u.get("email", "")).lower(): u for u in found}

    def _new_user(self, w: Work) -> dict[str, Any]:
        c = w.contact
        user: dict[str, Any] = {
            "username": c.moodle_username,
            "auth": self.rules.auth,
            "password": w.password,
            "firstname": c.firstname,
            "lastname": c.lastname,
            "email": c.email,
        }
        if c.phone:
            user["phone1"] = c.phone
        if c.contact_id:
            user["idnumber"] = str(c.contact_id)
        return user

    async def _update(self, updates: list[tuple[Work, dict[str, Any]]]) -> dict[int, Outcome]:
        outcomes: dict[int, Outcome] = {}
        send = [(w, ch) for w, ch in updates if ch]
        for w, ch in updates:
            if not ch:
                self._link(w, int(w.moodle_user["id"]), created=False, password_applied=not self._keeps_password(w))  # type: ignore[index]
                outcomes[w.event.id] = Outcome(
                    EventStatus.done, result={"moodle_user_id": int(w.moodle_user["id"]), "action": "unchanged"}
                )  # type: ignore[index]
        if not send:
            return outcomes
        payload = [{"id": int(w.moodle_user["id"]), **ch} for w, ch in send]  # type: ignore[index]
        try:
            warnings = await self.moodle.update_users(payload)
        except (MoodleInvalidParameter, MoodlePasswordPolicy) as exc:
            for w, _ in send:
                outcomes[w.event.id] = Outcome(EventStatus.failed, _explain(exc))  # type: ignore[index]
            return outcomes
        for (w, ch), item in zip(send, payload, strict=True):
            uid = item["id"]
            warning = warnings.get(uid)
            if warning is not None and warning.get("warningcode") in ADMIN_REFUSALS:
                reason = f"Moodle refused to update {describe(w.moodle_user or {})}: it is a site administrator"
                audit(self.session, actor="sync", action="user.adoption_refused", target=f"moodle_user:{uid}",
                      note=f"{reason}; contact {w.contact.key}, event {w.event.id}")  # fmt: skip
                outcomes[w.event.id] = Outcome(  # type: ignore[index]
                    EventStatus.needs_review, refusal_message(reason), alert="user.adoption", fix=refusal_message("")
                )
                continue
            if warning is not None and warning.get("warningcode") == "usernotupdateddeleted" and w.link is not None:
                # Deleted in Moodle since we read it (recording 154): the next attempt makes it again.
                await self.session.delete(w.link)
                outcomes[w.event.id] = Outcome(  # type: ignore[index]
                    EventStatus.retrying, f"Moodle user {uid} was deleted in Moodle: it is made again",
                    next_attempt_at=utcnow(),
                )  # fmt: skip
                continue
            if warning is not None:
                outcomes[w.event.id] = Outcome(EventStatus.failed, _explain_warning(warning, ch))  # type: ignore[index]
                continue
            self._link(w, uid, created=False, suspended=ch.get("suspended"), password_applied="password" in ch)
            outcomes[w.event.id] = Outcome(  # type: ignore[index]
                EventStatus.done,
                result={
                    "moodle_user_id": uid,
                    "action": "updated",
                    "fields": sorted(k for k in ch if k != "password") + (["password"] if "password" in ch else []),
                },
            )
        return outcomes

    def _link(
        self,
        w: Work,
        moodle_user_id: int,
        *,
        created: bool,
        suspended: int | None = None,
        password_applied: bool = True,
    ) -> None:
        """Record (or refresh) the link in this transaction; the password's digest only once applied. A new link
        is a row for ``_insert_links`` (one executemany for the batch), not an ORM object."""
        values: dict[str, Any] = {
            "contact_id": w.contact.contact_id or (w.link.contact_id if w.link else None),
            "username": w.contact.moodle_username,
            "moodle_user_id": moodle_user_id,
            "data_digest": self._data_digest(w.contact),
            "updated_at": utcnow(),
        }
        if w.password and password_applied:
            values["password_digest"] = self._digest(w.password)
        if suspended is not None:
            values["suspended_by_sync"] = bool(suspended)
        if w.adopting:
            values["adopted"] = True
        self._settled_intents.add(w.contact.moodle_username)
        if w.link is not None:
            for name, value in values.items():
                setattr(w.link, name, value)
        else:
            # Every new row has every column: one shape for the executemany.
            fresh = {
                "password_digest": None, "suspended_by_sync": False, "adopted": False, "created_at": values["updated_at"]
            }  # fmt: skip
            self._new_links.append(fresh | values)
        log.info("moodle.user.created" if created else "moodle.user.linked", moodle_user_id=moodle_user_id)

    async def _insert_links(self) -> None:
        rows, self._new_links = self._new_links, []
        if rows:
            await self.session.execute(insert(UserLink.__table__), rows)  # type: ignore[attr-defined]
        # The intents end with their links (or their failed creates), in the same commit.
        done, self._settled_intents = self._settled_intents, set()
        if done and (self._intents or self._made_intents):
            await self.session.execute(delete(UserIntent).where(UserIntent.username.in_(sorted(done))))


def _explain(exc: MoodleError) -> str:
    if isinstance(exc, MoodlePasswordPolicy):
        return "Moodle refused the password: " + " ".join(exc.rules)
    if isinstance(exc, MoodleInvalidParameter) and exc.function == "core_user_create_users":
        hint = f" ({exc.debuginfo})" if exc.debuginfo else ""
        return (
            "Moodle refused the new user as invalid" + hint + ": usually the email is already used by another "
            "account that this token cannot see (grant moodle/site:viewuseridentity), or a username rule differs"
        )
    return f"Moodle refused the change: {exc}"


def _explain_warning(warning: dict[str, Any], changes: dict[str, Any]) -> str:
    code = warning.get("warningcode")
    if code == "dmlwriteexception" and "username" in changes:
        return f"Moodle could not rename the user to {changes['username']!r}: that username is taken by another user"
    return f"Moodle refused the update: {warning.get('message')} [{code}]"
