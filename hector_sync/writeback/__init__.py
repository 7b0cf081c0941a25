"""Executing change sets: one writer per target system, sharing how outcomes are recorded.

Each item's outcome goes to the append-only history with its change rows, in batches so the
DuckDB lock is taken briefly. An item the system refuses (422) or that changed under us (409)
is recorded and the others go on; a fault of the system itself (credentials, permission,
unavailable) stops the category after recording what was done, so a rerun resumes cleanly.
"""
