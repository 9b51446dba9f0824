"""Contacts -> Moodle users: create, rename, update under the field policy, suspend; adopt only when allowed.

One call handles a batch of contact events: it reads Moodle in a few array calls, creates the new users
in all-or-nothing batches (split to isolate a refused one) and updates the rest per user. A registration whose
contact brings nothing new, for a user confirmed in Moodle moments ago, is answered from its link without a read.

An unlinked Moodle account with the contact's username is the contact's only when the sync made it: an intent
(username, contact) is committed before every create call and dropped with the link (app.sync.user_writes), so a
crash or a race between the create and the link still ends in one linked user. Any other account is someone else's:
it is adopted only under app.sync.adoption's rules, else left untouched and the event goes to needs_review.
This module reads and decides; app.sync.user_fields says what a user should hold, app.sync.user_writes writes it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.crypto import Vault
from app.db.arrays import one_of
from app.db.inbox import Outcome
from app.db.models import Event, EventStatus, UserLink
from app.db.types import utcnow
from app.events.registry import EventKind
from app.moodle.client import MoodleClient
from app.settings import UsersSettings
from app.sync.adoption import adopt, made_by_sync
from app.sync.contacts import password_failures
from app.sync.gone import deleted_in_moodle, held
from app.sync.user_fields import UserFields
from app.sync.user_work import Updates, Work, answer_superseded, collapse
from app.sync.user_writes import UserWrites

log = structlog.get_logger(__name__)

# A link written this recently (a Moodle read or write confirmed the user) is trusted for a registration as it is.
CONFIRMED_FOR = timedelta(minutes=5)
# A contact event is trusted to its link (no Moodle read) when the link was written after the event arrived, or at
# most this long before: its registrations, stored first from concurrent deliveries or claimed first, made the
# user with the same data a moment ago. A person repairing a user by sending the contact again comes later.
JUST_WRITTEN = timedelta(seconds=30)
# Set in an event's result to have its next attempt read the user from Moodle (its enrolment was refused).
VERIFY_USER = "verify_user"


class UserSync:
    """Applies contact events to Moodle; the caller owns the transaction."""

    def __init__(self, *, session: AsyncSession, moodle: MoodleClient, vault: Vault, rules: UsersSettings) -> None:
        self.session = session
        self.moodle = moodle
        self.vault = vault
        self.rules = rules
        self.fields = UserFields(rules=rules, vault=vault)
        self.writes = UserWrites(session=session, moodle=moodle, fields=self.fields)
        # Events answered from their link without a Moodle read (see _settled).
        self.unverified: set[int] = set()
        self._token_user_id: int | None = None

    async def run(self, events: list[Event]) -> dict[int, Outcome]:
        """Outcome per event id. Transient Moodle errors propagate: the whole batch is retried."""
        works = collapse(events, self.vault)
        outcomes = await self._hold_back(works)
        await self._load_links(works)
        checked: list[Work] = []
        for work in works:
            if self._settled(work):
                outcomes[work.event.id] = self._from_link(work)
            else:
                checked.append(work)
        await self._load_moodle_users(checked)
        # Unless Moodle makes accounts whose email another has, a create tells as much as a look-up would: Moodle
        # refuses a taken username or email, and refuses the whole batch. The unlinked are then created first and
        # looked up only when their batch is refused.
        presumed_new = not self.rules.allow_same_email
        unlinked = [w for w in checked if not w.link]
        # Only a contact that would be made is presumed new: one without a password or inactive is made nowhere,
        # so what it finds decides (an existing account is adopted or left alone).
        await self._look_up_by_name([w for w in unlinked if not (presumed_new and w.contact.active and w.password)])
        creates: list[Work] = []
        updates: Updates = []
        await self._decide_all(checked, creates, updates, outcomes)
        if presumed_new and creates:
            made, refused = await self.writes.create(creates, updates, presumed_new=True)
            outcomes.update(made)
            await self._look_up_by_name(refused)
            creates = []
            await self._decide_all(refused, creates, updates, outcomes)
        outcomes.update(await self._create(creates, updates))
        outcomes.update(await self.writes.update(updates))
        await self._insert_links()
        answer_superseded(works, outcomes)
        return outcomes

    async def _hold_back(self, works: list[Work]) -> dict[int, Outcome]:
        """Take the contacts marked "do not sync" out of ``works``; their events are done, skipped."""
        outcomes: dict[int, Outcome] = {}
        stopped = await held(self.session, [k for w in works for k in w.keys])
        if stopped:
            for w in [w for w in works if w.keys & stopped]:
                works.remove(w)
                skipped = Outcome(EventStatus.done, result={"skipped": "the contact is marked do not sync"})
                for event in w.events:
                    outcomes[event.id] = skipped
        return outcomes

    # -- reading ---------------------------------------------------------------------------

    async def _load_links(self, works: list[Work]) -> None:
        ids = [w.contact.contact_id for w in works if w.contact.contact_id]
        # Two reads, each on its own unique index: one read with an OR of both lists was planned, from the statistics
        # of an empty table, as a walk of every link of the tenant (5 ms a round at 10,000 links). The second asks
        # only for the contacts the first did not answer (a registration's contact is linked: 10,000 links fewer to
        # load in a first sync's drain).
        found = await self.session.execute(select(UserLink).where(one_of(self.session, col(UserLink.contact_id), ids)))
        by_id: dict[int, UserLink] = {link.contact_id: link for link in found.scalars() if link.contact_id}
        names = [w.contact.moodle_username for w in works if w.contact.contact_id not in by_id]
        by_name: dict[str, UserLink] = {}
        if names:
            named = select(UserLink).where(one_of(self.session, col(UserLink.username), names))
            by_name = {link.username: link for link in (await self.session.execute(named)).scalars()}
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
        linked = [(w, w.link) for w in works if w.link]
        by_id = {u["id"]: u for u in await self.moodle.get_users_by_field("id", [k.moodle_user_id for _, k in linked])}
        for w, link in linked:
            w.moodle_user = by_id.get(link.moodle_user_id)
            if deleted_in_moodle(w.moodle_user, link):
                # Deleted in Moodle (answered by id all the same, renamed: recording 150): forget the link; the user
                # is looked up by name or made again.
                log.warning("moodle.user.link_lost", moodle_user_id=link.moodle_user_id)
                w.lost_user_id, w.moodle_user = link.moodle_user_id, None
                await self.session.delete(link)
                await self.session.flush()
                w.link = None

    async def _look_up_by_name(self, unlinked: list[Work]) -> None:
        names = sorted({w.contact.moodle_username for w in unlinked})
        by_name = {u["username"]: u for u in await self.moodle.get_users_by_field("username", names)}
        for w in unlinked:
            w.moodle_user = by_name.get(w.contact.moodle_username)

    async def _load_intents(self, works: list[Work]) -> None:
        names = sorted({w.moodle_user["username"] for w in works if w.link is None and w.moodle_user})
        if names:  # added to: a refused batch's second pass keeps what the first pass read
            self.writes.intents |= await made_by_sync(self.session, names)

    def _foreign(self, w: Work) -> bool:
        """An existing account, not linked, that the sync did not set out to make: someone else's until adopted."""
        return w.link is None and w.moodle_user is not None and w.moodle_user["username"] not in self.writes.intents

    # -- deciding --------------------------------------------------------------------------

    async def _decide_all(
        self, works: list[Work], creates: list[Work], updates: Updates, outcomes: dict[int, Outcome]
    ) -> None:
        await self._load_intents(works)
        if self.rules.adopt_existing and self._token_user_id is None and any(self._foreign(w) for w in works):
            self._token_user_id = await self.moodle.token_user_id()
        for work in works:
            decided = self._decide(work, creates, updates)
            if decided is not None:
                outcomes[work.event.id] = decided

    def _settled(self, w: Work) -> bool:
        """Bringing nothing new, for a user confirmed moments ago: the enrolment needs no read.

        A contact event reads Moodle (it is how a person repairs a user), unless its user was written or read with
        the same data and password after the event arrived or just before (JUST_WRITTEN): a registration of the same
        contact, stored or claimed first, made it (the steady stream's extra reads, BENCHMARKS.md). A registration
        whose enrolment was refused (VERIFY_USER) reads it too.
        """
        link = w.link
        if link is None or link.data_digest is None or utcnow() - link.updated_at > CONFIRMED_FOR:
            return False
        for event in w.events:
            if (event.result or {}).get(VERIFY_USER):
                return False
            if event.kind != EventKind.registration_registered and event.created_at - link.updated_at > JUST_WRITTEN:
                return False
        same_password = w.password is None or link.password_digest == self.fields.digest(w.password)
        return same_password and link.data_digest == self.fields.data_digest(w.contact)

    def _from_link(self, w: Work) -> Outcome:
        self.unverified.update(e.id for e in w.events)
        assert w.link is not None  # _settled: it has one
        return Outcome(EventStatus.done, result={"moodle_user_id": w.link.moodle_user_id, "action": "unchanged"})

    def _decide(self, w: Work, creates: list[Work], updates: Updates) -> Outcome | None:
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
            refused = adopt(self.session, w, w.moodle_user, rules=self.rules, token_user_id=self._token_user_id)
            if refused is not None:
                return refused
        else:
            self.writes.settle(w.moodle_user["username"])
        updates.append((w, self.fields.changes(w)))
        return None

    # -- writing ---------------------------------------------------------------------------

    async def _create(self, creates: list[Work], updates: Updates) -> dict[int, Outcome]:
        """Make the users of ``creates``; one whose email a Moodle account already has is adopted or refused."""
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
                refused = adopt(self.session, w, other, rules=self.rules, token_user_id=self._token_user_id)
                if refused is not None:
                    outcomes[w.event.id] = refused
                else:
                    updates.append((w, self.fields.changes(w)))
            else:
                outcomes[w.event.id] = Outcome(
                    EventStatus.failed,
                    f"email {w.contact.email!r} already belongs to Moodle user {other['username']!r} "
                    f"(id {other['id']}); to use that account for this contact set users.adopt_existing and "
                    "users.match_by_email to true, or change one of the emails",
                )
        if todo:
            made, _ = await self.writes.create(todo, updates)
            outcomes.update(made)
        return outcomes

    async def _emails_taken(self, creates: list[Work]) -> dict[str, dict[str, Any]]:
        emails = sorted({w.contact.email.lower() for w in creates})
        found = await self.moodle.get_users_by_field("email", emails)
        return {str(u.get("email", "")).lower(): u for u in found}

    async def _insert_links(self) -> None:
        """Write the run's new links and drop the intents they settle (the last step before the caller commits)."""
        await self.writes.insert_links()
