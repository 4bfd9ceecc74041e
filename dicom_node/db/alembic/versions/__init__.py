"""Alembic revisions, oldest first: `r0001_*` is the previous release's schema, each later file one change."""
