"""Embedded storage: an append-only JSONL log per session (the source of truth) and a
SQLite catalog derived from the logs (for listing and lookups without reading logs)."""
