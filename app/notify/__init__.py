"""Telling a person: alert emails for what needs fixing, and the optional debug log file."""
