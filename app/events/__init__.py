"""Event kinds: the one registry of what the service accepts and how each kind runs."""
