"""The GraphQL object types: sessions, their hierarchy, pages, data sources and events."""

from collections.abc import Mapping
from dataclasses import fields
from datetime import datetime
from typing import Self, TypeVar

import strawberry

from api.errors import invalid_argument
from api.loaders import Loaders
from api.node import ID_DESCRIPTION, Node, global_id
from models import (
    Direction,
    EventKind,
    EventRecord,
    SessionFilter,
    SessionRecord,
    SessionStatus,
    TreeNode,
    encode_cursor,
)
from models.queries import encode_page_cursor

# The domain's enums, registered as they are (strawberry.enum returns the class it is given).
strawberry.enum(
    SessionStatus,
    description="Live until ended; an ended session is history and can still be read and "
    "annotated.",
)
strawberry.enum(EventKind, name="SessionEventKind")

MAX_WALK_DEPTH = 32
RECORD_FIELDS = tuple(field.name for field in fields(SessionRecord))
T = TypeVar("T")


def is_complete(row: SessionRecord) -> bool:
    return row.status is SessionStatus.ENDED


def check_depth(max_depth: int) -> None:
    if not 1 <= max_depth <= MAX_WALK_DEPTH:
        raise invalid_argument("maxDepth", f"must be between 1 and {MAX_WALK_DEPTH}")


def reached(
    start: str, nodes: list[TreeNode], readable: Mapping[str, T]
) -> list[tuple[TreeNode, T]]:
    """The nodes of a walk from `start` the caller sees, each with its readable session. The
    walk stops at sessions the caller may not read: nothing is reached through them."""
    found: list[tuple[TreeNode, T]] = []
    seen = {start}
    for node in nodes:  # breadth first: a node's via is decided before the node
        session = readable.get(node.key)
        if session is not None and node.via_key in seen:
            seen.add(node.key)
            found.append((node, session))
    return found


@strawberry.type
class SessionDetail:
    name: str
    value: str


@strawberry.type(description="A grouping of data streams from one data source.")
class Session(Node):
    key: strawberry.ID = strawberry.field(description="Server-allocated, never reused (UUID text).")
    data_source: str
    type: str = strawberry.field(description='Defaults to "Session".')
    version: int = strawberry.field(description="Defaults to 1.")
    identifier: str
    utc_offset_seconds: int = strawberry.field(
        description="Offset of the session's local clock from UTC, in seconds (-64800..64800)."
    )
    status: SessionStatus
    is_complete: bool = strawberry.field(
        description="Parity with the original API: true once the session has ended."
    )
    created_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    revision: int = strawberry.field(
        description="Increases by one on every change; send it back as expectedRevision to "
        "update safely."
    )
    loaders: strawberry.Private[Loaders]

    @classmethod
    def from_row(cls, row: SessionRecord, loaders: Loaders) -> Self:
        """The record's fields (tests/test_records.py: they are the table's columns and this
        type's fields), and what follows from them."""
        named = {name: getattr(row, name) for name in RECORD_FIELDS}
        return cls(**named, is_complete=is_complete(row), loaders=loaders)

    @classmethod
    async def load_many(cls, keys: list[str], loaders: Loaders) -> list[Self]:
        return [cls.from_row(row, loaders) for row in await loaders.readable(keys)]

    @strawberry.field(description=ID_DESCRIPTION)
    def id(self) -> strawberry.ID:
        return global_id("Session", self.key)

    @strawberry.field(
        description="Names of the data streams grouped by this session, in the order they were "
        "added."
    )
    async def streams(self) -> list[str]:
        return await self.loaders.streams.load(self.key)

    @strawberry.field(description="All details, ordered by name.")
    async def details(self) -> list[SessionDetail]:
        found = await self.loaders.details.load(self.key)
        return [SessionDetail(name=name, value=value) for name, value in found]

    @strawberry.field(
        description="One detail's value, or null when the session has no such detail."
    )
    async def detail(self, name: str) -> str | None:
        return dict(await self.loaders.details.load(self.key)).get(name)

    @strawberry.field(
        description="Keys of the direct associate (child) sessions, in the order they were linked."
    )
    async def associate_session_keys(self) -> list[strawberry.ID]:
        # Through the session loader, so keys of sessions the caller may not read stay hidden.
        return [session.key for session in await self.associates()]

    @strawberry.field(description="Direct associate (child) sessions.")
    async def associates(self) -> list["Session"]:
        return await Session.load_many(await self.loaders.children.load(self.key), self.loaders)

    @strawberry.field(description="Sessions that list this one as an associate.")
    async def parents(self) -> list["Session"]:
        return await Session.load_many(await self.loaders.parents.load(self.key), self.loaders)

    @strawberry.field(
        description="Every session below this one, breadth first, each once, down to maxDepth "
        "levels (1..32)."
    )
    async def descendants(self, max_depth: int = 8) -> list["SessionTreeNode"]:
        return await self._walk(Direction.DOWN, max_depth)

    @strawberry.field(
        description="Every session above this one, nearest first, each once, up to maxDepth "
        "levels (1..32)."
    )
    async def ancestors(self, max_depth: int = 8) -> list["SessionTreeNode"]:
        return await self._walk(Direction.UP, max_depth)

    async def _walk(self, direction: Direction, max_depth: int) -> list["SessionTreeNode"]:
        check_depth(max_depth)
        nodes: list[TreeNode] = await self.loaders.walk.load((self.key, direction, max_depth))
        loaded = await Session.load_many([node.key for node in nodes], self.loaders)
        readable: dict[str, Session] = {session.key: session for session in loaded}
        return [
            SessionTreeNode(depth=node.depth, via_key=strawberry.ID(node.via_key), session=session)
            for node, session in reached(self.key, nodes, readable)
        ]


@strawberry.type
class SessionTreeNode:
    depth: int = strawberry.field(description="1 for a direct associate or parent.")
    via_key: strawberry.ID = strawberry.field(
        description="The session one step closer to where the walk started."
    )
    session: Session


@strawberry.type
class PageInfo:
    has_next_page: bool
    end_cursor: str | None


@strawberry.type
class SessionEdge:
    node: Session

    @strawberry.field
    def cursor(self) -> str:
        """Made only when asked for: most pages are read without their edges' cursors."""
        return encode_page_cursor(self.node.created_at, self.node.key)


@strawberry.type
class SessionConnection:
    edges: list[SessionEdge]
    page_info: PageInfo
    where: strawberry.Private[SessionFilter]
    loaders: strawberry.Private[Loaders]

    @strawberry.field
    async def total_count(self) -> int:
        return await self.loaders.reader.count(self.where)


@strawberry.type
class DataSource:
    name: str
    live_sessions: int
    total_sessions: int


@strawberry.type(
    description="A consistent view: the live sessions and the cursor of the newest event they "
    "include."
)
class SessionSnapshot:
    cursor: str
    sessions: list[Session]


@strawberry.type(
    description="One committed change. Cursors are opaque strings that order events; pass the "
    "last one you saw as after: to resume with nothing lost and nothing twice."
)
class SessionEvent:
    cursor: str
    kind: EventKind
    session_key: strawberry.ID
    data_source: str
    occurred_at: datetime
    loaders: strawberry.Private[Loaders]

    @classmethod
    def from_row(cls, row: EventRecord, loaders: Loaders) -> Self:
        return cls(
            cursor=encode_cursor(row.cursor),
            kind=row.kind,
            session_key=strawberry.ID(row.session_key),
            data_source=row.data_source,
            occurred_at=row.occurred_at,
            loaders=loaders,
        )

    @strawberry.field(description="The session as it is when the event is delivered.")
    async def session(self) -> Session | None:
        row = await self.loaders.session.load(self.session_key)
        return None if row is None else Session.from_row(row, self.loaders)
