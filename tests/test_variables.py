"""Variables coerced by the functions built per operation (api/variables.py) are exactly what
graphql-core's get_variable_values gives, on generated values of every input type of the
schema: valid ones, and ones wrong at any depth (which are left to graphql-core)."""

import os
from datetime import UTC, datetime
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLScalarType,
    parse,
)
from graphql.execution.values import VariableValues, get_variable_values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.schema import build_schema
from api.variables import Variables

EXAMPLES = int(os.environ.get("SESSION_SERVICE_TEST_DIFFERENTIAL_EXAMPLES", "120"))
SCHEMA = build_schema()._schema
# Every input type of the schema as a variable, nullable and not, alone and in lists.
INPUTS = sorted(
    name
    for name, type_ in SCHEMA.type_map.items()
    if not name.startswith("__")
    and isinstance(type_, GraphQLInputObjectType | GraphQLScalarType | GraphQLEnumType)
)
# One operation per variable type: a variable that does not coerce sends the whole operation
# to graphql-core, so each is checked on its own.
CASES = [
    parse(f"query Q($v: {wrapped}) {{ __typename }}").definitions[0]
    for name in INPUTS
    for wrapped in (name, f"{name}!", f"[{name}!]", f"[{name}]!")
]
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


def _scalar(type_: GraphQLScalarType) -> st.SearchStrategy[Any]:
    valid = {
        "ID": st.text(max_size=12) | st.integers(),
        "String": st.text(max_size=12),
        "Int": st.integers(-(2**31), 2**31 - 1),
        "Float": st.floats(allow_nan=False, allow_infinity=False),
        "Boolean": st.booleans(),
        "DateTime": st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
    }
    return valid.get(type_.name, st.text(max_size=12))


@st.composite
def _value(draw: st.DrawFn, type_: GraphQLInputType, depth: int = 0) -> Any:
    """Mostly a value of the type, sometimes a wrong one at this depth."""
    if draw(st.integers(0, 9)) == 0:
        return draw(ANY_JSON)
    if isinstance(type_, GraphQLNonNull):
        return draw(_value(type_.of_type, depth))
    if draw(st.integers(0, 7)) == 0:
        return None
    if isinstance(type_, GraphQLList):
        if depth > 3:
            return []
        if draw(st.booleans()):
            return draw(_value(type_.of_type, depth + 1))  # one value for a list of one
        return draw(st.lists(_value(type_.of_type, depth + 1), max_size=3))
    if isinstance(type_, GraphQLEnumType):
        return draw(st.sampled_from(list(type_.values)))
    if isinstance(type_, GraphQLScalarType):
        return draw(_scalar(type_))
    assert isinstance(type_, GraphQLInputObjectType)
    if depth > 3:
        return {}
    names = draw(st.lists(st.sampled_from(list(type_.fields)), unique=True))
    value = {name: draw(_value(type_.fields[name].type, depth + 1)) for name in names}
    if draw(st.integers(0, 9)) == 0:
        value["notAField"] = 1
    return value


def test_coerced_variables_are_graphql_cores_own() -> None:
    fast = [Variables(SCHEMA, case.variable_definitions) for case in CASES]  # type: ignore[attr-defined]
    answered = 0

    @settings(
        max_examples=EXAMPLES * 10,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.data())
    def check(data: st.DataObject) -> None:
        nonlocal answered
        index = data.draw(st.integers(0, len(CASES) - 1))
        definitions = CASES[index].variable_definitions  # type: ignore[attr-defined]
        inputs = (
            {}
            if data.draw(st.integers(0, 9)) == 0
            else {"v": data.draw(_value(_type(definitions[0])))}
        )
        ours = fast[index].coerce(inputs)
        theirs = get_variable_values(SCHEMA, definitions, inputs)
        if ours is None:
            return  # left to graphql-core
        answered += 1
        assert isinstance(theirs, VariableValues), (inputs, theirs)
        assert ours.coerced == theirs.coerced
        assert _comparable(ours.sources) == _comparable(theirs.sources)

    check()
    assert answered > EXAMPLES * 3, "too few generated values were coerced to compare"


def test_a_variable_that_does_not_coerce_is_left_to_graphql_core() -> None:
    (case,) = parse("query Q($input: CreateSessionInput!) { __typename }").definitions
    variables = Variables(SCHEMA, case.variable_definitions)  # type: ignore[attr-defined]
    assert variables.coerce({"input": {"dataSource": "car-1", "details": [{"name": 1}]}}) is None
    assert variables.coerce({}) is None
    details = [{"name": "a", "value": "1"}]
    coerced = variables.coerce({"input": {"dataSource": "car-1", "details": details}})
    assert coerced is not None
    assert coerced.coerced["input"]["details"] == details


def _comparable(sources: dict[str, Any]) -> dict[str, Any]:
    """Sources with each signature's type by name: graphql-core makes new list and non-null
    wrappers for every request, which compare by identity."""
    return {
        name: (source.signature._replace(type=str(source.signature.type)), source.value)
        for name, source in sources.items()
    }


def _type(definition: Any) -> GraphQLInputType:
    from graphql import type_from_ast

    return type_from_ast(SCHEMA, definition.type)  # type: ignore[return-value]
