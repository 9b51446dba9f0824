"""The client's form encoding: byte for byte what urllib's urlencode makes, the names quoted once."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from app.moodle.wire import encode_params, form_body

FIELDS = st.lists(st.tuples(st.text(max_size=30), st.text(max_size=60)), max_size=20)


@settings(max_examples=300, database=None, deadline=None)
@given(FIELDS)
def test_a_form_is_encoded_as_urlencode_encodes_it(form: list[tuple[str, str]]) -> None:
    assert form_body(form) == urlencode(form).encode()


def test_a_users_batch_is_encoded_as_urlencode_encodes_it() -> None:
    users = [
        {
            "username": f"ana.{i}",
            "firstname": "Ana María",
            "lastname": "O'Brien & Sons",
            "email": f"ana+{i}@example.org",
            "password": "p@ss w0rd=+%/?",
            "customfields": [{"type": "cs_contact", "value": str(i)}],
        }
        for i in range(3)
    ]
    form = [("wstoken", "t0k3n"), ("wsfunction", "core_user_create_users"), *encode_params({"users": users})]
    assert form_body(form) == urlencode(form).encode()
    assert form_body(form) == form_body(form)  # the names' cache changes nothing
