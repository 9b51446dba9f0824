"""A CourseSales contact as it reaches us, and the rules Moodle will hold it to."""

from __future__ import annotations

import re
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from app.settings import UsersSettings

# Moodle's validate_email() accepts roughly this; a stricter check here would refuse what Moodle takes.
EMAIL_RE = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)+$"
)

# Moodle's lang/en/auth.php strings, in the order check_password_policy() reports them (recording 014).
PASSWORD_RULES = (
    ("password_min_length", "Passwords must be at least {} characters long."),
    ("password_min_digits", "Passwords must have at least {} digit(s)."),
    ("password_min_lower", "Passwords must have at least {} lower case letter(s)."),
    ("password_min_upper", "Passwords must have at least {} upper case letter(s)."),
    ("password_min_nonalphanum", "The password must have at least {} special character(s) such as *, -, or #."),
)


class Contact(BaseModel):
    """A contact from CourseSales; ``username`` is its Default Contact Id."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    contact_id: int | None = Field(None, ge=1, le=2_147_483_647, description="CourseSales internal contact id")
    username: str = Field(..., min_length=1, max_length=255, description="Default Contact Id; lower-cased for Moodle")
    firstname: str = Field(..., min_length=1, max_length=100)
    lastname: str = Field(..., min_length=1, max_length=100)
    email: str = Field(..., min_length=3, max_length=100)
    password: str | None = Field(None, description="The student portal password; encrypted at rest, never echoed")
    phone: str | None = Field(None, max_length=20)
    active: bool = True

    @property
    def moodle_username(self) -> str:
        return self.username.strip().lower()

    @property
    def key(self) -> str:
        """What identifies the contact across events: its id, else its username."""
        return f"contact:{self.contact_id}" if self.contact_id else f"username:{self.moodle_username}"


@dataclass(frozen=True)
class Problem:
    """A value Moodle would refuse, with the field and the rule."""

    field: str
    message: str


def password_failures(password: str, rules: UsersSettings) -> list[str]:
    """The site password-policy rules this password breaks, as Moodle words them."""
    counts = {
        "password_min_length": len(password),
        "password_min_digits": sum(c.isdigit() for c in password),
        "password_min_lower": sum(c.islower() for c in password),
        "password_min_upper": sum(c.isupper() for c in password),
        "password_min_nonalphanum": sum(not (c.isalpha() or c.isdigit()) for c in password),
    }
    return [text.format(getattr(rules, name)) for name, text in PASSWORD_RULES if counts[name] < getattr(rules, name)]


def username_problem(username: str, rules: UsersSettings) -> str | None:
    """Why Moodle would refuse this (already lower-cased) username, or None."""
    if len(username) > rules.username_max_length:
        return f"longer than {rules.username_max_length} characters"
    bad = sorted(set(re.sub(f"[{rules.username_chars}]", "", username)))
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        return f"Moodle does not accept the character(s) {shown} in a username (allowed: {rules.username_chars})"
    return None


def check_contact(contact: Contact, rules: UsersSettings) -> list[Problem]:
    """Everything Moodle would refuse about this contact, found before anything is stored."""
    problems: list[Problem] = []
    why = username_problem(contact.moodle_username, rules)
    if why:
        problems.append(Problem("username", f"username {contact.moodle_username!r}: {why}"))
    if not EMAIL_RE.match(contact.email):
        problems.append(Problem("email", f"email {contact.email!r} is not a valid address"))
    if contact.password is not None:
        failed = password_failures(contact.password, rules)
        if failed:
            problems.append(Problem("password", "password does not meet Moodle's policy: " + " ".join(failed)))
    return problems
