"""Per-operation DataLoaders: every nested field of a kind resolves in one batched read."""

import asyncio
from asyncio import Future
from collections import OrderedDict, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from functools import cached_property
from typing import Any, TypeVar, cast

from strawberry.dataloader import DataLoader

from models import Direction, SessionReader, SessionRecord, TreeNode, Written

WalkKey = tuple[str, Direction, int]
K = TypeVar("K")
V = TypeVar("V")


class Loader(DataLoader[K, V]):
    """A DataLoader whose cached futures survive a cancelled caller. graphql-core cancels the
    siblings of a field whose error nulls their parent, and cancelling a task cancels the
    future it awaits: without the shield that is the cached future every other field loading
    the same key awaits too, and they fail with CancelledError (a 500) instead of a value."""

    def load(self, key: K) -> Awaitable[V]:
        return asyncio.shield(super().load(key))


class Loaders:
    """The loaders of one operation (or one delivered event) over its reader, so nothing is
    served stale. Each is made when first used: most operations need two of the six."""

    def __init__(self, reader: SessionReader) -> None:
        self.reader = reader
        self._written: list[Written] = []
        # Read with their session (`load_with_details`): each loader takes them when made.
        self._sessions_read: dict[str, SessionRecord | None] = {}
        self.details_read: dict[str, list[tuple[str, str]]] = {}

    @cached_property
    def session(self) -> DataLoader[str, SessionRecord | None]:
        return self._primed("session", Loader(self._sessions))

    @cached_property
    def details(self) -> DataLoader[str, list[tuple[str, str]]]:
        return self._primed("details", Loader(_by_key(self.reader.details)))

    @cached_property
    def streams(self) -> DataLoader[str, list[str]]:
        return self._primed("streams", Loader(_by_key(self.reader.streams)))

    @cached_property
    def children(self) -> DataLoader[str, list[str]]:
        return self._primed("children", Loader(_by_key(self.reader.children)))

    @cached_property
    def parents(self) -> DataLoader[str, list[str]]:
        return self._primed("parents", Loader(_by_key(self.reader.parents)))

    @cached_property
    def walk(self) -> DataLoader[WalkKey, list[TreeNode]]:
        return Loader(self._walks)

    def prime(self, written: Written) -> None:
        """What a mutation's transaction read or wrote, so that its answer needs no read. Each
        loader takes its part when it is made: an answer selecting only the key makes none
        (priming all five up front was a tenth of a create's CPU)."""
        self._written.append(written)
        for name in _PARTS:
            if name in self.__dict__:  # made already
                _prime(name, self.__dict__[name], written)

    def _primed(self, name: str, loader: DataLoader[Any, Any]) -> DataLoader[Any, Any]:
        read: dict[str, Any] = {"session": self._sessions_read, "details": self.details_read}
        for key, value in read.get(name, {}).items():
            loader.prime(key, value)
        for written in self._written:
            _prime(name, loader, written)
        return loader

    async def sessions(self, keys: Sequence[str]) -> list[SessionRecord | None]:
        """Many sessions through the session loader, batched with every other load."""
        return await each(self.session, keys)

    async def readable(self, keys: Sequence[str]) -> list[SessionRecord]:
        """The sessions of `keys` that the caller may read, in order: others stay hidden."""
        return [row for row in await self.sessions(keys) if row is not None]

    async def load_with_details(self, key: str) -> SessionRecord | None:
        """The session, its details primed: one read where two batches would take two."""
        sessions, details = await self.reader.sessions_with_details([key])
        found = sessions.get(key)
        self._keep("session", self._sessions_read, key, found)
        if found is not None:
            self._keep("details", self.details_read, key, details[key])
        return found

    def _keep(self, name: str, read: dict[str, Any], key: str, value: Any) -> None:
        """A value read for a loader: primed into it if made, else kept until it is."""
        if name in self.__dict__:
            self.__dict__[name].prime(key, value)
        else:
            read[key] = value

    async def _sessions(self, keys: Sequence[str]) -> list[SessionRecord | None]:
        found = await self.reader.sessions(keys)
        return [found.get(key) for key in keys]

    async def _walks(self, keys: Sequence[WalkKey]) -> list[list[TreeNode]]:
        groups: dict[tuple[Direction, int], list[str]] = defaultdict(list)
        for start, direction, depth in keys:
            groups[direction, depth].append(start)
        found: dict[WalkKey, list[TreeNode]] = {}
        for (direction, depth), starts in groups.items():
            trees = await self.reader.walk(starts, direction, depth)
            found.update(((start, direction, depth), trees[start]) for start in starts)
        return [found[key] for key in keys]


_PARTS = ("session", "details", "streams", "children", "parents")


def _prime(name: str, loader: DataLoader[Any, Any], written: Written) -> None:
    """Prime one loader with its part of what a mutation wrote (a part that is None was not
    touched)."""
    if name == "session":
        for session in (written.session, *written.others):
            loader.prime(session.key, session, force=True)
        return
    part = getattr(written, name)
    if part is not None:
        loader.prime(written.session.key, part, force=True)


async def each(loader: DataLoader[K, V], keys: Sequence[K]) -> list[V]:
    """Many keys of one loader, awaited one by one: DataLoader.load_many gathers them, which
    cost a fifth of a 1,000-session walk. All are asked for before the first wait, so they
    resolve in one batch, and after the first wait the rest are done."""
    pending = [cast("Future[V]", loader.load(key)) for key in keys]
    try:
        return [await future for future in pending]
    finally:
        for future in pending:  # a failed batch fails them all: mark each one seen
            if future.done() and not future.cancelled():
                future.exception()


def _by_key(
    read: Callable[[Sequence[str]], Awaitable[dict[str, list[Any]]]],
) -> Callable[[Sequence[str]], Awaitable[list[list[Any]]]]:
    async def load(keys: Sequence[str]) -> list[list[Any]]:
        found = await read(keys)
        return [found.get(key, []) for key in keys]

    return load


class EventLoaders:
    """One set of loaders per delivered event and caller scope, shared by every subscriber that
    receives it: a session an event names is read once, not once per subscriber. Keeps the
    newest `size` sets."""

    def __init__(self, reader: Callable[[frozenset[str] | None], SessionReader], size: int = 64):
        self.reader = reader
        self.size = size
        self._sets: OrderedDict[tuple[int, frozenset[str] | None], Loaders] = OrderedDict()

    def get(self, cursor: int, scope: frozenset[str] | None) -> Loaders:
        key = (cursor, scope)
        if (loaders := self._sets.get(key)) is None:
            loaders = self._sets[key] = Loaders(self.reader(scope))
            if len(self._sets) > self.size:
                self._sets.popitem(last=False)
        return loaders
