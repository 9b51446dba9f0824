"""One contact's unit of work in a user run: its newest event, the events it answers for, and what was found.

A batch may carry several events of one contact: the newest wins (with the newest password seen), and the older
ones end as it ends, saying which event superseded them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.crypto import Vault
from app.db.inbox import Outcome
from app.db.models import Event, UserLink
from app.sync.contacts import Contact


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

    @property
    def events(self) -> tuple[Event, ...]:
        """The event that decides, then those it superseded."""
        return (self.event, *self.superseded)

    @property
    def keys(self) -> set[str]:
        """The keys an operator's "do not sync" may name this contact by."""
        return {self.contact.key, f"username:{self.contact.moodle_username}"}


# Work with the fields to write to its existing Moodle user (none: only the link is refreshed).
Updates = list[tuple[Work, dict[str, Any]]]


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


def answer_superseded(works: list[Work], outcomes: dict[int, Outcome]) -> None:
    """Each superseded event ends as the event that superseded it did, naming it."""
    for work in works:
        final = outcomes[work.event.id]
        for old in work.superseded:
            outcomes[old.id] = Outcome(
                final.status, final.error, {**(final.result or {}), "superseded_by": work.event.id}
            )
