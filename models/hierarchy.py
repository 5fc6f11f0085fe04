"""Walking the association DAG: one recursive SQL statement, then breadth-first order in Python."""

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from models.tables import AssociationRow, SessionRow


class Direction(Enum):
    DOWN = "descendants"
    UP = "ancestors"


@dataclass(frozen=True)
class TreeNode:
    key: str
    depth: int
    via_key: str


async def walk(
    session: AsyncSession, starts: Sequence[str], direction: Direction, max_depth: int | None
) -> dict[str, list[TreeNode]]:
    """For each start, every session reachable from it, each once, breadth first.

    One statement for any number of starts and sessions: the recursive part deduplicates
    (start, key, depth) triples, so a diamond-rich DAG costs at most sessions times depth rows
    rather than one row per path, and the links among the reached sessions come back with it.
    """
    links = sa.inspect(AssociationRow).local_table.alias("links")
    source, target = links.c.parent_key, links.c.child_key
    if direction is Direction.UP:
        source, target = target, source
    seed: Any = sa.select(
        col(SessionRow.key).label("root"),
        col(SessionRow.key).label("key"),
        sa.literal(0, sa.Integer).label("depth"),
    ).where(col(SessionRow.key).in_(starts))
    reached = seed.cte("reached", recursive=True)
    step = sa.select(reached.c.root, target, reached.c.depth + 1).join(
        reached, source == reached.c.key
    )
    if max_depth is not None:
        step = step.where(reached.c.depth < max_depth)
    reached = reached.union(step)
    frontier = sa.select(reached.c.key)
    if max_depth is not None:
        frontier = frontier.where(reached.c.depth < max_depth)
    edges: Any = select(source, target).where(source.in_(frontier))
    if direction is Direction.DOWN:
        edges = edges.order_by(source, links.c.position)
    else:  # parents oldest first, as Session.parents lists them
        edges = edges.join(SessionRow, col(SessionRow.key) == target).order_by(
            source, col(SessionRow.created_at), col(SessionRow.key)
        )
    following: dict[str, list[str]] = {}
    for origin, neighbour in await session.exec(edges):
        following.setdefault(origin, []).append(neighbour)
    return {start: _breadth_first(start, following, max_depth) for start in starts}


def _breadth_first(
    start: str, following: dict[str, list[str]], max_depth: int | None
) -> list[TreeNode]:
    seen = {start}
    nodes: list[TreeNode] = []
    layer = [start]
    depth = 0
    while layer and (max_depth is None or depth < max_depth):
        depth += 1
        next_layer = []
        for origin in layer:
            for neighbour in following.get(origin, ()):
                if neighbour not in seen:
                    seen.add(neighbour)
                    nodes.append(TreeNode(neighbour, depth, origin))
                    next_layer.append(neighbour)
        layer = next_layer
    return nodes
