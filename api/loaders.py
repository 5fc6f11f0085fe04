"""Per-operation DataLoaders: every nested field of a kind resolves in one batched read."""

from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from typing import Any

from strawberry.dataloader import DataLoader

from models import Direction, SessionRepository, SessionRow, TreeNode

WalkKey = tuple[str, Direction, int]


class Loaders:
    """Fresh for each query and for each delivered event, so nothing is served stale."""

    def __init__(self, repository: SessionRepository) -> None:
        self.repository = repository
        self.session = DataLoader[str, SessionRow | None](self._sessions)
        self.details = DataLoader[str, list[tuple[str, str]]](self._by_key(repository.details))
        self.streams = DataLoader[str, list[str]](self._by_key(repository.streams))
        self.children = DataLoader[str, list[str]](self._by_key(repository.children))
        self.parents = DataLoader[str, list[str]](self._by_key(repository.parents))
        self.walk = DataLoader[WalkKey, list[TreeNode]](self._walks)

    async def _sessions(self, keys: Sequence[str]) -> list[SessionRow | None]:
        rows = await self.repository.get_many(keys)
        return [rows.get(key) for key in keys]

    @staticmethod
    def _by_key(read: Any) -> Any:
        async def load(keys: Sequence[str]) -> list[Any]:
            found = await read(keys)
            return [found.get(key, []) for key in keys]

        return load

    async def _walks(self, keys: Sequence[WalkKey]) -> list[list[TreeNode]]:
        groups: dict[tuple[Direction, int], list[str]] = defaultdict(list)
        for start, direction, depth in keys:
            groups[direction, depth].append(start)
        found: dict[WalkKey, list[TreeNode]] = {}
        for (direction, depth), starts in groups.items():
            trees = await self.repository.walk(starts, direction, depth)
            found.update(((start, direction, depth), trees[start]) for start in starts)
        return [found[key] for key in keys]


class EventLoaders:
    """One set of loaders per delivered event and caller scope, shared by every subscriber that
    receives it: a session an event names is read once, not once per subscriber. Keeps the
    newest `size` sets."""

    def __init__(self, repository: SessionRepository, size: int = 64) -> None:
        self.repository = repository
        self.size = size
        self._sets: OrderedDict[tuple[int, frozenset[str] | None], Loaders] = OrderedDict()

    def get(self, cursor: int, scope: frozenset[str] | None) -> Loaders:
        key = (cursor, scope)
        if (loaders := self._sets.get(key)) is None:
            loaders = self._sets[key] = Loaders(self.repository.within(scope))
            if len(self._sets) > self.size:
                self._sets.popitem(last=False)
        return loaders
