"""api/conversion.py converts every argument of the schema as Strawberry's convert_arguments
does: the same Python values, for inputs given in full, in part, and with nulls."""

import pytest
from graphql import FieldNode, OperationDefinitionNode, parse
from graphql.execution.values import get_argument_values
from strawberry.types.arguments import convert_arguments

from api import Settings
from api.conversion import Converters
from api.schema import build_schema

SCHEMA = build_schema(Settings())
ARGUMENTS = [
    ("Mutation", 'createSession(input: {dataSource: "a"})'),
    (
        "Mutation",
        'createSession(input: {dataSource: "a", type: "Run", version: 2, utcOffsetSeconds: -60, '
        'identifier: "x", details: [{name: "n", value: "v"}, {name: "m", value: "w"}], '
        'associateSessionKeys: ["k1", "k2"], streams: ["s"], '
        'createdAt: "2026-01-02T03:04:05+00:00", idempotencyKey: "i"})',
    ),
    ("Mutation", 'createSession(input: {dataSource: "a", createdAt: null, idempotencyKey: null})'),
    ("Mutation", 'updateSessionDetails(input: {sessionKey: "k"})'),
    (
        "Mutation",
        'updateSessionDetails(input: {sessionKey: "k", details: [{name: "n", value: "v"}], '
        'remove: ["a"], expectedRevision: 3})',
    ),
    ("Mutation", 'updateSessionIdentifier(input: {sessionKey: "k", identifier: "i"})'),
    ("Mutation", 'addAssociateSession(input: {sessionKey: "k", associateSessionKey: "c"})'),
    ("Mutation", 'removeAssociateSession(input: {sessionKey: "k", associateSessionKey: "c"})'),
    ("Mutation", 'addSessionStreams(input: {sessionKey: "k", streams: ["a", "b"]})'),
    ("Mutation", 'endSession(input: {sessionKey: "k"})'),
    (
        "Mutation",
        'endSession(input: {sessionKey: "k", dataSource: "d", endedAt: "2026-01-02T03:04:05Z"})',
    ),
    ("Query", 'session(key: "k")'),
    ("Query", "currentSessions"),
    ("Query", 'currentSessions(dataSource: "d")'),
    ("Query", "sessions"),
    ("Query", "sessions(filter: null, first: 5)"),
    (
        "Query",
        'sessions(filter: {dataSource: "d", status: ENDED, type: "t", identifier: "i", '
        'details: [{name: "n", value: "v"}], createdAfter: "2026-01-01T00:00:00Z", '
        'createdBefore: "2027-01-01T00:00:00Z"}, first: 2, after: "c")',
    ),
    ("Query", "sessions(filter: {status: LIVE, details: null})"),
    ("Query", 'sessionSnapshot(dataSource: "d")'),
    ("Session", 'detail(name: "n")'),
    ("Session", "descendants"),
    ("Session", "ancestors(maxDepth: 3)"),
]


@pytest.mark.parametrize(("type_name", "field"), ARGUMENTS)
def test_arguments_are_converted_as_strawberry_converts_them(type_name: str, field: str) -> None:
    operation = parse(f"{{ {field} }}").definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    node = operation.selection_set.selections[0]
    assert isinstance(node, FieldNode)
    name = node.name.value
    definition = SCHEMA._schema.type_map[type_name].fields[name]  # type: ignore[attr-defined]
    values = get_argument_values(definition, node)
    strawberry_field = SCHEMA.get_field_for_type(name, type_name)
    assert strawberry_field is not None
    expected = convert_arguments(
        values,
        strawberry_field.arguments,
        scalar_registry=SCHEMA.schema_converter.scalar_registry,
        config=SCHEMA.config,
    )
    converted = Converters(SCHEMA).arguments(strawberry_field.arguments)(values)
    assert converted == expected
    assert [type(value) for value in converted.values()] == [
        type(value) for value in expected.values()
    ]
