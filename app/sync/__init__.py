"""The rules of the sync: what to do, never how it is triggered (no FastAPI, no arq in here)."""
