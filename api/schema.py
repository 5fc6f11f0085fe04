"""The assembled GraphQL schema, its extensions and validation rules."""

from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import ASTValidationRule, NoSchemaIntrospectionCustomRule
from strawberry.extensions import MaxAliasesLimiter, QueryDepthLimiter
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.schema import DEFAULT_ALLOWED_OPERATION_TYPES
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from api.config import Settings
from api.executor import PerEventExecutor
from api.extension import Documents, OperationPolicy
from api.limits import max_directives_rule
from api.masking import report
from api.mutations import Mutation
from api.queries import Query
from api.subscriptions import Subscription


class SessionSchema(strawberry.Schema):
    hide_suggestions = False

    async def execute(self, *args: Any, **kwargs: Any) -> ExecutionResult:
        """Queries and mutations, by HTTP: a subscription sent there would otherwise run as a
        query and fail, since its events only flow over WebSocket (see api/fanout.py)."""
        allowed = kwargs.get("allowed_operation_types") or DEFAULT_ALLOWED_OPERATION_TYPES
        kwargs["allowed_operation_types"] = set(allowed) - {OperationType.SUBSCRIPTION}
        if (context := kwargs.get("context_value")) is not None:
            kwargs["context_value"] = context.for_operation()
        return await super().execute(*args, **kwargs)

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


def build_schema(settings: Settings | None = None) -> strawberry.Schema:
    settings = settings or Settings()
    hide_suggestions = not settings.development
    rules: list[type[ASTValidationRule]] = [
        *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
        max_directives_rule(settings.max_directives),
    ]
    if not settings.development:
        rules.append(NoSchemaIntrospectionCustomRule)
    documents = Documents(rules, max_tokens=settings.max_tokens)
    schema = SessionSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        # A factory: Strawberry makes each operation its own extension.
        extensions=[lambda: OperationPolicy(documents, hide_suggestions)],
        execution_context_class=PerEventExecutor,
        # Suggestions would reveal the schema where introspection is off.
        config=StrawberryConfig(disable_field_suggestions=hide_suggestions),
    )
    schema.hide_suggestions = hide_suggestions
    return schema
