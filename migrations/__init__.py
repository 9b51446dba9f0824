"""Alembic migrations; shipped in the package as app.migrations (see pyproject.toml)."""
