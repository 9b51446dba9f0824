"""The CourseSales and sync links of a diagnosis (app.sync.diagnose), each with its fix in plain words.

CourseSales publishes no read of one contact or one Document: what it said of them is what it last sent us (the
newest contact event, the registrations table). Course dates and categories are read live (app.sync.diagnose_reads).
"""

from __future__ import annotations

from app.coursesales import assumptions as a
from app.db.models import Event, EventStatus
from app.settings import Settings
from app.sync.adoption import WAYS_OUT
from app.sync.attention import cause_of
from app.sync.courses import CourseDateLike
from app.sync.diagnose_model import Link
from app.sync.diagnose_reads import SalesFacts
from app.sync.diagnose_records import Records

RECONCILE = "POST /api/reconcile (or `moodle-sync reconcile`)"
SEND_AGAIN = "save the contact in CourseSales so that it is sent again"
ASSUMED = "docs/coursesales-assumptions.md, COURSE_MASTER_PUBLIC_WHEN_CATEGORY_LISTED"


def _cs(name: str, ok: bool | None, summary: str, fix: str | None = None, detail: str | None = None) -> Link:
    return Link("coursesales", name, ok, summary, detail, fix)


def _sync(name: str, ok: bool | None, summary: str, fix: str | None = None, detail: str | None = None) -> Link:
    return Link("sync", name, ok, summary, detail, fix)


def contact_links(r: Records, settings: Settings) -> list[Link]:
    """Known to us and active, with a password: as CourseSales last sent the contact."""
    if r.key is None:
        return []
    seen = f"as CourseSales last sent it (event {r.contact_event.id})" if r.contact_event else ""
    if r.contact is None and r.user_link is None:
        fix = (f"make CourseSales send contact {r.key}: check that the process rule (or the \"Moodle\" export map) "
               f"that sends contacts to this service fires for it, and {SEND_AGAIN}")  # fmt: skip
        return [_cs("contact.known", False, f"we never received {r.key} from CourseSales", fix)]
    who = f"{r.key} ({r.username})" if r.username else r.key
    out = [_cs("contact.known", True, f"{who} is known to us")]
    if r.contact is None:
        out.append(_cs("contact.active", None, "its data is no longer kept (events are purged)", SEND_AGAIN))
    elif not r.contact.get("active", True):
        out.append(_cs("contact.active", False, f"the contact is inactive {seen}",
                       f"make contact {r.key} active in CourseSales and {SEND_AGAIN}"))  # fmt: skip
    else:
        out.append(_cs("contact.active", True, f"the contact is active {seen}".strip()))
    out.append(_password(r, settings))
    return out


def _password(r: Records, settings: Settings) -> Link:
    link = r.user_link
    if link is not None and link.password_digest:
        return _cs("contact.password", True, "its portal password was applied to the Moodle user")
    if r.password_waiting:
        return _cs("contact.password", True, "its portal password arrived and waits for its event to run")
    if link is not None and link.adopted and not settings.users.adopt_overwrites_password:
        return _cs("contact.password", True, "the adopted Moodle account keeps its own password (not the portal's)")
    fix = f"give contact {r.key} a portal login with a password in CourseSales, then {SEND_AGAIN}"
    return _cs("contact.password", False, "no portal password of this contact has reached us", fix)


def document_link(r: Records, document: str | None) -> list[Link]:
    """The Document (registration) is registered, and is this contact's."""
    reg = r.registration
    if reg is None:
        if document is None and r.course_date_id is None:
            return [_cs("document.registered", True, f"{r.registrations} registration(s) of this contact known to us")]
        if document is None and r.key is None:
            return []
        named = f"Document {document}" if document else f"a registration of {r.key} for course date {r.course_date_id}"
        fix = (f"make CourseSales send the registration: check that the process rule sending registrations fires "
               f"on the Document's process step, or register {r.key or 'the contact'} for the course date")  # fmt: skip
        return [_cs("document.registered", False, f"we never received {named}", fix)]
    if r.key is not None and reg.contact_key not in r.keys:
        fix = f"ask about {reg.contact_key}, whose Document it is, or give this contact's own Document"
        return [_cs("document.registered", False, f"Document {reg.document_external_id} is {reg.contact_key}'s", fix)]
    if reg.status != "registered":
        fix = (f"Document {reg.document_external_id} was cancelled in CourseSales: if the student should still "
               f"attend, register them again (a new Document) for course date {reg.course_date_id}")  # fmt: skip
        return [_cs("document.registered", False, f"Document {reg.document_external_id} is {reg.status}", fix)]
    return [_cs("document.registered", True, f"Document {reg.document_external_id} is registered "
                f"for course date {reg.course_date_id}")]  # fmt: skip


def course_date_links(r: Records, cs: SalesFacts, settings: Settings) -> list[Link]:
    """Listed, scheduled, public; its course master public; its category mapped."""
    cdid = r.course_date_id
    if cdid is None:
        return []
    cd: CourseDateLike | None = cs.date.value or r.course_date_row
    if not cs.date.answered:
        stored = f"; as last read: {_when(r)}" if r.course_date_row else ""
        out = [_cs("course_date.listed", None, f"could not ask CourseSales: {cs.date.why}{stored}",
                   "ask again once CourseSales answers (`moodle-sync probe` shows its state)")]  # fmt: skip
    elif cs.date.value is not None:
        out = [_cs("course_date.listed", True, f"course date {cdid} is in CourseSales' list of Moodle course dates")]
    elif cs.whole:
        fix = (
            f"in CourseSales, check that course date {cdid} exists, is scheduled and public, and is exported to Moodle"
        )
        return [_cs("course_date.listed", False, f"course date {cdid} is not in CourseSales' list of Moodle course "
                    "dates", fix)]  # fmt: skip
    else:
        first = f"not in the first {cs.scanned} course dates of CourseSales' list"
        out = [_cs("course_date.listed", None, first + (f"; as last read: {_when(r)}" if cd else ""))]
    if cd is None:
        return out
    return out + _eligible(cd, settings) + _category(cd, cs, settings)


def _when(r: Records) -> str:
    return f"{r.course_date_row.fetched_at:%Y-%m-%d %H:%M} UTC" if r.course_date_row else "never"


def _eligible(cd: CourseDateLike, settings: Settings) -> list[Link]:
    rules = settings.courses
    scheduled = cd.status_id in rules.scheduled_status_ids
    public = cd.visibility in rules.public_visibility_ids
    return [
        _cs("course_date.scheduled", scheduled, f"course date {cd.id} has StatusId {cd.status_id} "
            f"(scheduled: {', '.join(map(str, rules.scheduled_status_ids))})",
            f"schedule course date {cd.id} in CourseSales (it is cancelled or completed), or add StatusId "
            f"{cd.status_id} to courses.scheduled_status_ids if it counts as scheduled"),
        _cs("course_date.public", public, f"course date {cd.id} has Visibility {cd.visibility} "
            f"(public: {', '.join(map(str, rules.public_visibility_ids))})",
            f"make course date {cd.id} public in CourseSales, or add Visibility {cd.visibility} to "
            "courses.public_visibility_ids if it counts as public"),
    ]  # fmt: skip


def _category(cd: CourseDateLike, cs: SalesFacts, settings: Settings) -> list[Link]:
    cat = cd.category_id
    if cat is None:
        return [_cs("category.mapped", False, f"course date {cd.id} names no course category",
                    f"in CourseSales, give course date {cd.id}'s course master a course category")]  # fmt: skip
    if not cs.mapping.answered:
        return [_cs("category.mapped", None, f"could not read CourseSales' categories: {cs.mapping.why}")]
    mapping = (cs.mapping.value or {}).get(cat)
    if mapping is None:
        master = (f"CourseSales lists no category {cat} ({cd.category_name}); it lists only categories with a "
                  "scheduled, public course date on an active course master")  # fmt: skip
        fix = (f"in CourseSales, make the course master of course date {cd.id} public and active, and its course "
               f"category {cat} active")  # fmt: skip
        return [_cs("course_master.public", False, master, fix)]
    if a.COURSE_MASTER_PUBLIC_WHEN_CATEGORY_LISTED:
        listed = f"category {cat} is listed, so a course master in it is public and active (an assumption: {ASSUMED})"
        out = [_cs("course_master.public", True, listed)]
    else:
        out = [_cs("course_master.public", None, f"CourseSales gives no course master's visibility ({ASSUMED})")]
    if mapping.problem or mapping.moodle_category_id is None:
        field = settings.courses.category_field_name
        fix = (f"map CourseSales category {cat} to a Moodle category: set its {field} field (or a parent "
               f"category's) to the Moodle category id; then {RECONCILE} makes the course")  # fmt: skip
        return [*out, _cs("category.mapped", False, mapping.problem or f"category {cat} has no Moodle category", fix)]
    via = f" (inherited from category {mapping.inherited_from})" if mapping.inherited_from else ""
    return [
        *out,
        _cs("category.mapped", True, f"category {cat} maps to Moodle category {mapping.moodle_category_id}{via}"),
    ]


def sync_links(r: Records) -> list[Link]:
    """Our side: do not sync, the events and what they wait for, adoption refusals, the links."""
    out: list[Link] = []
    if r.key is not None:
        if r.held is not None:
            fix = (f"{r.key} was taken out of the sync by {r.held.actor}: if it should be synced again, "
                   f"`moodle-sync do-not-sync {r.key} --undo` (or DELETE /api/contacts/{r.key}/do-not-sync)")  # fmt: skip
            out.append(_sync("contact.do_not_sync", False, f"{r.key} is marked do not sync", fix, r.held.note))
        else:
            out.append(_sync("contact.do_not_sync", True, f"{r.key} is synced (not marked do not sync)"))
    out += [_event_link(e) for e in r.events] or [_sync("events", True, "no event about them is kept")]
    if r.key is not None:
        out.append(_user_link(r))
    if r.course_date_id is not None:
        out += _course_link(r)
    return out


def _event_link(e: Event) -> Link:
    name, what = f"event.{e.id}", f"event {e.id} ({e.kind}, {e.subject})"
    replay = f"replay event {e.id} (POST /api/events/{e.id}/replay or `moodle-sync replay {e.id}`)"
    if e.waiting_for:
        return _sync(name, False, f"{what} waits: {e.waiting_for}", e.waiting_for)
    if e.status in (EventStatus.failed, EventStatus.needs_review):
        cause = cause_of(e)
        fix = cause.fix.replace("replay this group", replay).replace("Replay this group", replay)
        return _sync(name, False, f"{what} {e.status}: {cause.title}", fix, e.last_error)
    if e.status == EventStatus.retrying:
        return _sync(name, False, f"{what} is retrying: {e.last_error}", "wait for its next attempt: "
                     f"{e.last_error}", e.last_error)  # fmt: skip
    if e.status in (EventStatus.accepted, EventStatus.queued, EventStatus.running):
        return _sync(name, False, f"{what} is {e.status}: its work is not done yet",
                     "wait a moment and ask again; if it stays, check that a worker runs (`moodle-sync worker`)")  # fmt: skip
    note = (e.result or {}).get("skipped") or (e.result or {}).get("action") or ""
    return _sync(name, True, f"{what} is {e.status}" + (f": {note}" if note else ""))


def _user_link(r: Records) -> Link:
    link = r.user_link
    if link is None:
        refused = next((e for e in reversed(r.events) if e.last_error and WAYS_OUT in e.last_error), None)
        if refused is not None:
            return _sync("user.link", False, f"adoption refused: {refused.last_error}", WAYS_OUT)
        return _sync("user.link", False, f"no Moodle user is linked to {r.key}",
                     "the contact's events must run first (see the events above and the CourseSales links)")  # fmt: skip
    how = "adopted" if link.adopted else "made or linked"
    return _sync("user.link", True, f"{r.key} is linked to Moodle user {link.moodle_user_id} ({link.username}, {how})")


def _course_link(r: Records) -> list[Link]:
    cdid = r.course_date_id
    if r.course_link is None:
        fix = (f"course date {cdid} has no Moodle course yet: {RECONCILE} makes it; an existing course is linked "
               "with POST /api/links/courses")  # fmt: skip
        return [_sync("course.link", False, f"course date {cdid} is linked to no Moodle course", fix)]
    out = [
        _sync("course.link", True, f"course date {cdid} is linked to Moodle course {r.course_link.moodle_course_id}")
    ]
    if r.key is None or r.user_link is None:
        return out
    e = r.enrolment
    if e is None:
        fix = f"the registration's event must run (see the events above), or {RECONCILE}"
        return [*out, _sync("enrolment.link", False, "no enrolment of this learner in the course was made by us", fix)]
    ok = e.status == "active"
    fix = f"the enrolment is {e.status} (its registration was cancelled): register the student again if they attend"
    return [*out, _sync("enrolment.link", ok, f"our enrolment is {e.status} (Document {e.document_external_id})", fix)]
