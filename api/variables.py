"""A request's variables coerced by functions built once per operation.

graphql-core's `get_variable_values` works the types out on every request: each variable's
signature from the document's type reference, a walk over the whole value to bound its depth,
and a generic `coerce_input_value` that asks what kind each type is at every step. For a
createSession input with three details that was a twentieth of the mutation's CPU. Here the
signatures are read once per operation, and each type becomes a closure that coerces values of
it exactly as `coerce_input_value` does. Anything else (a value that does not coerce, a missing
variable, a default to apply) is left to graphql-core, so every error and default is its own:
tests/test_variables.py compares both on generated values.
"""

from collections.abc import Callable, Collection
from typing import Any

from graphql import (
    GraphQLError,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLSchema,
    Undefined,
    VariableDefinitionNode,
    is_input_object_type,
    is_list_type,
    is_non_null_type,
    is_required_input_field,
)
from graphql.execution.get_variable_signature import (
    GraphQLVariableSignature,
    get_variable_signature,
)
from graphql.execution.values import VariableValues, VariableValueSource
from graphql.pyutils import is_iterable
from graphql.utilities.coerce_input_value import coerce_default_value

Coerce = Callable[[Any], Any]


class Variables:
    """The coercion of one operation's variables."""

    def __init__(
        self, schema: GraphQLSchema, definitions: Collection[VariableDefinitionNode]
    ) -> None:
        self.steps: list[tuple[str, GraphQLVariableSignature, Coerce]] | None = []
        coercers: dict[str, Coerce] = {}
        for definition in definitions:
            signature = get_variable_signature(schema, definition)
            if isinstance(signature, GraphQLError) or definition.default_value is not None:
                self.steps = None  # graphql-core reports it, or applies the default
                return
            self.steps.append((signature.name, signature, _coercer(signature.type, coercers)))

    def coerce(self, inputs: dict[str, Any]) -> VariableValues | None:
        """The variables as `get_variable_values` gives them, or None to ask it."""
        if self.steps is None:
            return None
        sources: dict[str, VariableValueSource] = {}
        coerced: dict[str, Any] = {}
        try:
            for name, signature, coerce in self.steps:
                value = inputs.get(name, Undefined)
                if value is Undefined:
                    if is_non_null_type(signature.type):
                        return None
                    sources[name] = VariableValueSource(signature)
                    continue
                sources[name] = VariableValueSource(signature, value)
                result = coerce(value)
                if result is Undefined:
                    return None
                coerced[name] = result
        except RecursionError:
            return None
        return VariableValues(sources, coerced)


def _coercer(type_: GraphQLInputType, made: dict[str, Coerce]) -> Coerce:
    """`coerce_input_value(value, type_)` as a function of the value alone."""
    if is_non_null_type(type_):
        inner = _coercer(type_.of_type, made)  # type: ignore[attr-defined]

        def non_null(value: Any) -> Any:
            return Undefined if value is None or value is Undefined else inner(value)

        return non_null
    if is_list_type(type_):
        item = _coercer(type_.of_type, made)  # type: ignore[attr-defined]

        def listed(value: Any) -> Any:
            if value is None or value is Undefined:
                return None
            if not is_iterable(value):
                one = item(value)
                return Undefined if one is Undefined else [one]
            items = []
            for each in value:
                one = item(each)
                if one is Undefined:
                    return Undefined
                items.append(one)
            return items

        return listed
    if is_input_object_type(type_):
        return _object(type_, made)  # type: ignore[arg-type]
    leaf = type_.coerce_input_value  # type: ignore[union-attr]

    def scalar(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        try:
            return leaf(value)
        except Exception:
            return Undefined

    return scalar


def _object(type_: GraphQLInputObjectType, made: dict[str, Coerce]) -> Coerce:
    """An input object's coercer, made once per type (a type may contain itself)."""
    if (found := made.get(type_.name)) is not None:
        return found
    fields: list[tuple[str, str, Any, bool, Coerce]] = []

    def input_object(value: Any) -> Any:
        if value is None or value is Undefined:
            return None
        if not isinstance(value, dict):
            return Undefined
        defined = 0
        for name, given in value.items():
            if given is Undefined:
                continue
            defined += 1
            if name not in type_.fields:
                return Undefined
        coerced: dict[str, Any] = {}
        for name, out_name, field, required, coerce in fields:
            given = value.get(name, Undefined)
            if given is Undefined:
                if required:
                    return Undefined
                default = coerce_default_value(field)
                if default is not Undefined:
                    coerced[out_name] = default
                continue
            result = coerce(given)
            if result is Undefined:
                return Undefined
            coerced[out_name] = result
        if type_.is_one_of:
            keys = list(coerced)
            if defined != 1 or len(keys) != 1 or coerced[keys[0]] is None:
                return Undefined
        return type_.out_type(coerced)

    made[type_.name] = input_object
    for name, field in type_.fields.items():
        coerce = _coercer(field.type, made)
        fields.append((name, field.out_name or name, field, is_required_input_field(field), coerce))
    return input_object
