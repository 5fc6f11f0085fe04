"""The assembled GraphQL schema and its error policy."""

import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from sqlalchemy.exc import DBAPIError
from strawberry.extensions import AddValidationRules, MaskErrors, ParserCache, ValidationCache
from strawberry.types import ExecutionContext

from api.config import Settings
from api.errors import ApiError
from api.metrics import DATABASE_ERRORS
from api.mutations import Mutation
from api.observability import ObserveOperations
from api.queries import Query
from api.subscriptions import Subscription

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "Unexpected error."


def _unexpected(error: GraphQLError) -> bool:
    return error.original_error is not None and not isinstance(error.original_error, ApiError)


class CodedErrors(MaskErrors):
    """Every top-level error carries `extensions.code`; unexpected ones are masked as INTERNAL."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_unexpected, error_message=INTERNAL_MESSAGE)

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL"}
        return masked

    def _process_errors(self, errors: list[GraphQLError]) -> list[GraphQLError]:
        processed = super()._process_errors(errors)
        for error in processed:
            if not (error.extensions or {}).get("code"):
                # Parse and validation errors of the document itself.
                error.extensions = {**(error.extensions or {}), "code": "VALIDATION"}
        return processed


class SessionSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Expected errors are the client's business; only unexpected ones are worth a trace.
        for error in errors:
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
    extensions: list[Any] = [
        ObserveOperations,
        CodedErrors,
        lambda: ParserCache(maxsize=512),
        lambda: ValidationCache(maxsize=512),
    ]
    if not settings.development:
        extensions.append(lambda: AddValidationRules([NoSchemaIntrospectionCustomRule]))
    return SessionSchema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions
    )
