"""The repository: one transaction per use case, every change committed with its event row."""

import copy
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar
from uuid import uuid4

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.database import Database, SharedRead
from models.errors import (
    AssociationCycle,
    IdempotencyMismatch,
    InvalidInput,
    RevisionConflict,
    SessionNotFound,
)
from models.hierarchy import Direction, TreeNode, walk
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
from models.queries import Page, SessionFilter, decode_page_cursor
from models.tables import (
    AssociationRow,
    DetailRow,
    EventKind,
    EventLogState,
    EventRow,
    IdempotencyRow,
    SessionRow,
    SessionStatus,
    StreamRow,
    as_utc,
    utcnow,
)

T = TypeVar("T")
Announce = Callable[[list[EventRow]], None]

# Below SQLite's and asyncpg's limits on bound parameters in one statement.
CHUNK = 5000


@dataclass
class _Write:
    """The state of one write transaction: its session and the events it appends."""

    session: AsyncSession
    log: EventLogState
    events: list[EventRow] = field(default_factory=list)

    def record(self, kind: EventKind, row: SessionRow) -> None:
        self.log.last_cursor += 1
        self.session.add(self.log)
        event = EventRow(
            cursor=self.log.last_cursor,
            kind=kind,
            session_key=row.key,
            data_source=row.data_source,
            occurred_at=row.updated_at,
        )
        self.session.add(event)
        self.events.append(event)


def _chunks(items: Sequence[T]) -> Iterable[Sequence[T]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


async def _grouped(
    session: AsyncSession, keys: Sequence[str], query: Callable[[Sequence[str]], Any]
) -> dict[str, list[Any]]:
    """Rows of (key, value...) for the keys, a chunk at a time, grouped by key in row order;
    a value of several columns comes as a tuple."""
    found: dict[str, list[Any]] = {}
    for chunk in _chunks(keys):
        for key, *value in await session.exec(query(chunk)):
            found.setdefault(key, []).append(value[0] if len(value) == 1 else tuple(value))
    return found


class SessionRepository:
    """The use cases. `scope`, when set, is the data sources a caller may touch: sessions
    outside it do not exist as far as that caller can tell."""

    def __init__(
        self,
        database: Database,
        limits: Limits,
        announce: Announce | None = None,
        scope: frozenset[str] | None = None,
    ):
        self.database = database
        # Where reads go: the database, or one query operation's shared transaction.
        self.reads: Database | SharedRead = database
        self.limits = limits
        self._announce = announce
        self.scope = scope

    def sharing(self, read: SharedRead) -> "SessionRepository":
        """This repository with every read in one shared transaction (see SharedRead)."""
        shared = copy.copy(self)
        shared.reads = read
        return shared

    def within(self, scope: frozenset[str] | None) -> "SessionRepository":
        """This repository, seen by a caller limited to `scope` (None: everything)."""
        if scope == self.scope:
            return self
        scoped = copy.copy(self)
        scoped.scope = scope
        return scoped

    def _visible(self) -> list[Any]:
        if self.scope is None:
            return []
        return [col(SessionRow.data_source).in_(sorted(self.scope))]

    # -- writes ------------------------------------------------------------------------------

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[_Write]:
        async with self.database.write() as session:
            # Every writer locks the log row first: one writer at a time, cursors in commit order.
            state = (await session.exec(select(EventLogState).with_for_update())).one()
            write = _Write(session, state)
            yield write
        if write.events and self._announce is not None:
            self._announce(write.events)

    async def create(
        self, new: NewSession, idempotency_key: str | None = None
    ) -> tuple[SessionRow, bool]:
        """Create a session; returns it and False when an idempotent retry found the first one."""
        new.validate(self.limits)
        if idempotency_key is not None:
            check_key(idempotency_key, self.limits, "idempotencyKey")
        async with self._writing() as write:
            session = write.session
            if idempotency_key is not None:
                record = await session.get(IdempotencyRow, idempotency_key)
                if record is not None:
                    if record.fingerprint != new.fingerprint():
                        raise IdempotencyMismatch(idempotency_key)
                    return await self._row(session, record.session_key), False
            associates = unique(new.associate_keys)
            found = await self._existing_keys(session, associates)
            for key in new.associate_keys:
                if key not in found:
                    raise SessionNotFound(key)
            now = utcnow()
            row = SessionRow(
                key=str(uuid4()),
                data_source=new.data_source,
                type=new.type,
                version=new.version,
                identifier=new.identifier,
                utc_offset_seconds=new.utc_offset_seconds,
                status=SessionStatus.LIVE,
                created_at=as_utc(new.created_at) if new.created_at else now,
                updated_at=now,
            )
            session.add(row)
            await session.flush()
            session.add_all(
                [DetailRow(session_key=row.key, name=n, value=v) for n, v in new.details]
                + [
                    StreamRow(session_key=row.key, position=i, name=name)
                    for i, name in enumerate(unique(new.streams))
                ]
                + [
                    AssociationRow(parent_key=row.key, child_key=child, position=i)
                    for i, child in enumerate(associates)
                ]
            )
            if idempotency_key is not None:
                session.add(
                    IdempotencyRow(
                        key=idempotency_key,
                        fingerprint=new.fingerprint(),
                        session_key=row.key,
                        created_at=now,
                    )
                )
            write.record(EventKind.STARTED, row)
        return row, True

    async def update_details(self, change: DetailsChange) -> SessionRow:
        change.validate(self.limits)
        async with self._writing() as write:
            session = write.session
            row = await self._row(session, change.session_key, change.expected_revision)
            stored = {
                detail.name: detail
                for detail in (
                    await session.exec(select(DetailRow).where(DetailRow.session_key == row.key))
                ).all()
            }
            changed = False
            for name, value in change.details:
                detail = stored.get(name)
                if detail is None:
                    stored[name] = DetailRow(session_key=row.key, name=name, value=value)
                    session.add(stored[name])
                elif detail.value != value:
                    detail.value = value
                    session.add(detail)
                else:
                    continue
                changed = True
            for name in change.remove:
                if (detail := stored.pop(name, None)) is not None:
                    await session.delete(detail)
                    changed = True
            if len(stored) > self.limits.details_per_session:
                raise InvalidInput(
                    "details", f"at most {self.limits.details_per_session} details per session"
                )
            if changed:
                self._touch(write, row)
        return row

    async def update_identifier(
        self, key: str, identifier: str, expected_revision: int | None = None
    ) -> SessionRow:
        check_key(key, self.limits, "sessionKey")
        check_text(identifier, "identifier", self.limits.text_length)
        async with self._writing() as write:
            row = await self._row(write.session, key, expected_revision)
            if row.identifier != identifier:
                row.identifier = identifier
                self._touch(write, row)
        return row

    async def add_association(self, parent_key: str, child_key: str) -> SessionRow:
        check_key(parent_key, self.limits, "sessionKey")
        check_key(child_key, self.limits, "associateSessionKey")
        async with self._writing() as write:
            session = write.session
            row = await self._row(session, parent_key)
            await self._row(session, child_key)
            children = await self._children(session, [parent_key])
            if child_key in children.get(parent_key, []):
                return row
            if parent_key == child_key or await self._reaches(session, child_key, parent_key):
                raise AssociationCycle(parent_key, child_key)
            count = len(children.get(parent_key, []))
            if count >= self.limits.associates_per_session:
                raise InvalidInput(
                    "associateSessionKey",
                    f"at most {self.limits.associates_per_session} associates per session",
                )
            last = await session.exec(
                select(sa.func.max(AssociationRow.position)).where(
                    AssociationRow.parent_key == parent_key
                )
            )
            position = (last.one() or 0) + 1 if count else 0
            session.add(
                AssociationRow(parent_key=parent_key, child_key=child_key, position=position)
            )
            self._touch(write, row)
        return row

    async def remove_association(self, parent_key: str, child_key: str) -> SessionRow:
        check_key(parent_key, self.limits, "sessionKey")
        check_key(child_key, self.limits, "associateSessionKey")
        async with self._writing() as write:
            session = write.session
            row = await self._row(session, parent_key)
            await self._row(session, child_key)
            link = await session.get(AssociationRow, (parent_key, child_key))
            if link is not None:
                await session.delete(link)
                self._touch(write, row)
        return row

    async def add_streams(self, key: str, streams: Sequence[str]) -> SessionRow:
        check_key(key, self.limits, "sessionKey")
        check_streams(streams, self.limits)
        async with self._writing() as write:
            session = write.session
            row = await self._row(session, key)
            stored = (await self._streams(session, [key])).get(key, [])
            new = [name for name in unique(streams) if name not in set(stored)]
            if not new:
                return row
            if len(stored) + len(new) > self.limits.streams_per_session:
                raise InvalidInput(
                    "streams", f"at most {self.limits.streams_per_session} streams per session"
                )
            last = await session.exec(
                select(sa.func.max(StreamRow.position)).where(StreamRow.session_key == key)
            )
            start = (last.one() or 0) + 1 if stored else 0
            session.add_all(
                StreamRow(session_key=key, position=start + i, name=name)
                for i, name in enumerate(new)
            )
            self._touch(write, row)
        return row

    async def end(
        self, key: str, data_source: str | None = None, ended_at: datetime | None = None
    ) -> tuple[SessionRow, bool]:
        """End a live session; returns the row and whether it had already ended."""
        check_key(key, self.limits, "sessionKey")
        ended_at = check_time(ended_at, "endedAt")
        async with self._writing() as write:
            row = await self._row(write.session, key)
            if data_source is not None and data_source != row.data_source:
                raise InvalidInput("dataSource", "is not the session's data source")
            if row.status is SessionStatus.ENDED:
                return row, True
            now = utcnow()
            ended_at = ended_at or now
            if ended_at < row.created_at:
                raise InvalidInput("endedAt", "must not be before the session's createdAt")
            row.status = SessionStatus.ENDED
            row.ended_at = ended_at
            self._touch(write, row, EventKind.STOPPED)
        return row, False

    def _touch(self, write: _Write, row: SessionRow, kind: EventKind = EventKind.UPDATED) -> None:
        row.revision += 1
        row.updated_at = utcnow()
        write.session.add(row)
        write.record(kind, row)

    async def _row(
        self, session: AsyncSession, key: str, expected_revision: int | None = None
    ) -> SessionRow:
        row = await session.get(SessionRow, key)
        if row is None or (self.scope is not None and row.data_source not in self.scope):
            raise SessionNotFound(key)
        if expected_revision is not None and expected_revision != row.revision:
            raise RevisionConflict(expected_revision, row.revision)
        return row

    async def _reaches(self, session: AsyncSession, start: str, target: str) -> bool:
        nodes = await walk(session, [start], Direction.DOWN, max_depth=None)
        return any(node.key == target for node in nodes[start])

    # -- reads -------------------------------------------------------------------------------

    async def get_many(self, keys: Sequence[str]) -> dict[str, SessionRow]:
        async with self.reads.read() as session:
            rows: dict[str, SessionRow] = {}
            for chunk in _chunks(keys):
                result = await session.exec(
                    select(SessionRow).where(col(SessionRow.key).in_(chunk), *self._visible())
                )
                rows.update((row.key, row) for row in result)
            return rows

    async def details(self, keys: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
        """Each session's (name, value) details, by name."""
        async with self.reads.read() as session:
            return await _grouped(
                session,
                keys,
                lambda chunk: (
                    select(DetailRow.session_key, DetailRow.name, DetailRow.value)
                    .where(col(DetailRow.session_key).in_(chunk))
                    .order_by(col(DetailRow.session_key), col(DetailRow.name))
                ),
            )

    async def streams(self, keys: Sequence[str]) -> dict[str, list[str]]:
        async with self.reads.read() as session:
            return await self._streams(session, keys)

    async def children(self, keys: Sequence[str]) -> dict[str, list[str]]:
        async with self.reads.read() as session:
            return await self._children(session, keys)

    async def parents(self, keys: Sequence[str]) -> dict[str, list[str]]:
        """Each session's parents, oldest first."""
        async with self.reads.read() as session:
            return await _grouped(
                session,
                keys,
                lambda chunk: (
                    select(AssociationRow.child_key, AssociationRow.parent_key)
                    .join(SessionRow, col(SessionRow.key) == AssociationRow.parent_key)
                    .where(col(AssociationRow.child_key).in_(chunk))
                    .order_by(col(SessionRow.created_at), col(SessionRow.key))
                ),
            )

    async def _streams(self, session: AsyncSession, keys: Sequence[str]) -> dict[str, list[str]]:
        return await _grouped(
            session,
            keys,
            lambda chunk: (
                select(StreamRow.session_key, StreamRow.name)
                .where(col(StreamRow.session_key).in_(chunk))
                .order_by(col(StreamRow.session_key), col(StreamRow.position))
            ),
        )

    async def _children(self, session: AsyncSession, keys: Sequence[str]) -> dict[str, list[str]]:
        return await _grouped(
            session,
            keys,
            lambda chunk: (
                select(AssociationRow.parent_key, AssociationRow.child_key)
                .where(col(AssociationRow.parent_key).in_(chunk))
                .order_by(col(AssociationRow.parent_key), col(AssociationRow.position))
            ),
        )

    async def _existing_keys(self, session: AsyncSession, keys: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(keys):
            result = await session.exec(
                select(SessionRow.key).where(col(SessionRow.key).in_(chunk), *self._visible())
            )
            found.update(result)
        return found

    def _live(self, data_source: str | None) -> Any:
        query = select(SessionRow).where(SessionRow.status == SessionStatus.LIVE, *self._visible())
        if data_source is not None:
            query = query.where(SessionRow.data_source == data_source)
        return query.order_by(col(SessionRow.created_at), col(SessionRow.key))

    async def current(self, data_source: str | None = None) -> list[SessionRow]:
        async with self.reads.read() as session:
            return list(await session.exec(self._live(data_source)))

    async def snapshot(self, data_source: str | None = None) -> tuple[int, list[SessionRow]]:
        """The newest cursor and the live sessions, read from one database snapshot."""
        async with self.reads.read(snapshot=True) as session:
            cursor = (await session.exec(select(EventLogState.last_cursor))).one()
            return cursor, list(await session.exec(self._live(data_source)))

    async def page(self, where: SessionFilter, first: int, after: str | None = None) -> Page:
        if not 1 <= first <= self.limits.page_size:
            raise InvalidInput("first", f"must be between 1 and {self.limits.page_size}")
        where.validate(self.limits)
        query = select(SessionRow).where(*where.conditions(), *self._visible())
        if after is not None:
            created_at, key = decode_page_cursor(after)
            query = query.where(
                sa.tuple_(col(SessionRow.created_at), col(SessionRow.key)) < (created_at, key)
            )
        query = query.order_by(col(SessionRow.created_at).desc(), col(SessionRow.key).desc())
        async with self.reads.read() as session:
            rows = list(await session.exec(query.limit(first + 1)))
        return Page(rows[:first], has_next=len(rows) > first)

    async def count(self, where: SessionFilter) -> int:
        where.validate(self.limits)
        query = (
            select(sa.func.count())
            .select_from(SessionRow)
            .where(*where.conditions(), *self._visible())
        )
        async with self.reads.read() as session:
            return (await session.exec(query)).one()

    async def data_sources(self) -> list[tuple[str, int, int]]:
        """(name, live sessions, all sessions) for every data source, by name."""
        live = sa.func.sum(sa.case((col(SessionRow.status) == SessionStatus.LIVE, 1), else_=0))
        query = (
            select(SessionRow.data_source, live, sa.func.count())
            .where(*self._visible())
            .group_by(col(SessionRow.data_source))
            .order_by(col(SessionRow.data_source))
        )
        async with self.reads.read() as session:
            return [
                (name, int(live or 0), total) for name, live, total in await session.exec(query)
            ]

    async def walk(
        self, keys: Sequence[str], direction: Direction, max_depth: int
    ) -> dict[str, list[TreeNode]]:
        async with self.reads.read() as session:
            return await walk(session, keys, direction, max_depth)

    # -- cleanup -----------------------------------------------------------------------------

    async def end_idle(self, idle_since: datetime, limit: int = 500) -> int:
        """End up to `limit` live sessions unchanged since `idle_since`, each with one STOPPED
        event. Racing instances are serialised by the log lock, so each session ends once."""
        async with self._writing() as write:
            rows = (
                await write.session.exec(
                    select(SessionRow)
                    .where(
                        SessionRow.status == SessionStatus.LIVE,
                        col(SessionRow.updated_at) < idle_since,
                    )
                    .order_by(col(SessionRow.updated_at))
                    .limit(limit)
                )
            ).all()
            for row in rows:
                row.status = SessionStatus.ENDED
                row.ended_at = utcnow()
                self._touch(write, row, EventKind.STOPPED)
        return len(rows)

    async def delete_ended(self, ended_before: datetime, limit: int = 500) -> int:
        """Delete up to `limit` sessions that ended before `ended_before`, with their parts."""
        async with self._writing() as write:
            keys = (
                select(SessionRow.key)
                .where(
                    SessionRow.status == SessionStatus.ENDED,
                    col(SessionRow.ended_at) < ended_before,
                )
                .limit(limit)
            )
            result: Any = await write.session.exec(
                sa.delete(SessionRow).where(col(SessionRow.key).in_(keys.scalar_subquery()))
            )
            return int(result.rowcount)

    async def prune_events(self, before: datetime, limit: int = 500) -> int:
        """Delete up to `limit` of the oldest events that occurred before `before`; cursors
        before the newest deleted one then expire."""
        async with self._writing() as write:
            session = write.session
            oldest = (
                select(EventRow.cursor)
                .where(EventRow.occurred_at < before)
                .order_by(col(EventRow.cursor))
                .limit(limit)
                .subquery()
            )
            newest = (await session.exec(select(sa.func.max(oldest.c.cursor)))).one()
            if newest is None:
                return 0
            result: Any = await session.exec(
                sa.delete(EventRow).where(col(EventRow.cursor) <= newest)
            )
            write.log.pruned_through = newest
            session.add(write.log)
            return int(result.rowcount)
