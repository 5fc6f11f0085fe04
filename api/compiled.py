"""Compiled execution: a document planned once, then answered without graphql-core.

graphql-core completes every field of every object through its general machinery (an info
object, a resolver call, awaitable checks, a completion per value): some 5 µs a field, so a page
of 100 sessions with 8 fields spent most of its time there. A `Plan` is built once per document,
operation and value of the variables its @skip/@include directives read, from graphql-core's own
field collection (so fragments, aliases and directives mean exactly what they mean there). For
each selected field it holds where the values come from, for a whole batch of parents at once
(a record's column, or one loader read for the batch), and how they become JSON (the schema's
own scalar and enum serialisers). Running it fills the response level by level.

A query's plan answers only when there is no error. A field that fails, a non-null field
without a value, variables that do not coerce: the plan gives up (`Fallback`) and graphql-core
answers the whole operation, so every error, partial result and location is the standard
executor's own; a query has no side effects, so trying it twice changes nothing. A mutation
(one field per operation) runs its use case once; its failure is located as graphql-core
locates it (`Failed`), never retried. Documents the planner does not know (introspection,
several mutation fields, a field without a compiled source) always take the standard path.
tests/test_compiled.py runs generated documents both ways and compares the bytes."""

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from operator import attrgetter, itemgetter
from typing import Any

import strawberry
from graphql import (
    DirectiveNode,
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    GraphQLField,
    GraphQLID,
    GraphQLObjectType,
    GraphQLOutputType,
    GraphQLString,
    ListValueNode,
    Node,
    ObjectValueNode,
    OperationDefinitionNode,
    OperationType,
    ValueNode,
    VariableNode,
    is_abstract_type,
    is_leaf_type,
    is_list_type,
    is_non_null_type,
    is_object_type,
    located_error,
)
from graphql.execution.collect_fields import (
    FieldDetails,
    FragmentDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.values import VariableValues, get_argument_values, get_variable_values
from strawberry.utils.str_converters import to_camel_case

from api.context import Context
from api.conversion import Converters
from api.loaders import each
from api.metrics import EXECUTIONS
from api.mutations import MUTATIONS
from api.node import global_id
from api.queries import (
    read_current,
    read_data_sources,
    read_nodes,
    read_page,
    read_session,
    read_snapshot,
)
from api.types import RECORD_FIELDS, check_depth, is_complete, reached
from api.variables import Variables
from models import Direction, SessionRecord, TreeNode, encode_cursor
from models.queries import page_cursor

log = logging.getLogger(__name__)
COMPILED, STANDARD, FALLBACK = (
    EXECUTIONS.labels(path) for path in ("compiled", "standard", "fallback")
)


class Fallback(Exception):
    """The plan does not answer this request: the standard executor will."""


class Unplannable(Exception):
    """The document selects something the planner does not know."""


class Failed(Exception):
    """A mutation's use case raised: its error is the answer, as graphql-core would give it.
    Never a fallback, which would run the mutation twice."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True, slots=True)
class Call:
    """What a batched read is called with: the operation's context, the field's arguments as
    its resolver takes them, and the names its selection picks."""

    context: Context
    args: dict[str, Any]
    selects: frozenset[str]


Read = Callable[[list[Any], Call], Awaitable[list[Any]]]


@dataclass(frozen=True, slots=True)
class Get:
    """A value taken from each parent without a read."""

    value: Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Load:
    """The values of a whole batch of parents, read at once. `check` refuses arguments the read
    would refuse: arguments written into the document are checked when it is planned, so a
    document that always fails goes straight to graphql-core instead of reading first."""

    read: Read
    check: Callable[[dict[str, Any]], None] | None = None


# -- where every field's values come from, by type: the records the reads return -----------


def _root(read: Callable[[Call], Awaitable[Any]]) -> Load:
    """A Query field: its parent is the root value, alone in its batch."""

    async def load(parents: list[Any], call: Call) -> list[Any]:
        return [await read(call)]

    return Load(load)


def _mutation(change: Callable[[Context, Any], Awaitable[Any]]) -> Load:
    """A Mutation field: its use case, run once whatever happens next."""

    async def load(parents: list[Any], call: Call) -> list[Any]:
        try:
            return [await change(call.context, call.args["input"])]
        except Exception as error:
            raise Failed(error) from error

    return Load(load)


async def _details(parents: list[SessionRecord], call: Call) -> list[Any]:
    loaders = call.context.loaders
    read = loaders.details_read  # with their session: no loader needed
    if all(parent.key in read for parent in parents):
        return [read[parent.key] for parent in parents]
    return await each(loaders.details, [parent.key for parent in parents])


async def _detail(parents: list[SessionRecord], call: Call) -> list[Any]:
    name = call.args["name"]
    return [dict(found).get(name) for found in await _details(parents, call)]


async def _streams(parents: list[SessionRecord], call: Call) -> list[Any]:
    return await each(call.context.loaders.streams, [parent.key for parent in parents])


async def _linked(which: str, parents: list[SessionRecord], call: Call) -> list[Any]:
    """Each parent's children or parents the caller may read, in order, from one batch."""
    loaders = call.context.loaders
    keys = await each(getattr(loaders, which), [parent.key for parent in parents])
    rows = iter(await loaders.sessions([key for linked in keys for key in linked]))
    return [
        [row for _, row in zip(linked, rows, strict=False) if row is not None] for linked in keys
    ]


async def _associate_keys(parents: list[SessionRecord], call: Call) -> list[Any]:
    return [[row.key for row in rows] for rows in await _linked("children", parents, call)]


async def _walk(direction: Direction, parents: list[SessionRecord], call: Call) -> list[Any]:
    """Each parent's walk as (node, node) pairs: the caller's scope is checked on the data
    source each node comes with, and the session itself is read only when asked for
    (`_reached_sessions`)."""
    depth = call.args["max_depth"]
    check_depth(depth)
    loaders = call.context.loaders
    trees = await each(loaders.walk, [(parent.key, direction, depth) for parent in parents])
    may_read = loaders.reader.may_read
    found = []
    for parent, nodes in zip(parents, trees, strict=True):
        readable = {node.key: node for node in nodes if may_read(node.data_source)}
        found.append(reached(parent.key, nodes, readable))
    return found


def _walk_depth(args: dict[str, Any]) -> None:
    check_depth(args["max_depth"])


# What a walk's node knows of its session without reading it.
NODE_FIELDS = frozenset({"id", "key", "dataSource", "__typename"})


async def _reached_sessions(parents: list[tuple[TreeNode, TreeNode]], call: Call) -> list[Any]:
    """The sessions of a walk's nodes: the nodes themselves when only their keys and data
    sources are selected (a 1,000-session walk then reads nothing more), else the records."""
    if call.selects <= NODE_FIELDS:
        return [node for node, _ in parents]
    rows = await call.context.loaders.sessions([node.key for node, _ in parents])
    if None in rows:  # deleted since the walk: graphql-core's answer hides it
        raise Fallback("a walked session is gone")
    return rows


async def _node(call: Call) -> SessionRecord | None:
    [found] = await read_nodes(call.context, [call.args["id"]], "id")
    return found


async def _count(parents: list[Any], call: Call) -> list[Any]:
    return [await call.context.loaders.reader.count(parent.where) for parent in parents]


SOURCES: dict[str, dict[str, Get | Load]] = {
    "Query": {
        "session": _root(
            lambda call: read_session(call.context, call.args["key"], "details" in call.selects)
        ),
        "currentSessions": _root(
            lambda call: read_current(call.context, call.args.get("data_source"))
        ),
        "sessions": _root(
            lambda call: read_page(
                call.context, call.args.get("filter"), call.args["first"], call.args.get("after")
            )
        ),
        "node": _root(_node),
        "nodes": _root(lambda call: read_nodes(call.context, call.args["ids"], "ids")),
        "dataSources": _root(lambda call: read_data_sources(call.context)),
        "sessionSnapshot": _root(
            lambda call: read_snapshot(call.context, call.args.get("data_source"))
        ),
    },
    "Mutation": {name: _mutation(change) for name, change in MUTATIONS.items()},
    "Session": {
        **{to_camel_case(name): Get(attrgetter(name)) for name in RECORD_FIELDS},
        "id": Get(lambda row: global_id("Session", row.key)),
        "isComplete": Get(is_complete),
        "streams": Load(_streams),
        "details": Load(_details),
        "detail": Load(_detail),
        "associateSessionKeys": Load(_associate_keys),
        "associates": Load(partial(_linked, "children")),
        "parents": Load(partial(_linked, "parents")),
        "descendants": Load(partial(_walk, Direction.DOWN), _walk_depth),
        "ancestors": Load(partial(_walk, Direction.UP), _walk_depth),
    },
    # (name, value)
    "SessionDetail": {"name": Get(itemgetter(0)), "value": Get(itemgetter(1))},
    # (TreeNode, TreeNode)
    "SessionTreeNode": {
        "depth": Get(lambda found: found[0].depth),
        "viaKey": Get(lambda found: found[0].via_key),
        "session": Load(_reached_sessions),
    },
    # api.queries.FilteredPage
    "SessionConnection": {
        "edges": Get(lambda found: found.page.rows),
        "pageInfo": Get(attrgetter("page")),
        "totalCount": Load(_count),
    },
    # SessionRecord
    "SessionEdge": {"node": Get(lambda row: row), "cursor": Get(page_cursor)},
    # models.queries.Page
    "PageInfo": {
        "hasNextPage": Get(attrgetter("has_next")),
        "endCursor": Get(attrgetter("end_cursor")),
    },
    # (name, live, total)
    "DataSource": {
        "name": Get(itemgetter(0)),
        "liveSessions": Get(itemgetter(1)),
        "totalSessions": Get(itemgetter(2)),
    },
    # (cursor, [SessionRecord])
    "SessionSnapshot": {
        "cursor": Get(lambda found: encode_cursor(found[0])),
        "sessions": Get(itemgetter(1)),
    },
}


# -- plans ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Shape:
    """How a field's values become JSON: `serialize` for a leaf, `selection` for an object,
    `item` for a list; `non_null` when null is not an answer the plan can give."""

    non_null: bool
    serialize: Callable[[Any], Any] | None = None
    selection: "Selection | None" = None
    item: "Shape | None" = None
    # A union or interface: the selection for each object type it may be, by name.
    variants: "dict[str, Selection] | None" = None


@dataclass(frozen=True, slots=True)
class Arguments:
    """A field's arguments as its resolver takes them: converted once when they name no
    variable, else on each run from the request's variables."""

    definition: GraphQLField
    node: FieldNode
    convert: Callable[[dict[str, Any]], dict[str, Any]]
    fixed: dict[str, Any] | None = None
    # When the field is given every argument it has, each as a bare variable: (the name the
    # resolver takes, the variable's name). A variable's value is then the argument's, as
    # get_argument_values takes it, unless it is null or missing (defaults, errors).
    passed: tuple[tuple[str, str], ...] | None = None

    def __call__(self, variables: VariableValues) -> dict[str, Any]:
        if self.fixed is not None:
            return self.fixed
        if self.passed is not None:
            values, coerced = {}, variables.coerced
            for name, variable in self.passed:
                if (value := coerced.get(variable)) is None:
                    break
                values[name] = value
            else:
                return self.convert(values)
        return self.convert(get_argument_values(self.definition, self.node, variables))

    @staticmethod
    def bare_variables(
        definition: GraphQLField, node: FieldNode
    ) -> tuple[tuple[str, str], ...] | None:
        given = {argument.name.value: argument.value for argument in node.arguments or ()}
        if set(given) != set(definition.args) or not all(
            isinstance(value, VariableNode) for value in given.values()
        ):
            return None
        return tuple(
            (argument.out_name or name, given[name].name.value)  # type: ignore[attr-defined]
            for name, argument in definition.args.items()
        )


@dataclass(frozen=True, slots=True)
class Selected:
    key: str
    source: Get | Load
    shape: Shape
    arguments: Arguments | None = None
    selects: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Selection:
    """The fields selected on one object type, in response order. Each answer is made in one
    pass over its parent by `rows`, a function written for this selection (`_rows`): the
    fields taken from the parent, with a place kept for each read in batches afterwards
    (`batched`), so the keys stay in response order."""

    rows: Callable[[list[Any]], list[dict[str, Any]]]
    batched: tuple[Selected, ...]

    @classmethod
    def of(cls, fields: Iterable[Selected]) -> "Selection":
        row: list[tuple[str, Get | None, Shape | None]] = []
        batched = []
        for selected in fields:
            shape = selected.shape
            if isinstance(selected.source, Get) and shape and shape.serialize is not None:
                row.append((selected.key, selected.source, shape))
            else:
                row.append((selected.key, None, None))
                batched.append(selected)
        return cls(_rows(row), tuple(batched))

    async def fill(self, parents: list[Any], run: "Run") -> list[dict[str, Any]]:
        answers = self.rows(parents)
        for selected in self.batched:
            source, shape = selected.source, selected.shape
            assert shape is not None
            if isinstance(source, Get):
                values = list(map(source.value, parents))
            else:
                assert source is not None
                args = selected.arguments(run.variables) if selected.arguments else {}
                values = await source.read(parents, Call(run.context, args, selected.selects))
            key = selected.key
            for answer, value in zip(answers, await complete(shape, values, run), strict=True):
                answer[key] = value
        return answers


def _same(value: Any) -> Any:
    return value


def _rows(
    row: list[tuple[str, Get | None, "Shape | None"]],
) -> Callable[[list[Any]], list[dict[str, Any]]]:
    """The function that makes a selection's answers from their parents: each field's value
    taken and serialised by an expression of its own, instead of a loop over the fields that
    unpacked and tested each one for each parent (a third of a small query's plan). Text
    passes on as it is when it is a str, as graphql-core's String and ID serialisers do after
    checking its type; a missing non-null value gives up (`Fallback`)."""
    names: dict[str, Any] = {"Fallback": Fallback}
    checks, items = [], []
    for index, (key, source, shape) in enumerate(row):
        if source is None or shape is None:
            items.append(f"{key!r}: None")  # its place, filled by a batched read
            continue
        names[f"get{index}"] = source.value
        value = f"v{index}"
        checks.append(f"        {value} = get{index}(parent)")
        if isinstance(shape.serialize, _Text):
            names[f"serialize{index}"] = shape.serialize.serialize
            done = f"({value} if {value}.__class__ is str else serialize{index}({value}))"
        else:
            names[f"serialize{index}"] = shape.serialize
            done = f"serialize{index}({value})"
        if shape.non_null:
            checks.append(f"        if {value} is None:\n            raise Fallback({key!r})")
            items.append(f"{key!r}: {done}")
        else:
            items.append(f"{key!r}: None if {value} is None else {done}")
    source_text = "\n".join(
        [
            "def rows(parents):",
            "    answers = []",
            "    for parent in parents:",
            *checks,
            "        answers.append({" + ", ".join(items) + "})",
            "    return answers",
        ]
    )
    exec(compile(source_text, "<compiled selection>", "exec"), names)
    return names["rows"]  # type: ignore[no-any-return]


def _constant(value: Any) -> Callable[[Any], Any]:
    return lambda _: value


class _Text:
    """A text serialiser that passes a str on as it is (what graphql-core's String and ID
    serialisers do with one, after checking its type)."""

    __slots__ = ("serialize",)

    def __init__(self, serialize: Callable[[Any], Any]) -> None:
        self.serialize = serialize

    def __call__(self, value: Any) -> Any:
        return value if value.__class__ is str else self.serialize(value)


def _serializer(type_: Any) -> Callable[[Any], Any]:
    """The leaf type's serialiser."""
    if type_ is GraphQLString or type_ is GraphQLID:
        return _Text(type_.serialize)
    return type_.serialize  # type: ignore[no-any-return]


async def complete(shape: Shape, values: list[Any], run: "Run") -> list[Any]:
    """The JSON of a batch of values of one shape."""
    if shape.item is not None:
        items = [item for value in values if value is not None for item in value]
        done = iter(await complete(shape.item, items, run))
        answers: list[Any] = [
            None if value is None else [next(done) for _ in value] for value in values
        ]
    elif shape.selection is not None:
        present = [value for value in values if value is not None]
        filled = iter(await shape.selection.fill(present, run))
        answers = [None if value is None else next(filled) for value in values]
    elif shape.variants is not None:
        # Each type's values filled together, so that a list of nodes reads in batches.
        by_type: dict[str, list[int]] = {}
        for index, value in enumerate(values):
            if value is not None:
                by_type.setdefault(_type_name(value), []).append(index)
        answers = [None] * len(values)
        for type_name, indexes in by_type.items():
            selection = shape.variants.get(type_name)
            if selection is None:
                raise Fallback("a value of no type the plan knows")
            members = await selection.fill([values[index] for index in indexes], run)
            for index, answer in zip(indexes, members, strict=True):
                answers[index] = answer
    else:
        serialize = shape.serialize
        assert serialize is not None
        answers = [None if value is None else serialize(value) for value in values]
    if shape.non_null and None in answers:
        raise Fallback("null in a non-null position")
    return answers


@dataclass(frozen=True, slots=True)
class Run:
    context: Context
    variables: VariableValues


@dataclass(frozen=True, slots=True)
class Plan:
    root: Selection
    # A mutation's one field: its response key and nodes, where its failure is located.
    failing: tuple[str, list[FieldNode]] | None = None

    async def run(self, context: Context, variables: VariableValues) -> ExecutionResult:
        try:
            (data,) = await self.root.fill([None], Run(context, variables))
        except Failed as failed:
            assert self.failing is not None
            key, nodes = self.failing
            return ExecutionResult(data=None, errors=[located_error(failed.error, nodes, [key])])
        except Exception as error:
            if self.failing is None:
                raise  # a query: graphql-core answers it
            # The use case ran: no second try. Its answer is made of what it wrote, so a plan
            # that cannot complete it is a bug; it is reported as one (INTERNAL).
            log.error("compiled mutation %s could not complete its answer", self.failing[0])
            return ExecutionResult(
                data=None, errors=[located_error(error, self.failing[1], [self.failing[0]])]
            )
        return ExecutionResult(data=data, errors=None)


class Planner:
    """Builds the plan of one operation of a document for one set of @skip/@include values."""

    def __init__(
        self,
        compiler: "Compiler",
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: VariableValues,
    ) -> None:
        self.strawberry = compiler.schema
        self.schema = compiler.schema._schema
        self.converters = compiler.converters
        self.operation = operation
        self.variables = variables
        self.fragments = {
            definition.name.value: FragmentDetails(definition)
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }

    def plan(self) -> Plan:
        mutation = self.operation.operation is OperationType.MUTATION
        root_type = self.schema.mutation_type if mutation else self.schema.query_type
        assert root_type is not None
        collected = collect_fields(
            self.schema, self.fragments, self.variables, root_type, self.operation
        )
        if collected.new_defer_usages:
            raise Unplannable("@defer")
        grouped = collected.grouped_field_set
        if mutation and len(grouped) != 1:  # several run one after the other: graphql-core's
            raise Unplannable("not exactly one mutation field")
        root = self.selection(root_type, grouped)
        if not mutation:
            return Plan(root)
        ((key, details),) = grouped.items()
        return Plan(root, failing=(key, [detail.node for detail in details]))

    def selection(
        self, parent: GraphQLObjectType, grouped: dict[str, list[FieldDetails]]
    ) -> Selection:
        return Selection.of(self.selected(parent, key, details) for key, details in grouped.items())

    def selected(
        self, parent: GraphQLObjectType, key: str, details: list[FieldDetails]
    ) -> Selected:
        node = details[0].node
        name = node.name.value
        if name == "__typename":
            return Selected(key, Get(_constant(parent.name)), Shape(True, _same))
        source = self.sources(parent.name).get(name)
        definition = parent.fields.get(name)
        if source is None or definition is None:
            raise Unplannable(f"{parent.name}.{name}")
        selects: frozenset[str] = frozenset()
        subfields: dict[str, list[FieldDetails]] = {}
        named = _named(definition.type)
        if is_abstract_type(named):
            shape = self.abstract(definition.type, named, details)
        else:
            if is_object_type(named):
                subfields = self.subfields(named, details)
                selects = frozenset(d[0].node.name.value for d in subfields.values())
            shape = self.shape(definition.type, subfields)
        arguments = None
        if definition.args:
            field = self.strawberry.get_field_for_type(name, parent.name)
            assert field is not None
            arguments = Arguments(
                definition,
                node,
                self.converters.arguments(field.arguments),
                passed=Arguments.bare_variables(definition, node),
            )
            if not any(_has_variable(argument.value) for argument in node.arguments or ()):
                fixed = arguments.convert(get_argument_values(definition, node))
                arguments = Arguments(definition, node, arguments.convert, fixed)
                if isinstance(source, Load) and source.check is not None:
                    try:
                        source.check(fixed)
                    except Exception as refused:
                        raise Unplannable(f"{parent.name}.{name}: {refused}") from refused
        return Selected(key, source, shape, arguments, selects)

    def subfields(
        self, type_: GraphQLObjectType, details: list[FieldDetails]
    ) -> dict[str, list[FieldDetails]]:
        collected = collect_subfields(
            self.schema, self.fragments, self.variables, self.operation, type_, details
        )
        if collected.new_defer_usages:
            raise Unplannable("@defer")
        return collected.grouped_field_set

    def abstract(self, type_: GraphQLOutputType, named: Any, details: list[FieldDetails]) -> Shape:
        """A union or interface field (a mutation's result, a node): each possible type's own
        selection, as graphql-core collects it for that runtime type."""
        non_null = is_non_null_type(type_)
        inner = type_.of_type if non_null else type_  # type: ignore[union-attr]
        if is_list_type(inner):
            return Shape(non_null, item=self.abstract(inner.of_type, named, details))
        variants = {
            possible.name: self.selection(possible, self.subfields(possible, details))
            for possible in self.schema.get_possible_types(named)
        }
        return Shape(non_null, variants=variants)

    def sources(self, type_name: str) -> dict[str, Get | Load]:
        """Where the values of a type's fields come from: SOURCES, or for a Strawberry type
        whose fields are all attributes (the mutations' result members), the attributes."""
        if type_name in SOURCES:
            return SOURCES[type_name]
        definition = self.strawberry.get_type_by_name(type_name)
        fields = getattr(definition, "fields", None)
        if fields is None or any(field.base_resolver for field in fields):
            return {}
        name = self.strawberry.config.name_converter.from_field
        return {name(field): Get(attrgetter(field.python_name)) for field in fields}

    def shape(self, type_: GraphQLOutputType, subfields: dict[str, list[FieldDetails]]) -> Shape:
        non_null = is_non_null_type(type_)
        inner = type_.of_type if non_null else type_  # type: ignore[union-attr]
        if is_list_type(inner):
            return Shape(non_null, item=self.shape(inner.of_type, subfields))
        if is_leaf_type(inner):
            return Shape(non_null, serialize=_serializer(inner))
        if is_object_type(inner):
            return Shape(non_null, selection=self.selection(inner, subfields))
        raise Unplannable(f"abstract type {inner}")  # planned by `abstract`


def _type_name(value: Any) -> str:
    """The GraphQL type of a value: a session's record, or a Strawberry object."""
    if isinstance(value, SessionRecord):
        return "Session"
    return str(type(value).__strawberry_definition__.name)


def _named(type_: Any) -> Any:
    while hasattr(type_, "of_type"):
        type_ = type_.of_type
    return type_


def _has_variable(value: ValueNode) -> bool:
    if isinstance(value, VariableNode):
        return True
    if isinstance(value, ListValueNode):
        return any(_has_variable(item) for item in value.values)
    if isinstance(value, ObjectValueNode):
        return any(_has_variable(item.value) for item in value.fields)
    return False


def _directive_variables(nodes: Iterable[Node]) -> tuple[str, ...]:
    """The variables that @skip and @include read anywhere in these definitions."""
    found: list[str] = []

    def visit(node: Any) -> None:
        if isinstance(node, DirectiveNode) and node.name.value in ("skip", "include"):
            found.extend(
                argument.value.name.value
                for argument in node.arguments or ()
                if isinstance(argument.value, VariableNode)
            )
        for key in getattr(node, "keys", ()):
            child = getattr(node, key, None)
            if isinstance(child, Node):
                visit(child)
            elif isinstance(child, tuple | list):
                for item in child:
                    if isinstance(item, Node):
                        visit(item)

    for node in nodes:
        visit(node)
    return tuple(dict.fromkeys(found))


@dataclass
class Compiled:
    """One operation of one document: its plans by the values of its @skip/@include
    variables, or none at all when the planner does not know what it selects."""

    directive_variables: tuple[str, ...]
    variables: Variables
    plannable: bool = True
    plans: dict[tuple[Any, ...], Plan] = field(default_factory=dict)

    MAX_PLANS = 16  # directive values are booleans: a few plans per operation at most


class Compiler:
    """Answers queries and mutations over HTTP from plans where it can. `Documents` keeps each
    document's `Compiled` operations beside its validation, so a plan lives as long as it."""

    def __init__(self, schema: strawberry.Schema) -> None:
        self.schema = schema
        self.converters = Converters(schema)

    async def answer(
        self,
        plans: dict[str | None, Compiled],
        document: DocumentNode,
        operation: OperationDefinitionNode,
        inputs: dict[str, Any] | None,
        context: Context,
    ) -> ExecutionResult | None:
        """The operation's result, or None for the standard executor to answer it."""
        name = operation.name.value if operation.name else None
        compiled = plans.get(name)
        if compiled is None:
            definitions = operation.variable_definitions or ()
            compiled = plans[name] = Compiled(
                _directive_variables(document.definitions),
                Variables(self.schema._schema, definitions),
                plannable=operation.operation is not OperationType.SUBSCRIPTION,
            )
        if not compiled.plannable:
            STANDARD.inc()
            return None
        variables = compiled.variables.coerce(inputs or {}) or get_variable_values(
            self.schema._schema, operation.variable_definitions or (), inputs or {}
        )
        if not isinstance(variables, VariableValues):
            STANDARD.inc()  # its errors are the standard executor's
            return None
        values = tuple(variables.coerced.get(name) for name in compiled.directive_variables)
        plan = compiled.plans.get(values)
        if plan is None:
            try:
                plan = Planner(self, document, operation, variables).plan()
            except Unplannable as reason:
                log.debug("not compiled: %s", reason)
                compiled.plannable = False
                STANDARD.inc()
                return None
            if len(compiled.plans) < Compiled.MAX_PLANS:
                compiled.plans[values] = plan
        try:
            result = await plan.run(context, variables)
        except Exception as reason:  # a query's error to report: graphql-core reports it
            log.debug("compiled plan gave way to the standard executor: %r", reason)
            context.__dict__.pop("loaders", None)  # the standard run reads afresh
            FALLBACK.inc()
            return None
        COMPILED.inc()
        return result
