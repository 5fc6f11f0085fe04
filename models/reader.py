"""The reads of one operation, as one caller sees them: one statement per batch of keys."""

from collections.abc import Sequence
from typing import Any

from models.database import Database
from models.errors import InvalidInput
from models.hierarchy import Direction, TreeNode, walk
from models.inputs import Limits
from models.queries import Page, SessionFilter, decode_page_cursor
from models.records import SESSION_COLUMNS, SessionRecord, column_list, session_record
from models.statements import Conditions

WITH_DETAILS = (
    f"{column_list(SessionRecord, 's')}, d.name, d.value FROM sessions s "
    "LEFT JOIN session_details d ON d.session_key = s.key"
)


class SessionReader:
    """Built once per operation. `scope`, when set, is the data sources the caller may read:
    sessions outside it do not exist as far as that caller can tell."""

    def __init__(
        self, database: Database, limits: Limits, scope: frozenset[str] | None = None
    ) -> None:
        self.database = database
        self.limits = limits
        self.scope = None if scope is None else sorted(scope)
        self._scope = scope

    def may_read(self, data_source: str) -> bool:
        """Whether the caller's scope includes this data source."""
        return self._scope is None or data_source in self._scope

    def _where(self, table: str = "") -> Conditions:
        """Conditions on `sessions`, starting with the caller's scope."""
        column = f"{table}.data_source" if table else "data_source"
        return Conditions(self.database).among(column, self.scope)

    async def sessions(self, keys: Sequence[str]) -> dict[str, SessionRecord]:
        where = self._where().among("key", keys)
        rows = await self.database.fetch(
            f"SELECT {SESSION_COLUMNS} FROM sessions{where.sql()}", *where.params
        )
        return {record.key: record for record in map(session_record, rows)}

    async def sessions_with_details(
        self, keys: Sequence[str]
    ) -> tuple[dict[str, SessionRecord], dict[str, list[tuple[str, str]]]]:
        """The sessions and each one's details, by name, in one statement."""
        where = self._where("s").among("s.key", keys)
        rows = await self.database.fetch(
            f"SELECT {WITH_DETAILS}{where.sql()} ORDER BY s.key, d.name", *where.params
        )
        sessions: dict[str, SessionRecord] = {}
        details: dict[str, list[tuple[str, str]]] = {}
        for row in rows:
            key = row[0]
            if key not in sessions:
                sessions[key] = session_record(row[:-2])
                details[key] = []
            if row[-2] is not None:
                details[key].append((row[-2], row[-1]))
        return sessions, details

    async def details(self, keys: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        """Each session's (name, value) details, by name."""
        return await self._grouped(
            "SELECT session_key, name, value FROM session_details "
            f"WHERE {self.database.in_keys('session_key')} ORDER BY session_key, name",
            keys,
        )

    async def streams(self, keys: Sequence[str]) -> dict[str, list[str]]:
        return await self._grouped(
            "SELECT session_key, name FROM session_streams "
            f"WHERE {self.database.in_keys('session_key')} ORDER BY session_key, position",
            keys,
        )

    async def children(self, keys: Sequence[str]) -> dict[str, list[str]]:
        return await self._grouped(
            "SELECT parent_key, child_key FROM session_associations "
            f"WHERE {self.database.in_keys('parent_key')} ORDER BY parent_key, position",
            keys,
        )

    async def parents(self, keys: Sequence[str]) -> dict[str, list[str]]:
        """Each session's parents, oldest first."""
        return await self._grouped(
            "SELECT a.child_key, a.parent_key FROM session_associations a "
            "JOIN sessions s ON s.key = a.parent_key "
            f"WHERE {self.database.in_keys('a.child_key')} "
            "ORDER BY a.child_key, s.created_at, s.key",
            keys,
        )

    async def _grouped(self, sql: str, keys: Sequence[str]) -> dict[str, list[Any]]:
        """Rows of (key, value...) grouped by key in row order; several values as a tuple."""
        found: dict[str, list[Any]] = {}
        for key, *value in await self.database.fetch(sql, self.database.keys(keys)):
            found.setdefault(key, []).append(value[0] if len(value) == 1 else tuple(value))
        return found

    async def walk(
        self, keys: Sequence[str], direction: Direction, max_depth: int
    ) -> dict[str, list[TreeNode]]:
        async with self.database.read() as connection:
            return await walk(connection, keys, direction, max_depth)

    def _live(self, data_source: str | None) -> tuple[str, list[Any]]:
        where = self._where().add("status = 'LIVE'")
        if data_source is not None:
            where.add("data_source = ?", data_source)
        sql = f"SELECT {SESSION_COLUMNS} FROM sessions{where.sql()} ORDER BY created_at, key"
        return sql, where.params

    async def current(self, data_source: str | None = None) -> list[SessionRecord]:
        sql, params = self._live(data_source)
        return [session_record(row) for row in await self.database.fetch(sql, *params)]

    async def snapshot(self, data_source: str | None = None) -> tuple[int, list[SessionRecord]]:
        """The newest cursor and the live sessions, read from one database snapshot."""
        sql, params = self._live(data_source)
        async with self.database.snapshot() as connection:
            cursor = (await connection.fetch("SELECT last_cursor FROM event_log_state"))[0][0]
            rows = await connection.fetch(sql, *params)
        return cursor, [session_record(row) for row in rows]

    async def page(self, where: SessionFilter, first: int, after: str | None = None) -> Page:
        if not 1 <= first <= self.limits.page_size:
            raise InvalidInput("first", f"must be between 1 and {self.limits.page_size}")
        where.validate(self.limits)
        conditions = where.narrow(self._where())
        if after is not None:
            created_at, key = decode_page_cursor(after)
            conditions.add("(created_at, key) < (?, ?)", self.database.time(created_at), key)
        rows = await self.database.fetch(
            f"SELECT {SESSION_COLUMNS} FROM sessions{conditions.sql()} "
            "ORDER BY created_at DESC, key DESC LIMIT ?",
            *conditions.params,
            first + 1,
        )
        records = [session_record(row) for row in rows]
        return Page(records[:first], has_next=len(records) > first)

    async def count(self, where: SessionFilter) -> int:
        where.validate(self.limits)
        conditions = where.narrow(self._where())
        rows = await self.database.fetch(
            f"SELECT count(*) FROM sessions{conditions.sql()}", *conditions.params
        )
        return int(rows[0][0])

    async def data_sources(self) -> list[tuple[str, int, int]]:
        """(name, live sessions, all sessions) for every data source, by name."""
        where = self._where()
        rows = await self.database.fetch(
            "SELECT data_source, sum(CASE WHEN status = 'LIVE' THEN 1 ELSE 0 END), count(*) "
            f"FROM sessions{where.sql()} GROUP BY data_source ORDER BY data_source",
            *where.params,
        )
        return [(name, int(live or 0), int(total)) for name, live, total in rows]
