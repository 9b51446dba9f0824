"""The username, email and password rules applied before anything is stored."""

from __future__ import annotations

import pytest

from app.settings import UsersSettings
from app.sync.contacts import Contact, check_contact, password_failures, username_problem

RULES = UsersSettings()


def contact(**kw: object) -> Contact:
    base: dict[str, object] = {
        "contact_id": 1,
        "username": "Jane.Doe@example.com",
        "firstname": "Jane",
        "lastname": "Doe",
        "email": "jane@example.com",
        "password": "S3cret!pass",
    }
    base.update(kw)
    return Contact.model_validate(base)


def test_username_is_lower_cased() -> None:
    assert contact().moodle_username == "jane.doe@example.com"


@pytest.mark.parametrize(
    ("password", "failed"),
    [
        ("S3cret!", ["Passwords must be at least 8 characters long."]),
        ("Secret!pass", ["Passwords must have at least 1 digit(s)."]),
        ("S3CRET!PASS", ["Passwords must have at least 1 lower case letter(s)."]),
        ("s3cret!pass", ["Passwords must have at least 1 upper case letter(s)."]),
        ("S3cretpass", ["The password must have at least 1 special character(s) such as *, -, or #."]),
        ("S3cret!pass", []),
    ],
)
def test_each_password_rule(password: str, failed: list[str]) -> None:
    assert password_failures(password, RULES) == failed


def test_weak_password_lists_rules_in_moodle_order() -> None:
    # Recording 014: "abc" fails length, digit, upper and special, in that order.
    assert password_failures("abc", RULES) == [
        "Passwords must be at least 8 characters long.",
        "Passwords must have at least 1 digit(s).",
        "Passwords must have at least 1 upper case letter(s).",
        "The password must have at least 1 special character(s) such as *, -, or #.",
    ]


def test_password_rules_follow_settings() -> None:
    assert (
        password_failures(
            "abcdefgh", UsersSettings(password_min_digits=0, password_min_upper=0, password_min_nonalphanum=0)
        )
        == []
    )
    assert password_failures("S3cret!pass", UsersSettings(password_min_length=12)) == [
        "Passwords must be at least 12 characters long."
    ]


def test_username_characters_named() -> None:
    why = username_problem("jane doe+x", RULES)
    assert why is not None and "' '" in why and "'+'" in why


def test_username_length() -> None:
    assert username_problem("a" * 101, RULES) == "longer than 100 characters"


def test_check_contact_names_fields() -> None:
    problems = check_contact(contact(username="Jane Doe", email="not-an-email", password="weak"), RULES)
    assert [p.field for p in problems] == ["username", "email", "password"]
    assert "' '" in problems[0].message


def test_valid_contact_has_no_problem() -> None:
    assert check_contact(contact(), RULES) == []


def test_contact_key_prefers_contact_id() -> None:
    assert contact().key == "contact:1"
    assert contact(contact_id=None).key == "username:jane.doe@example.com"
