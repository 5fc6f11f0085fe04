"""Relay's global object identification: the Node interface and its global ids.

A global id is base64 of "Session:<key>", as graphql-relay's `toGlobalId` writes it, so
Relay refetches a session by `node(id:)` and Apollo's and urql's default caches normalise
sessions by `__typename` and `id` with no configuration.
"""

from base64 import b64decode, b64encode

import strawberry

from api.errors import invalid_argument

ID_DESCRIPTION = "Global, opaque id: refetch with node(id:); caches normalise by it."


@strawberry.interface(description="An object with a global id (Relay's Node).")
class Node:
    @strawberry.field(description=ID_DESCRIPTION)
    def id(self) -> strawberry.ID:
        raise NotImplementedError  # each implementation has its own


def global_id(type_name: str, key: str) -> strawberry.ID:
    return strawberry.ID(b64encode(f"{type_name}:{key}".encode()).decode("ascii"))


def parse_global_id(value: str, path: str) -> tuple[str, str]:
    """(type name, key) of a global id, or a VALIDATION error naming `path`."""
    try:
        decoded = b64decode(value, validate=True).decode()
    except ValueError:  # not base64, not ASCII, or not UTF-8
        decoded = ""
    type_name, separator, key = decoded.partition(":")
    if not separator:
        raise invalid_argument(path, "is not a global id (from a node's id field)")
    return type_name, key
