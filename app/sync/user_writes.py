"""What a user run writes: Moodle users made (intent first) and updated, and the links that record them.

An intent (username, contact) is committed before every create call and dropped with the link, in the same commit:
an unlinked account with an intent's username is then the sync's own, whatever crash or race came between the
create and the link. New links are rows for one executemany at the end of the run, not ORM objects.
"""

from __future__ import annotations

from typing import Any

import structlog
from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.db.arrays import insert_rows, one_of
from app.db.inbox import Outcome
from app.db.models import EventStatus, UserIntent, UserLink
from app.db.tenancy import tenant_of
from app.db.types import utcnow
from app.db.upsert import insert_for
from app.moodle.client import MoodleClient
from app.moodle.errors import MoodleInvalidParameter, MoodlePasswordPolicy
from app.sync.adoption import ADMIN_REFUSALS, describe, refusal_message
from app.sync.operations import audit
from app.sync.tables import table_of
from app.sync.user_fields import UserFields, explain, explain_warning
from app.sync.user_work import Updates, Work

log = structlog.get_logger(__name__)


class UserWrites:
    """Creates and updates Moodle users for one run and keeps their links and intents; the caller commits all but
    the intents, which are committed before the create call."""

    def __init__(self, *, session: AsyncSession, moodle: MoodleClient, fields: UserFields) -> None:
        self.session = session
        self.moodle = moodle
        self.fields = fields
        self.intents: set[str] = set()  # usernames the sync set out to create (committed before the create call)
        self._settled_intents: set[str] = set()  # intents to drop with this run's links (or failed creates)
        self._new_links: list[dict[str, Any]] = []
        self._made_intents = False

    def settle(self, username: str) -> None:
        """The intent for ``username``, if any, ends with this run's links."""
        self._settled_intents.add(username)

    async def create(
        self, todo: list[Work], updates: Updates, *, presumed_new: bool = False
    ) -> tuple[dict[int, Outcome], list[Work]]:
        """Make the users in all-or-nothing batches; one another worker made meanwhile joins ``updates``.

        ``presumed_new``: the users were not looked up first (into an empty Moodle there is nothing to find). A batch
        Moodle refuses made nobody: its works come back, unanswered, to be looked up, and the intents this call
        recorded for them are withdrawn first (an account with their username is not the sync's own)."""
        outcomes: dict[int, Outcome] = {}
        fresh = await self._intend(todo)
        results = await self.moodle.create_users([self.fields.new_user(w) for w in todo], isolate=not presumed_new)
        refused: list[Work] = []
        for w, res in zip(todo, results, strict=True):
            if not res.ok and presumed_new:
                refused.append(w)
                continue
            self.settle(w.contact.moodle_username)
            if res.ok:
                assert res.value is not None  # a made item carries Moodle's answer
                user_id = int(res.value["id"])
                self.link(w, user_id, created=True)
                if w.lost_user_id is not None:
                    audit(self.session, actor="sync", action="user.recreated", target=f"moodle_user:{res.value['id']}",
                          note=f"Moodle user {w.lost_user_id} of contact {w.contact.key} was deleted in Moodle: "
                               f"made again (event {w.event.id})")  # fmt: skip
                outcomes[w.event.id] = Outcome(
                    EventStatus.done, result={"moodle_user_id": user_id, "action": "created"}
                )
                continue
            # Another worker, holding the same intent, may have made this user a moment ago: it is ours.
            again = await self.moodle.get_users_by_field("username", [w.contact.moodle_username])
            if again:
                w.moodle_user = again[0]
                updates.append((w, self.fields.changes(w)))
                continue
            outcomes[w.event.id] = Outcome(EventStatus.failed, explain(res.error))
        if refused:
            withdrawn = sorted(fresh & {w.contact.moodle_username for w in refused})
            if withdrawn:
                await self.session.execute(delete(UserIntent).where(col(UserIntent.username).in_(withdrawn)))
                await self.session.commit()
        return outcomes, refused

    async def _intend(self, todo: list[Work]) -> set[str]:
        """Commit the intents before the create call: the one commit inside a run, so that a crash after Moodle
        made the users (before their links commit) leaves proof that they are the sync's own. The usernames whose
        intent this call recorded (an earlier attempt's are kept as they are)."""
        rows = [
            {"tenant_id": tenant_of(self.session), "username": w.contact.moodle_username,
             "contact_id": w.contact.contact_id, "event_id": w.event.id, "created_at": utcnow()}
            for w in todo
        ]  # fmt: skip
        statement = (
            insert_for(self.session, table_of(UserIntent))
            .on_conflict_do_nothing(index_elements=["tenant_id", "username"])
            .returning(table_of(UserIntent).c.username)
        )
        fresh = set((await self.session.execute(statement, rows)).scalars())
        await self.session.commit()
        self._made_intents = True
        return fresh

    async def update(self, updates: Updates) -> dict[int, Outcome]:
        """Send the changes in one call; a user with none only has its link refreshed."""
        outcomes: dict[int, Outcome] = {}
        send = [(w, ch) for w, ch in updates if ch]
        for w, ch in updates:
            if not ch:
                user_id = int(_account(w)["id"])
                self.link(w, user_id, created=False, password_applied=not self.fields.keeps_password(w))
                outcomes[w.event.id] = Outcome(
                    EventStatus.done, result={"moodle_user_id": user_id, "action": "unchanged"}
                )
        if not send:
            return outcomes
        payload = [{"id": int(_account(w)["id"]), **ch} for w, ch in send]
        try:
            warnings = await self.moodle.update_users(payload)
        except (MoodleInvalidParameter, MoodlePasswordPolicy) as exc:
            for w, _ in send:
                outcomes[w.event.id] = Outcome(EventStatus.failed, explain(exc))
            return outcomes
        for (w, ch), item in zip(send, payload, strict=True):
            uid = item["id"]
            warning = warnings.get(uid)
            if warning is not None:
                outcomes[w.event.id] = await self._warned(w, ch, uid, warning)
                continue
            self.link(w, uid, created=False, suspended=ch.get("suspended"), password_applied="password" in ch)
            fields = sorted(k for k in ch if k != "password") + (["password"] if "password" in ch else [])
            outcomes[w.event.id] = Outcome(
                EventStatus.done, result={"moodle_user_id": uid, "action": "updated", "fields": fields}
            )
        return outcomes

    async def _warned(self, w: Work, changes: dict[str, Any], uid: int, warning: dict[str, Any]) -> Outcome:
        """An update Moodle answered with a warning: it did not apply it."""
        code = warning.get("warningcode")
        if code in ADMIN_REFUSALS:
            reason = f"Moodle refused to update {describe(w.moodle_user or {})}: it is a site administrator"
            audit(self.session, actor="sync", action="user.adoption_refused", target=f"moodle_user:{uid}",
                  note=f"{reason}; contact {w.contact.key}, event {w.event.id}")  # fmt: skip
            return Outcome(
                EventStatus.needs_review, refusal_message(reason), alert="user.adoption", fix=refusal_message("")
            )
        if code == "usernotupdateddeleted" and w.link is not None:
            # Deleted in Moodle since we read it (recording 154): the next attempt makes it again.
            await self.session.delete(w.link)
            return Outcome(
                EventStatus.retrying, f"Moodle user {uid} was deleted in Moodle: it is made again",
                next_attempt_at=utcnow(),
            )  # fmt: skip
        return Outcome(EventStatus.failed, explain_warning(warning, changes))

    def link(
        self,
        w: Work,
        moodle_user_id: int,
        *,
        created: bool,
        suspended: int | None = None,
        password_applied: bool = True,
    ) -> None:
        """Record (or refresh) the link in this transaction; the password's digest only once applied. A new link
        is a row for ``insert_links`` (one statement for the batch), not an ORM object."""
        values: dict[str, Any] = {
            "contact_id": w.contact.contact_id or (w.link.contact_id if w.link else None),
            "username": w.contact.moodle_username,
            "moodle_user_id": moodle_user_id,
            "data_digest": self.fields.data_digest(w.contact),
            "updated_at": utcnow(),
        }
        if w.password and password_applied:
            values["password_digest"] = self.fields.digest(w.password)
        if suspended is not None:
            values["suspended_by_sync"] = bool(suspended)
        if w.adopting:
            values["adopted"] = True
        self.settle(w.contact.moodle_username)
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

    async def insert_links(self) -> None:
        """The run's new links in one statement; the intents they settle are dropped in the same transaction."""
        rows, self._new_links = self._new_links, []
        if rows:
            tenant = {"tenant_id": tenant_of(self.session)}
            await insert_rows(self.session, table_of(UserLink), [row | tenant for row in rows])
        # The intents end with their links (or their failed creates), in the same commit.
        done, self._settled_intents = self._settled_intents, set()
        if done and (self.intents or self._made_intents):
            # No intent is ever an object in the session (rows in, rows out): nothing to synchronise, no RETURNING.
            gone = delete(UserIntent).where(one_of(self.session, col(UserIntent.username), sorted(done)))
            await self.session.execute(gone.execution_options(synchronize_session=False))


def _account(w: Work) -> dict[str, Any]:
    """The Moodle user an update is for (every update has one: it was read, adopted or just made)."""
    assert w.moodle_user is not None
    return w.moodle_user
