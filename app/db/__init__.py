"""Persistence: tables, engine and sessions."""
