"""Persisted documents: GraphQL document texts by the SHA-256 of their text, shared by every
instance through the database; the newest `limit` are kept."""

from datetime import UTC, datetime

from models.database import Database


class DocumentStore:
    def __init__(self, database: Database, limit: int) -> None:
        self.database = database
        self.limit = limit

    async def get(self, sha256: str) -> str | None:
        rows = await self.database.fetch(
            "SELECT body FROM persisted_documents WHERE sha256 = ?", sha256
        )
        return str(rows[0][0]) if rows else None

    async def put(self, sha256: str, body: str) -> None:
        """Keep `body` under its hash (the caller checked that they match), and forget the
        oldest beyond the limit. Not a change of data: the data version stays."""
        database = self.database
        async with database.write() as connection:
            await connection.execute(
                "INSERT INTO persisted_documents (sha256, body, stored_at) VALUES (?, ?, ?) "
                "ON CONFLICT (sha256) DO NOTHING",
                sha256,
                body,
                database.time(datetime.now(UTC)),
            )
            await connection.execute(
                "DELETE FROM persisted_documents WHERE sha256 NOT IN (SELECT sha256 FROM "
                "persisted_documents ORDER BY stored_at DESC, sha256 LIMIT ?)",
                self.limit,
            )
