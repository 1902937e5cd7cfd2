"""Alembic revisions (each one additive and idempotent, see authsidecar/storage/sync.py)."""
