"""Alembic revisions of the schema, applied at start-up and by `session-service migrate`."""
