"""Persistence: tables, engine and sessions."""

# Every table registers on SQLModel.metadata when imported: app.db.models holds most of them (and is full), the
# operators' accounts, the keyring and the tenant registry live apart; importing them here puts them wherever the migrations and
# the tests read metadata.
from app.db import accounts as accounts
from app.db import keyring as keyring
from app.db import tenants as tenants
