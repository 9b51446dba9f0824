"""Background work on arq: the only package that knows the queue (so it could be swapped)."""
