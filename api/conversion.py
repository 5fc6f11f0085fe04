"""Arguments converted as Strawberry converts them, with the decisions taken once per type.

Strawberry's `convert_arguments` turns graphql-core's coerced values into the resolvers' Python
values (input dataclasses, lists) by inspecting each type on every call: for a
`createSession(input:)` it cost an eighth of the request's CPU. `arguments_converter` walks a
field's argument types once and returns a function doing only the conversion. Types it does not
know (Maybe, GlobalID, an input type building its own value) keep Strawberry's own conversion.
tests/test_conversion.py compares both on every input type of the schema.
"""

from collections.abc import Callable, Mapping
from dataclasses import MISSING
from typing import Any, cast

import strawberry
from strawberry.relay.types import GlobalID
from strawberry.types.arguments import StrawberryArgument, _is_leaf_type, convert_argument
from strawberry.types.base import (
    StrawberryList,
    StrawberryMaybe,
    StrawberryOptional,
    StrawberryType,
    get_object_definition,
    has_object_definition,
)
from strawberry.types.enum import has_enum_definition
from strawberry.types.lazy_type import LazyType
from strawberry.types.unset import UNSET

Converter = Callable[[Any], Any]


def _same(value: Any) -> Any:
    return value


class Converters:
    """Converters for the types of one schema."""

    def __init__(self, schema: strawberry.Schema) -> None:
        self.registry = schema.schema_converter.scalar_registry
        self.config = schema.config

    def arguments(
        self, arguments: list[StrawberryArgument]
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        """graphql-core's coerced argument values as the resolver takes them."""
        named = self.config.name_converter.from_argument
        converters = [
            (named(argument), str(argument.python_name), self.of(argument.type))
            for argument in arguments
        ]

        def convert(values: dict[str, Any]) -> dict[str, Any]:
            return {python: of(values[name]) for name, python, of in converters if name in values}

        return convert

    def of(self, type_: StrawberryType | type) -> Converter:
        if isinstance(type_, StrawberryMaybe):
            return self._strawberry(type_)
        if isinstance(type_, StrawberryOptional):  # None passes through every converter
            return self.of(type_.of_type)
        if isinstance(type_, StrawberryList):
            item = self.of(type_.of_type)
            if item is _same:  # still copied: graphql-core shares default values
                return lambda value: value if value is None or value is UNSET else list(value)
            return lambda value: (
                value if value is None or value is UNSET else [item(x) for x in value]
            )
        if type_ is GlobalID:
            return self._strawberry(type_)
        if _is_leaf_type(type_, self.registry) or has_enum_definition(type_):
            return _same  # graphql-core's scalars and enums already gave the Python value
        if isinstance(type_, LazyType):
            return self.of(type_.resolve_type())
        if has_object_definition(type_):
            return self._input(cast(type, type_))
        return self._strawberry(type_)

    def _input(self, type_: type) -> Converter:
        definition = get_object_definition(type_, strict=True)
        if definition.from_input is not None:
            return self._strawberry(type_)
        # Fields without a default are None unless given (graphql-core has checked that
        # required ones are).
        unset = {
            field.python_name: None
            for field in definition.fields
            if definition.is_input
            and field.default_value is MISSING
            and field.default_factory is MISSING
        }
        named = self.config.name_converter.from_field
        fields = [
            (
                named(field),
                field.python_name,
                self.of(field.resolve_type(type_definition=definition)),
            )
            for field in definition.fields
        ]

        def convert(value: Any) -> Any:
            if value is None or value is UNSET:
                return value
            given = cast(Mapping[str, Any], value)
            kwargs = dict(unset)
            for name, python, of in fields:
                if name in given:
                    kwargs[python] = of(given[name])
            return type_(**kwargs)

        return convert

    def _strawberry(self, type_: Any) -> Converter:
        def convert(value: Any) -> Any:
            return convert_argument(value, type_, self.registry, self.config)

        return convert
