"""What a contact's Moodle user should hold under the users.* rules: the per-field policy, a new user's fields, the
digests that tell what the sync last wrote, and Moodle's refusals in words a person can act on."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.crypto import Vault
from app.moodle.errors import MoodleError, MoodleInvalidParameter, MoodlePasswordPolicy
from app.settings import FieldPolicy, UsersSettings
from app.sync.contacts import Contact
from app.sync.user_work import Work

# Contact attribute -> Moodle user field.
FIELD_MAP = {"firstname": "firstname", "lastname": "lastname", "email": "email", "phone1": "phone"}


@dataclass(frozen=True)
class UserFields:
    """The field rules of a run: the users.* settings, and the vault that keys the digests of what was written."""

    rules: UsersSettings
    vault: Vault

    def digest(self, password: str) -> str:
        return self.vault.digest(["password", password])

    def data_digest(self, c: Contact) -> str:
        return self.vault.digest(["contact", c.model_dump(exclude={"password"})])

    def keeps_password(self, w: Work) -> bool:
        """An adopted account's password is its own unless users.adopt_overwrites_password."""
        adopted = w.adopting or (w.link is not None and w.link.adopted)
        return adopted and not self.rules.adopt_overwrites_password

    def changes(self, w: Work) -> dict[str, Any]:
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
                if policy == FieldPolicy.locked and (link is None or link.data_digest != self.data_digest(c)):
                    out[mfield] = value
                continue
            have = current.get(mfield)
            if value == (have or ""):
                continue
            if policy == FieldPolicy.locked or (policy == FieldPolicy.unlocked_if_empty and not have):
                out[mfield] = value
        if (
            w.password
            and not self.keeps_password(w)
            and (link is None or link.password_digest != self.digest(w.password))
        ):
            out["password"] = w.password
        if not c.active and self.rules.suspend_inactive and not current.get("suspended"):
            out["suspended"] = 1
        elif c.active and link is not None and link.suspended_by_sync and current.get("suspended"):
            out["suspended"] = 0
        return out

    def new_user(self, w: Work) -> dict[str, Any]:
        """The Moodle user to make for a contact that has none."""
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


def explain(exc: MoodleError | None) -> str:
    """Why Moodle refused a user's create or update, and what usually causes it."""
    if isinstance(exc, MoodlePasswordPolicy):
        return "Moodle refused the password: " + " ".join(exc.rules)
    if isinstance(exc, MoodleInvalidParameter) and exc.function == "core_user_create_users":
        hint = f" ({exc.debuginfo})" if exc.debuginfo else ""
        return (
            "Moodle refused the new user as invalid" + hint + ": usually the email is already used by another "
            "account that this token cannot see (grant moodle/site:viewuseridentity), or a username rule differs"
        )
    return f"Moodle refused the change: {exc}"


def explain_warning(warning: dict[str, Any], changes: dict[str, Any]) -> str:
    """Why Moodle did not apply an update it answered with a warning."""
    code = warning.get("warningcode")
    if code == "dmlwriteexception" and "username" in changes:
        return f"Moodle could not rename the user to {changes['username']!r}: that username is taken by another user"
    return f"Moodle refused the update: {warning.get('message')} [{code}]"
