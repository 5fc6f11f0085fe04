"""The assembled GraphQL schema, its extensions and validation rules."""

from collections.abc import AsyncIterator
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import (
    AddValidationRules,
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    SchemaExtension,
    ValidationCache,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from api.config import Settings
from api.executor import PerEventExecutor
from api.limits import max_directives_rule
from api.masking import coded, report
from api.mutations import Mutation
from api.observability import ObserveOperations
from api.queries import Query
from api.subscriptions import Subscription
from models import SharedRead


class CodedErrors(MaskErrors):
    """Every top-level error carries `extensions.code`: unexpected ones are masked as INTERNAL,
    a database that cannot be reached is UNAVAILABLE (retryable)."""

    def __init__(self, hide_suggestions: bool = False) -> None:
        super().__init__()
        self.hide_suggestions = hide_suggestions

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        return [coded(error, self.hide_suggestions) for error in errors]


class SharedReads(SchemaExtension):
    """A query operation's reads share one transaction (models.SharedRead), closed with it."""

    async def on_execute(self) -> AsyncIterator[None]:
        context = self.execution_context.context
        if self.execution_context.operation_type is not OperationType.QUERY:
            yield
            return
        context.shared_read = SharedRead(context.services.repository.database)
        try:
            yield
        finally:
            await context.shared_read.close()
            context.shared_read = None


class SessionSchema(strawberry.Schema):
    hide_suggestions = False

    async def execute(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        """Queries and mutations, by HTTP: a subscription sent there would otherwise run as a
        query and fail, since its events only flow over WebSocket (see api/fanout.py)."""
        allowed = kwargs.get("allowed_operation_types") or DEFAULT_ALLOWED_OPERATION_TYPES
        kwargs["allowed_operation_types"] = set(allowed) - {OperationType.SUBSCRIPTION}
        return await super().execute(*args, **kwargs)

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        operation = execution_context.operation_name if execution_context else None
        report(errors, operation, self.hide_suggestions)


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings()
    # Factories, so that each operation gets fresh extension state; the caches are module-level.
    hide_suggestions = not settings.development
    extensions: list[Any] = [
        ObserveOperations,
        lambda: CodedErrors(hide_suggestions),
        lambda: ParserCache(maxsize=512),
        lambda: ValidationCache(maxsize=512),
        SharedReads,
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
