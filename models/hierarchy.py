"""Walking the association DAG: one recursive SQL statement, then breadth-first order in Python."""

from collections.abc import Sequence
from enum import Enum
from typing import NamedTuple

from models.database import Connection


class Direction(Enum):
    DOWN = "descendants"
    UP = "ancestors"


class TreeNode(NamedTuple):
    """A session reached by a walk: a tuple, as a 1,000-session walk makes a thousand."""

    key: str
    depth: int
    via_key: str
    data_source: str


async def walk(
    connection: Connection, starts: Sequence[str], direction: Direction, max_depth: int | None
) -> dict[str, list[TreeNode]]:
    """For each start, every session reachable from it, each once, breadth first.

    One statement for any number of starts and sessions: the recursive part deduplicates
    (start, key, depth) triples, so a diamond-rich DAG costs at most sessions times depth rows
    rather than one row per path, and the links among the reached sessions come back with it.
    """
    source, target = "parent_key", "child_key"
    if direction is Direction.UP:
        source, target = target, source
    database = connection.database
    params: list[object] = [database.keys(starts)]
    bounded = ""
    if max_depth is not None:
        bounded = " WHERE reached.depth < ?"
        params.append(max_depth)
    # Each reached session's data source comes with it (a caller's scope needs no other read):
    # links always name existing sessions (foreign keys, deleted by cascade).
    order = "l.parent_key, l.position"
    if direction is Direction.UP:  # parents oldest first, as Session.parents lists them
        order = "l.child_key, s.created_at, s.key"
    sql = (
        "WITH RECURSIVE reached(root, key, depth) AS ("
        f"SELECT key, key, 0 FROM sessions WHERE {database.in_keys('key')} "
        f"UNION SELECT reached.root, a.{target}, reached.depth + 1 FROM session_associations a "
        f"JOIN reached ON a.{source} = reached.key{bounded}) "
        f"SELECT l.{source}, l.{target}, s.data_source FROM session_associations l "
        f"JOIN sessions s ON s.key = l.{target} "
        f"WHERE l.{source} IN (SELECT key FROM reached{bounded}) ORDER BY {order}"
    )
    if max_depth is not None:
        params.append(max_depth)
    following: dict[str, list[tuple[str, str]]] = {}
    for origin, neighbour, data_source in await connection.fetch(sql, *params):
        following.setdefault(origin, []).append((neighbour, data_source))
    return {start: _breadth_first(start, following, max_depth) for start in starts}


def _breadth_first(
    start: str, following: dict[str, list[tuple[str, str]]], max_depth: int | None
) -> list[TreeNode]:
    seen = {start}
    nodes: list[TreeNode] = []
    layer = [start]
    depth = 0
    while layer and (max_depth is None or depth < max_depth):
        depth += 1
        next_layer = []
        for origin in layer:
            for neighbour, data_source in following.get(origin, ()):
                if neighbour not in seen:
                    seen.add(neighbour)
                    nodes.append(TreeNode(neighbour, depth, origin, data_source))
                    next_layer.append(neighbour)
        layer = next_layer
    return nodes
