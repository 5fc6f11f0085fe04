"""The assembled GraphQL schema, its extensions and validation rules."""

import time
from collections.abc import Iterable
from inspect import isawaitable
from typing import Any, cast

import strawberry
from graphql import DocumentNode, GraphQLError, OperationDefinitionNode, execute
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.exceptions import MissingQueryError
from strawberry.execution import optimized_is_awaitable
from strawberry.extensions import MaxAliasesLimiter
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from api.compiled import Compiler
from api.config import Settings
from api.executor import PerEventExecutor
from api.extension import Documents, OperationPolicy, observe
from api.limits import NonEmptySelections, max_depth_rule, max_directives_rule
from api.masking import report, reported
from api.mutations import Mutation
from api.queries import Query
from api.subscriptions import Subscription


class SessionSchema(strawberry.Schema):
    """Strawberry's schema, with a lean path for queries and mutations over HTTP.

    `execute` runs graphql-core directly on the document checked once by its text, instead of
    Strawberry's pipeline of extension hooks (entered and left per phase of every operation).
    It answers as that pipeline does: the same errors, coded and masked the same way, and the
    same refusals for a missing query or a disallowed operation (tests/test_fast_path.py runs
    the same documents both ways). WebSocket operations take Strawberry's pipeline.
    """

    def __init__(
        self,
        *args: Any,
        documents: Documents,
        hide_suggestions: bool,
        log_all: bool,
        fast_path: bool = True,
        compiled: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.fast_path = fast_path
        self.compiler = Compiler(self) if compiled else None
        self.documents = documents
        self.hide_suggestions = hide_suggestions
        self.log_all = log_all

    async def execute(  # type: ignore[override]
        self,
        query: str | None,
        variable_values: dict[str, Any] | None = None,
        context_value: Any | None = None,
        root_value: Any | None = None,
        operation_name: str | None = None,
        allowed_operation_types: Iterable[OperationType] | None = None,
        operation_extensions: dict[str, Any] | None = None,
    ) -> ExecutionResult:
        """Queries and mutations. A subscription is refused (400 over HTTP): its events only
        flow over WebSocket (see api/fanout.py)."""
        started = time.perf_counter()
        allowed = set(allowed_operation_types or DEFAULT_ALLOWED_OPERATION_TYPES)
        allowed.discard(OperationType.SUBSCRIPTION)
        context = None if context_value is None else context_value.for_operation()
        if not self.fast_path:
            return await super().execute(
                query,
                variable_values,
                context,
                root_value,
                operation_name,
                allowed,
                operation_extensions,
            )
        if not query:
            raise MissingQueryError
        request_id = getattr(context, "request_id", None)
        try:
            checked = self.documents.check(self._schema, query)
        except GraphQLError as error:
            return self._failed("invalid", operation_name, started, [error], request_id)
        except Exception as error:  # a document too deep for the parser, say
            failure = GraphQLError(str(error), original_error=error)
            return self._failed("invalid", operation_name, started, [failure], request_id)
        document, errors = checked.document, checked.errors
        operation = _operation(document, operation_name)
        if operation is None:
            raise CannotGetOperationTypeError(operation_name)
        operation_type = OperationType(operation.operation.value)
        operation_name = operation.name.value if operation.name else None
        if operation_type not in allowed:
            raise InvalidOperationTypeError(operation_type)
        kind = operation_type.value
        if errors:
            return self._failed(kind, operation_name, started, errors, request_id)
        try:
            result: Any = None
            if self.compiler is not None and context is not None:
                result = await self.compiler.answer(
                    checked.plans, document, operation, variable_values, context
                )
            if result is None:  # not compiled, or a query the plan gave to graphql-core
                result = execute(
                    self._schema,
                    document,
                    root_value=root_value,
                    context_value=context,
                    variable_values=variable_values,
                    operation_name=operation_name,
                    executor_class=self.execution_context_class,
                    is_awaitable=cast(Any, optimized_is_awaitable),
                )
                if isawaitable(result):
                    result = await result
        except Exception as error:
            failure = GraphQLError(str(error), original_error=error)
            return self._failed(
                operation_type.value, operation_name, started, [failure], request_id
            )
        if result.errors:
            result.errors = reported(result.errors, operation_name, self.hide_suggestions)
        observe(kind, operation_name, started, result.errors, request_id, self.log_all)
        return ExecutionResult(data=result.data, errors=result.errors)

    def is_valid(self, query: str) -> bool:
        """Whether a document parses and validates (checked once by its text)."""
        try:
            return not self.documents.check(self._schema, query).errors
        except Exception:
            return False

    def query_operation(
        self, query: str, operation_name: str | None
    ) -> OperationDefinitionNode | None:
        """The operation a request runs, when it is a valid query: what may be cached."""
        try:
            checked = self.documents.check(self._schema, query)
        except Exception:  # it does not parse: execute reports it
            return None
        operation = None if checked.errors else _operation(checked.document, operation_name)
        if operation is None or operation.operation.value != "query":
            return None
        return operation

    def _failed(
        self,
        operation_type: str,
        operation_name: str | None,
        started: float,
        errors: list[GraphQLError],
        request_id: str | None,
    ) -> ExecutionResult:
        """An operation that failed before or instead of executing: no data."""
        errors = reported(errors, operation_name, self.hide_suggestions)
        observe(operation_type, operation_name, started, errors, request_id, self.log_all)
        return ExecutionResult(data=None, errors=errors)

    async def stream(self, *args: Any, **kwargs: Any) -> Any:
        """Operations over WebSocket: each gets its own copy of the connection's context."""
        if (context := kwargs.get("context_value")) is not None:
            kwargs["context_value"] = context.for_operation()
        return await super().stream(*args, **kwargs)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        operation = execution_context.operation_name if execution_context else None
        report(errors, operation, self.hide_suggestions)


def _operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    """The operation a request names, or its first one."""
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and (
            name is None or (definition.name is not None and definition.name.value == name)
        ):
            return definition
    return None


def build_schema(settings: Settings | None = None) -> SessionSchema:
    settings = settings or Settings()
    hide_suggestions = not settings.development
    rules: list[type[ASTValidationRule]] = [
        NonEmptySelections,
        max_depth_rule(settings.max_query_depth),
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
        max_directives_rule(settings.max_directives),
    ]
    if not settings.development:
        rules.append(NoSchemaIntrospectionCustomRule)
    documents = Documents(rules, max_tokens=settings.max_tokens)
    log_all = settings.log_operations == "all"
    return SessionSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # A factory: Strawberry makes each operation its own extension.
        extensions=[lambda: OperationPolicy(documents, hide_suggestions, log_all)],
        execution_context_class=PerEventExecutor,
        # Suggestions would reveal the schema where introspection is off.
        config=StrawberryConfig(disable_field_suggestions=hide_suggestions),
        documents=documents,
        hide_suggestions=hide_suggestions,
        log_all=log_all,
        fast_path=settings.http_fast_path,
        compiled=settings.compiled_execution,
    )
