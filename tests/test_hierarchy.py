"""Session hierarchies: descendants and ancestors, breadth first, each session once, bounded."""

from typing import Any

from tests.client import Client

WALK = """
query Walk($key: ID!, $maxDepth: Int!) {
  session(key: $key) {
    descendants(maxDepth: $maxDepth) { depth viaKey session { key dataSource status } }
    ancestors(maxDepth: $maxDepth) { depth viaKey session { key dataSource status } }
  }
}"""

WALK_DEFAULT = """
query WalkDefault($key: ID!) {
  session(key: $key) {
    descendants { depth viaKey session { key } }
    ancestors { depth viaKey session { key } }
  }
}"""

Node = tuple[str, int, str]


def build(client: Client, links: dict[str, list[str]], **data_sources: str) -> dict[str, str]:
    """Create a DAG given as {name: [child names]}, children first, linked by createSession.

    Returns the key of every name; data_sources maps a name to its data source.
    """
    keys: dict[str, str] = {}

    def create(name: str) -> str:
        if name not in keys:
            children = [create(child) for child in links.get(name, [])]
            keys[name] = client.create(
                dataSource=data_sources.get(name, "car-1"), associateSessionKeys=children
            )["key"]
        return keys[name]

    for name in links:
        create(name)
    return keys


def walk(client: Client, key: str, max_depth: int = 8) -> dict[str, list[dict[str, Any]]]:
    return client.data(WALK, {"key": key, "maxDepth": max_depth})["session"]


def named(nodes: list[dict[str, Any]], keys: dict[str, str]) -> list[Node]:
    """(session, depth, via) of each node, by the names given to build()."""
    names = {key: name for name, key in keys.items()}
    return [(names[n["session"]["key"]], n["depth"], names[n["viaKey"]]) for n in nodes]


def diamond(client: Client) -> dict[str, str]:
    return build(client, {"A": ["B", "C"], "B": ["D"], "C": ["D"]})


def test_descendants_of_a_diamond_list_each_session_once(client: Client) -> None:
    keys = diamond(client)
    found = named(walk(client, keys["A"])["descendants"], keys)
    assert sorted(found[:2]) == [("B", 1, "A"), ("C", 1, "A")]
    assert len(found) == 3
    name, depth, via = found[2]
    assert (name, depth) == ("D", 2)
    assert via in {"B", "C"}


def test_ancestors_of_a_diamond_bottom_give_both_parents_then_the_top(client: Client) -> None:
    keys = diamond(client)
    found = named(walk(client, keys["D"])["ancestors"], keys)
    assert sorted(found[:2]) == [("B", 1, "D"), ("C", 1, "D")]
    assert len(found) == 3
    name, depth, via = found[2]
    assert (name, depth) == ("A", 2)
    assert via in {"B", "C"}


def test_descendants_are_breadth_first_with_depth_and_via_key(client: Client) -> None:
    links = {"A": ["B", "C"], "B": ["D", "E"], "C": ["F"], "D": ["G"], "F": ["H"]}
    keys = build(client, links)
    found = named(walk(client, keys["A"])["descendants"], keys)
    assert [depth for _, depth, _ in found] == [1, 1, 2, 2, 2, 3, 3]
    assert sorted(found) == [
        ("B", 1, "A"),
        ("C", 1, "A"),
        ("D", 2, "B"),
        ("E", 2, "B"),
        ("F", 2, "C"),
        ("G", 3, "D"),
        ("H", 3, "F"),
    ]


def test_ancestors_are_nearest_first_with_depth_and_via_key(client: Client) -> None:
    keys = build(client, {"A": ["C"], "B": ["C"], "C": ["D"], "D": ["E"], "X": ["E"]})
    found = named(walk(client, keys["E"])["ancestors"], keys)
    assert [depth for _, depth, _ in found] == [1, 1, 2, 3, 3]
    assert sorted(found) == [
        ("A", 3, "C"),
        ("B", 3, "C"),
        ("C", 2, "D"),
        ("D", 1, "E"),
        ("X", 1, "E"),
    ]


def test_a_session_reachable_at_two_depths_appears_once_at_the_nearest(client: Client) -> None:
    keys = build(client, {"A": ["B", "C"], "B": ["C"], "C": ["D"]})
    found = named(walk(client, keys["A"])["descendants"], keys)
    assert sorted(found) == [("B", 1, "A"), ("C", 1, "A"), ("D", 2, "C")]
    assert sorted(named(walk(client, keys["D"])["ancestors"], keys)) == [
        ("A", 2, "C"),
        ("B", 2, "C"),
        ("C", 1, "D"),
    ]


def test_a_leaf_has_no_descendants_and_a_root_no_ancestors(client: Client) -> None:
    keys = build(client, {"A": ["B"]})
    assert walk(client, keys["B"])["descendants"] == []
    assert walk(client, keys["A"])["ancestors"] == []
    lone = client.create()["key"]
    assert walk(client, lone) == {"descendants": [], "ancestors": []}


def test_max_depth_limits_the_walk(client: Client) -> None:
    keys = build(client, {"A": ["B"], "B": ["C"], "C": ["D"], "D": ["E"], "E": ["F"]})
    assert named(walk(client, keys["A"], 1)["descendants"], keys) == [("B", 1, "A")]
    assert named(walk(client, keys["A"], 3)["descendants"], keys) == [
        ("B", 1, "A"),
        ("C", 2, "B"),
        ("D", 3, "C"),
    ]
    assert named(walk(client, keys["F"], 2)["ancestors"], keys) == [("E", 1, "F"), ("D", 2, "E")]


def test_max_depth_defaults_to_8_and_reaches_32(client: Client) -> None:
    chain = [client.create()["key"]]
    for _ in range(34):
        chain.append(client.create(associateSessionKeys=[chain[-1]])["key"])
    top, bottom = chain[-1], chain[0]
    defaults = client.data(WALK_DEFAULT, {"key": top})["session"]
    assert [n["session"]["key"] for n in defaults["descendants"]] == chain[-2:-10:-1]
    assert [n["depth"] for n in defaults["descendants"]] == list(range(1, 9))
    assert len(client.data(WALK_DEFAULT, {"key": bottom})["session"]["ancestors"]) == 8
    deepest = walk(client, top, 32)["descendants"]
    assert [n["session"]["key"] for n in deepest] == chain[-2:-34:-1]
    assert [n["viaKey"] for n in deepest] == chain[-1:-33:-1]
    assert [n["depth"] for n in deepest] == list(range(1, 33))
    assert [n["session"]["key"] for n in walk(client, bottom, 32)["ancestors"]] == chain[1:33]


def test_max_depth_outside_1_to_32_is_a_validation_error(client: Client) -> None:
    key = build(client, {"A": ["B"]})["A"]
    for field in ("descendants", "ancestors"):
        for max_depth in (0, 33, -1, 1000):
            query = (
                "query Q($key: ID!, $d: Int!) { session(key: $key) { %s(maxDepth: $d) { depth } } }"
            )
            result = client.execute(query % field, {"key": key, "d": max_depth})
            assert result.get("errors"), (field, max_depth)
            codes = [error["extensions"]["code"] for error in result["errors"]]
            assert codes == ["VALIDATION"], (field, max_depth, result)


def test_hierarchies_cross_data_sources(client: Client) -> None:
    keys = build(client, {"A": ["B"], "B": ["C"]}, A="car-1", B="rig:2/bench", C="sim_3")
    client.end(keys["B"])
    down = walk(client, keys["A"])["descendants"]
    assert named(down, keys) == [("B", 1, "A"), ("C", 2, "B")]
    assert [n["session"]["dataSource"] for n in down] == ["rig:2/bench", "sim_3"]
    assert down[0]["session"]["status"] == "ENDED"
    up = walk(client, keys["C"])["ancestors"]
    assert named(up, keys) == [("B", 1, "C"), ("A", 2, "B")]
    assert [n["session"]["dataSource"] for n in up] == ["rig:2/bench", "car-1"]


def test_a_removed_link_is_no_longer_walked(client: Client) -> None:
    keys = build(client, {"A": ["B", "C"], "B": ["D"]})
    result = client.mutate(
        "removeAssociateSession",
        "AssociateSessionInput",
        sessionKey=keys["A"],
        associateSessionKey=keys["B"],
    )
    assert result["__typename"] == "SessionUpdated", result
    assert named(walk(client, keys["A"])["descendants"], keys) == [("C", 1, "A")]
    assert named(walk(client, keys["D"])["ancestors"], keys) == [("B", 1, "D")]


def test_walks_of_many_sessions_in_one_query_are_each_their_own(client: Client) -> None:
    keys = build(client, {"A": ["B", "C"], "B": ["D"], "C": ["D"], "X": ["C"]})
    query = """
    {
      currentSessions {
        key
        descendants { depth viaKey session { key } }
        ancestors { depth viaKey session { key } }
        shallow: descendants(maxDepth: 1) { session { key } }
      }
    }"""
    names = {key: name for name, key in keys.items()}

    def short(nodes: list[dict[str, Any]]) -> list[tuple[str, int]]:
        return sorted((names[n["session"]["key"]], n["depth"]) for n in nodes)

    found = {names[s["key"]]: s for s in client.data(query)["currentSessions"]}
    assert short(found["A"]["descendants"]) == [("B", 1), ("C", 1), ("D", 2)]
    assert short(found["X"]["descendants"]) == [("C", 1), ("D", 2)]
    assert short(found["B"]["descendants"]) == [("D", 1)]
    assert short(found["D"]["descendants"]) == []
    assert short(found["D"]["ancestors"]) == [("A", 2), ("B", 1), ("C", 1), ("X", 2)]
    assert short(found["C"]["ancestors"]) == [("A", 1), ("X", 1)]
    assert short(found["A"]["ancestors"]) == []
    assert sorted(names[n["session"]["key"]] for n in found["A"]["shallow"]) == ["B", "C"]
