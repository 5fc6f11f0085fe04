"""The write use cases: each in one transaction, every change committed with its event row."""

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import uuid4

from models.database import Connection, Database
from models.errors import (
    AssociationCycle,
    IdempotencyMismatch,
    InvalidInput,
    RevisionConflict,
    SessionNotFound,
)
from models.hierarchy import Direction, walk
from models.inputs import (
    DetailsChange,
    Limits,
    NewSession,
    check_key,
    check_streams,
    check_text,
    check_time,
    unique,
)
from models.records import (
    EVENT_COLUMNS,
    SESSION_COLUMNS,
    EventRecord,
    SessionRecord,
    session_record,
)
from models.tables import EventKind, SessionStatus, as_utc, utcnow

Announce = Callable[[list[EventRecord]], None]

# Parameters per statement, below SQLite's and PostgreSQL's limits.
MAX_PARAMETERS = 5000


class Write:
    """One write transaction: its connection and the events it appends. Every writer locks
    the event log's row first, so there is one writer at a time and cursor order is commit
    order on every backend."""

    def __init__(self, connection: Connection, last_cursor: int, pruned_through: int) -> None:
        self.connection = connection
        self.database = connection.database
        self.last_cursor = last_cursor
        self.pruned_through = pruned_through
        self._pruned = pruned_through
        self.events: list[EventRecord] = []
        # A change that records no event (the janitor deleting old sessions) says so here: the
        # data version moves with every change (api/cache.py relies on it).
        self.changed = False

    def record(self, kind: EventKind, session: SessionRecord) -> None:
        self.last_cursor += 1
        self.events.append(
            EventRecord(
                self.last_cursor, kind, session.key, session.data_source, session.updated_at
            )
        )

    async def insert(
        self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]
    ) -> None:
        """Rows in as few multi-row INSERT statements as the parameter limit allows."""
        if not rows:
            return
        placeholders = "(" + ", ".join("?" for _ in columns) + ")"
        per_statement = max(1, MAX_PARAMETERS // len(columns))
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            await self.connection.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                + ", ".join(placeholders for _ in chunk),
                *[value for row in chunk for value in row],
            )

    async def finish(self) -> None:
        """Append the events and move the log's position, inside the transaction."""
        time = self.database.time
        await self.insert(
            "session_events",
            EVENT_COLUMNS.split(", "),
            [(e.cursor, str(e.kind), e.session_key, e.data_source, time(e.occurred_at))
             for e in self.events],
        )  # fmt: skip
        if self.events or self.changed or self.pruned_through != self._pruned:
            await self.connection.execute(
                "UPDATE event_log_state SET last_cursor = ?, pruned_through = ?, "
                "version = version + 1 WHERE id = 1",
                self.last_cursor,
                self.pruned_through,
            )


@asynccontextmanager
async def writing(database: Database, announce: Announce | None) -> AsyncIterator[Write]:
    """A write transaction with its event rows; its events are announced after the commit."""
    async with database.write() as connection:
        (last_cursor, pruned_through), *_ = await connection.fetch(
            "SELECT last_cursor, pruned_through FROM event_log_state WHERE id = 1"
            + database.for_update()
        )
        write = Write(connection, last_cursor, pruned_through)
        yield write
        await write.finish()
    if write.events and announce is not None:
        announce(write.events)


@dataclass
class Written:
    """A session as a use case left it, with the parts it read or wrote, so that the answer
    comes from the transaction: no read after the commit can turn a committed change into an
    error. A part that is None was not touched."""

    session: SessionRecord
    details: list[tuple[str, str]] | None = None
    streams: list[str] | None = None
    children: list[str] | None = None
    parents: list[str] | None = None
    others: list[SessionRecord] = field(default_factory=list)


class SessionWriter:
    """The write use cases, as one caller may make them: `scope`, when set, is the data sources
    the caller may touch; sessions outside it do not exist as far as that caller can tell."""

    def __init__(
        self,
        database: Database,
        limits: Limits,
        announce: Announce | None = None,
        scope: frozenset[str] | None = None,
    ) -> None:
        self.database = database
        self.limits = limits
        self.announce = announce
        self.scope = scope

    def _writing(self) -> Any:
        return writing(self.database, self.announce)

    async def create(
        self, new: NewSession, idempotency_key: str | None = None
    ) -> tuple[Written, bool]:
        """Create a session; returns it and False when an idempotent retry found the first one."""
        new.validate(self.limits)
        if idempotency_key is not None:
            check_key(idempotency_key, self.limits, "idempotencyKey")
        time = self.database.time
        async with self._writing() as write:
            connection = write.connection
            if idempotency_key is not None:
                found = await connection.fetch(
                    "SELECT fingerprint, session_key FROM idempotency_records WHERE key = ?",
                    idempotency_key,
                )
                if found:
                    fingerprint, key = found[0]
                    if fingerprint != new.fingerprint():
                        raise IdempotencyMismatch(idempotency_key)
                    return Written(await self._session(connection, key)), False
            associates = unique(new.associate_keys)
            others = await self._sessions(connection, associates)
            for key in new.associate_keys:
                if key not in others:
                    raise SessionNotFound(key)
            now = utcnow()
            session = SessionRecord(
                key=str(uuid4()),
                data_source=new.data_source,
                type=new.type,
                version=new.version,
                identifier=new.identifier,
                utc_offset_seconds=new.utc_offset_seconds,
                status=SessionStatus.LIVE,
                created_at=as_utc(new.created_at) if new.created_at else now,
                updated_at=now,
                ended_at=None,
                revision=1,
            )
            await write.insert(
                "sessions",
                SESSION_COLUMNS.split(", "),
                [(session.key, session.data_source, session.type, session.version,
                  session.identifier, session.utc_offset_seconds, str(session.status),
                  time(session.created_at), time(now), None, 1)],
            )  # fmt: skip
            details = sorted(new.details)
            streams = unique(new.streams)
            await write.insert(
                "session_details",
                ("session_key", "name", "value"),
                [(session.key, name, value) for name, value in details],
            )
            await write.insert(
                "session_streams",
                ("session_key", "position", "name"),
                [(session.key, i, name) for i, name in enumerate(streams)],
            )
            await write.insert(
                "session_associations",
                ("parent_key", "child_key", "position"),
                [(session.key, child, i) for i, child in enumerate(associates)],
            )
            if idempotency_key is not None:
                await write.insert(
                    "idempotency_records",
                    ("key", "fingerprint", "session_key", "created_at"),
                    [(idempotency_key, new.fingerprint(), session.key, time(now))],
                )
            write.record(EventKind.STARTED, session)
        # No session lists a new one as an associate yet: its parents need no read either.
        written = Written(session, details, streams, associates, [], list(others.values()))
        return written, True

    async def update_details(self, change: DetailsChange) -> Written:
        change.validate(self.limits)
        async with self._writing() as write:
            connection = write.connection
            session = await self._session(connection, change.session_key, change.expected_revision)
            stored = dict(
                await connection.fetch(
                    "SELECT name, value FROM session_details WHERE session_key = ?", session.key
                )
            )
            upserts = [(n, v) for n, v in change.details if stored.get(n) != v]
            removed = [name for name in unique(change.remove) if name in stored]
            merged = {**stored, **dict(upserts)}
            for name in removed:
                del merged[name]
            if len(merged) > self.limits.details_per_session:
                raise InvalidInput(
                    "details", f"at most {self.limits.details_per_session} details per session"
                )
            if upserts or removed:
                await self._upsert_details(write, session.key, upserts)
                if removed:
                    await connection.execute(
                        "DELETE FROM session_details WHERE session_key = ? AND "
                        + self.database.in_keys("name"),
                        session.key,
                        self.database.keys(removed),
                    )
                await self._save(write, session)
        return Written(session, details=sorted(merged.items()))

    async def _upsert_details(self, write: Write, key: str, details: list[tuple[str, str]]) -> None:
        for start in range(0, len(details), MAX_PARAMETERS // 3):
            chunk = details[start : start + MAX_PARAMETERS // 3]
            if chunk:
                await write.connection.execute(
                    "INSERT INTO session_details (session_key, name, value) VALUES "
                    + ", ".join("(?, ?, ?)" for _ in chunk)
                    + " ON CONFLICT (session_key, name) DO UPDATE SET value = excluded.value",
                    *[value for name, text in chunk for value in (key, name, text)],
                )

    async def update_identifier(
        self, key: str, identifier: str, expected_revision: int | None = None
    ) -> Written:
        check_key(key, self.limits, "sessionKey")
        check_text(identifier, "identifier", self.limits.text_length)
        async with self._writing() as write:
            session = await self._session(write.connection, key, expected_revision)
            if session.identifier != identifier:
                session.identifier = identifier
                await self._save(write, session, identifier=identifier)
        return Written(session)

    async def add_association(self, parent_key: str, child_key: str) -> Written:
        self._check_pair(parent_key, child_key)
        async with self._writing() as write:
            connection = write.connection
            parent, child = await self._pair(connection, parent_key, child_key)
            links = await connection.fetch(
                "SELECT child_key, position FROM session_associations WHERE parent_key = ? "
                "ORDER BY position",
                parent_key,
            )
            children = [key for key, _ in links]
            if child_key in children:
                return Written(parent, children=children, others=[child])
            if parent_key == child_key or await self._reaches(connection, child_key, parent_key):
                raise AssociationCycle(parent_key, child_key)
            if len(children) >= self.limits.associates_per_session:
                raise InvalidInput(
                    "associateSessionKey",
                    f"at most {self.limits.associates_per_session} associates per session",
                )
            position = links[-1][1] + 1 if links else 0
            await write.insert(
                "session_associations",
                ("parent_key", "child_key", "position"),
                [(parent_key, child_key, position)],
            )
            await self._save(write, parent)
        return Written(parent, children=[*children, child_key], others=[child])

    async def remove_association(self, parent_key: str, child_key: str) -> Written:
        self._check_pair(parent_key, child_key)
        async with self._writing() as write:
            connection = write.connection
            parent, child = await self._pair(connection, parent_key, child_key)
            removed = await connection.fetch(
                "DELETE FROM session_associations WHERE parent_key = ? AND child_key = ? "
                "RETURNING child_key",
                parent_key,
                child_key,
            )
            if removed:
                await self._save(write, parent)
        return Written(parent, others=[child])

    async def add_streams(self, key: str, streams: Sequence[str]) -> Written:
        check_key(key, self.limits, "sessionKey")
        check_streams(streams, self.limits)
        async with self._writing() as write:
            connection = write.connection
            session = await self._session(connection, key)
            rows = await connection.fetch(
                "SELECT name, position FROM session_streams WHERE session_key = ? "
                "ORDER BY position",
                key,
            )
            stored = [name for name, _ in rows]
            known = set(stored)
            new = [name for name in unique(streams) if name not in known]
            if not new:
                return Written(session, streams=stored)
            if len(stored) + len(new) > self.limits.streams_per_session:
                raise InvalidInput(
                    "streams", f"at most {self.limits.streams_per_session} streams per session"
                )
            start = rows[-1][1] + 1 if rows else 0
            await write.insert(
                "session_streams",
                ("session_key", "position", "name"),
                [(key, start + i, name) for i, name in enumerate(new)],
            )
            await self._save(write, session)
        return Written(session, streams=stored + new)

    async def end(
        self, key: str, data_source: str | None = None, ended_at: datetime | None = None
    ) -> tuple[Written, bool]:
        """End a live session; returns it and whether it had already ended."""
        check_key(key, self.limits, "sessionKey")
        ended_at = check_time(ended_at, "endedAt")
        async with self._writing() as write:
            session = await self._session(write.connection, key)
            if data_source is not None and data_source != session.data_source:
                raise InvalidInput("dataSource", "is not the session's data source")
            if session.status is SessionStatus.ENDED:
                return Written(session), True
            ended_at = ended_at or utcnow()
            if ended_at < session.created_at:
                raise InvalidInput("endedAt", "must not be before the session's createdAt")
            session.status = SessionStatus.ENDED
            session.ended_at = ended_at
            await self._save(
                write,
                session,
                EventKind.STOPPED,
                status=str(SessionStatus.ENDED),
                ended_at=self.database.time(ended_at),
            )
        return Written(session), False

    async def _save(
        self,
        write: Write,
        session: SessionRecord,
        kind: EventKind = EventKind.UPDATED,
        **columns: Any,
    ) -> None:
        """Store a change to the session's row (its new revision and the given columns) and
        record its event."""
        session.revision += 1
        session.updated_at = utcnow()
        columns |= {
            "revision": session.revision,
            "updated_at": write.database.time(session.updated_at),
        }
        await write.connection.execute(
            f"UPDATE sessions SET {', '.join(f'{name} = ?' for name in columns)} WHERE key = ?",
            *columns.values(),
            session.key,
        )
        write.record(kind, session)

    async def _sessions(
        self, connection: Connection, keys: Sequence[str]
    ) -> dict[str, SessionRecord]:
        """The sessions among `keys` that the caller may see."""
        if not keys:
            return {}
        database = self.database
        sql = f"SELECT {SESSION_COLUMNS} FROM sessions WHERE {database.in_keys('key')}"
        rows = await connection.fetch(sql, database.keys(keys))
        return {
            record.key: record
            for record in map(session_record, rows)
            if self.scope is None or record.data_source in self.scope
        }

    async def _session(
        self, connection: Connection, key: str, expected_revision: int | None = None
    ) -> SessionRecord:
        rows = await connection.fetch(f"SELECT {SESSION_COLUMNS} FROM sessions WHERE key = ?", key)
        session = session_record(rows[0]) if rows else None
        if session is None or (self.scope is not None and session.data_source not in self.scope):
            raise SessionNotFound(key)
        if expected_revision is not None and expected_revision != session.revision:
            raise RevisionConflict(expected_revision, session.revision)
        return session

    def _check_pair(self, parent_key: str, child_key: str) -> None:
        check_key(parent_key, self.limits, "sessionKey")
        check_key(child_key, self.limits, "associateSessionKey")

    async def _pair(
        self, connection: Connection, parent_key: str, child_key: str
    ) -> tuple[SessionRecord, SessionRecord]:
        found = await self._sessions(connection, [parent_key, child_key])
        for key in (parent_key, child_key):
            if key not in found:
                raise SessionNotFound(key)
        return found[parent_key], found[child_key]

    async def _reaches(self, connection: Connection, start: str, target: str) -> bool:
        nodes = await walk(connection, [start], Direction.DOWN, max_depth=None)
        return any(node.key == target for node in nodes[start])
