"""Date-prefixed revisions."""
