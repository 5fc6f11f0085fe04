"""The assembled GraphQL schema and its error policy."""

import logging
import re
from typing import Any

import strawberry
from asyncpg.exceptions import PostgresConnectionError
from graphql import GraphQLError
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from api.config import Settings
from api.errors import ApiError
from api.executor import PerEventExecutor
from api.limits import max_directives_rule
from api.metrics import DATABASE_ERRORS
from api.mutations import Mutation
from api.observability import ObserveOperations
from api.queries import Query
from api.subscriptions import Subscription

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "Unexpected error."
UNAVAILABLE_MESSAGE = "The database is unavailable; retry shortly (with the same idempotencyKey)."


def _unexpected(error: GraphQLError) -> bool:
    # graphql-core reports bad variable values as a GraphQLError wrapping another one.
    return error.original_error is not None and not isinstance(error.original_error, GraphQLError)


def _unavailable(error: BaseException | None) -> bool:
    """A failure to reach the database, as opposed to a bug: the client may retry."""
    if isinstance(error, DBAPIError):
        sqlstate = str(getattr(error.orig, "sqlstate", None) or "")
        return (
            error.connection_invalidated
            or error.statement is None  # failed while connecting, before any statement
            or isinstance(error, OperationalError | InterfaceError)
            or sqlstate.startswith(("08", "57P"))  # connection exception, admin shutdown
        )
    return isinstance(error, OSError | TimeoutError | SATimeoutError | PostgresConnectionError)


# graphql-core's "Did you mean …?" hints name schema members; only some of them can be
# switched off (StrawberryConfig covers object fields, not arguments, input fields, enum
# values or types).
SUGGESTION = re.compile(r" ?Did you mean [^?]*\?")


def document_error(error: GraphQLError, hide_suggestions: bool) -> GraphQLError:
    """A parse, validation or coercion error: coded VALIDATION, its hints hidden if asked."""
    error.extensions = {**(error.extensions or {}), "code": "VALIDATION"}
    if hide_suggestions:
        error.message = SUGGESTION.sub("", error.message)
    return error


class CodedErrors(MaskErrors):
    """Every top-level error carries `extensions.code`: unexpected ones are masked as INTERNAL,
    a database that cannot be reached is UNAVAILABLE (retryable)."""

    def __init__(self, hide_suggestions: bool = False) -> None:
        super().__init__()
        self.hide_suggestions = hide_suggestions

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [self._coded(error) for error in errors]

    def _coded(self, error: GraphQLError) -> GraphQLError:
        original = error.original_error
        if isinstance(original, ApiError) or (error.extensions or {}).get("code"):
            return error  # coded already (a result shared by several subscribers is seen twice)
        if original is None or isinstance(original, GraphQLError):
            return document_error(error, self.hide_suggestions)
        code, message = (
            ("UNAVAILABLE", UNAVAILABLE_MESSAGE)
            if _unavailable(original)
            else ("INTERNAL", INTERNAL_MESSAGE)
        )
        return GraphQLError(
            message,
            nodes=error.nodes,
            source=error.source,
            positions=error.positions,
            path=error.path,
            extensions={"code": code},
        )


class SessionSchema(strawberry.Schema):
    hide_suggestions = False

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Expected errors are the client's business; only unexpected ones are worth a trace.
        for error in errors:
            document = error.original_error is None or isinstance(
                error.original_error, GraphQLError
            )
            if document and not (error.extensions or {}).get("code"):
                # A parse error raised inside ParserCache's hook bypasses the extensions.
                document_error(error, self.hide_suggestions)
            if isinstance(error.original_error, DBAPIError):
                DATABASE_ERRORS.inc()
            if _unexpected(error):
                operation = execution_context.operation_name if execution_context else None
                log.error(
                    "unexpected error in operation %s at %s",
                    operation,
                    error.path,
                    exc_info=error.original_error,
                )


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings()
    # Factories, so that each operation gets fresh extension state; the caches are module-level.
    hide_suggestions = not settings.development
    extensions: list[Any] = [
        ObserveOperations,
        lambda: CodedErrors(hide_suggestions),
        lambda: ParserCache(maxsize=512),
        lambda: ValidationCache(maxsize=512),
    ]
    # The rule classes are made once: ValidationCache keys on them, so rules made afresh for
    # each operation (as the limiter extensions do) would validate every request again.
    rules: list[type[ASTValidationRule]] = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
        max_directives_rule(settings.max_directives),
    ]
    if not settings.development:
        rules.append(NoSchemaIntrospectionCustomRule)
    extensions += [
        lambda: MaxTokensLimiter(max_token_count=settings.max_tokens),
        lambda: AddValidationRules(rules),
    ]
    schema = SessionSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=PerEventExecutor,
        # Suggestions would reveal the schema where introspection is off.
        config=StrawberryConfig(disable_field_suggestions=hide_suggestions),
    )
    schema.hide_suggestions = hide_suggestions
    return schema
