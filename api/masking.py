"""The error policy: every top-level error carries `extensions.code`, unexpected ones are
masked, and only unexpected ones are logged."""

import logging
import re
import sqlite3

import asyncpg
from graphql import GraphQLError
from strawberry.exceptions import MissingQueryError
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError

from api.errors import ApiError
from api.metrics import DATABASE_ERRORS
from models import DatabaseUnavailable

log = logging.getLogger("api.schema")

INTERNAL_MESSAGE = "Unexpected error."
UNAVAILABLE_MESSAGE = "The database is unavailable; retry shortly (with the same idempotencyKey)."

# graphql-core's "Did you mean …?" hints name schema members; only some of them can be
# switched off (StrawberryConfig covers object fields, not arguments, input fields, enum
# values or types).
SUGGESTION = re.compile(r" ?Did you mean [^?]*\?")


# What Strawberry raises when a request names no operation it may run (over WebSocket, an
# `operationName` the document lacks): the client's mistake, not ours.
REQUEST_ERRORS = (
    GraphQLError,
    MissingQueryError,
    CannotGetOperationTypeError,
    InvalidOperationTypeError,
)


def _document(error: GraphQLError) -> bool:
    """A parse, validation or coercion error, as opposed to one raised while resolving."""
    return error.original_error is None or isinstance(error.original_error, REQUEST_ERRORS)


# Errors the drivers raise: a database error of any kind is counted.
DATABASE_ERRORS_RAISED = (
    sqlite3.Error,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    DatabaseUnavailable,
)
# SQLSTATE classes of a database that cannot serve: connection exception, insufficient
# resources, operator intervention (shutdown), and a database that does not exist (3D000).
UNAVAILABLE_STATES = ("08", "53", "57", "3D")


def _unavailable(error: BaseException | None) -> bool:
    """A failure to reach the database, as opposed to a bug: the client may retry."""
    if isinstance(error, asyncpg.PostgresError):
        return str(error.sqlstate or "").startswith(UNAVAILABLE_STATES)
    # asyncpg's InterfaceError and InternalClientError: the connection was lost, closed or
    # left mid-operation under the statement (the connection is then discarded, see
    # models/database.py); SQLite's OperationalError: the file is locked or cannot be opened.
    # DatabaseUnavailable: no answer within the request's bound (see models/database.py).
    lost = asyncpg.InterfaceError | asyncpg.InternalClientError | DatabaseUnavailable
    return isinstance(error, OSError | TimeoutError | lost | sqlite3.OperationalError)


def document_error(error: GraphQLError, hide_suggestions: bool) -> GraphQLError:
    """A parse, validation or coercion error: coded VALIDATION, its hints hidden if asked."""
    error.extensions = {**(error.extensions or {}), "code": "VALIDATION"}
    if hide_suggestions:
        error.message = SUGGESTION.sub("", error.message)
    return error


def coded(error: GraphQLError, hide_suggestions: bool) -> GraphQLError:
    """The error as clients see it: unexpected ones masked as INTERNAL, a database that cannot
    be reached as UNAVAILABLE (retryable)."""
    original = error.original_error
    if isinstance(original, ApiError) or (error.extensions or {}).get("code"):
        return error  # coded already (a result shared by several subscribers is seen twice)
    if _document(error):
        return document_error(error, hide_suggestions)
    unavailable = _unavailable(original)
    code, message = (
        ("UNAVAILABLE", UNAVAILABLE_MESSAGE) if unavailable else ("INTERNAL", INTERNAL_MESSAGE)
    )
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": code},
    )


def report(errors: list[GraphQLError], operation_name: str | None, hide_suggestions: bool) -> None:
    """Counts database failures and logs unexpected errors, before they are masked: expected
    errors are the client's business."""
    for error in errors:
        if _document(error) and not (error.extensions or {}).get("code"):
            # A parse error raised inside ParserCache's hook bypasses the extensions.
            document_error(error, hide_suggestions)
        if isinstance(error.original_error, DATABASE_ERRORS_RAISED):
            DATABASE_ERRORS.inc()
        if not _document(error):
            log.error(
                "unexpected error in operation %s at %s",
                operation_name,
                error.path,
                exc_info=error.original_error,
            )


def reported(
    errors: list[GraphQLError], operation_name: str | None, hide_suggestions: bool
) -> list[GraphQLError]:
    """The errors reported (counted and, if unexpected, logged), then as clients see them."""
    report(errors, operation_name, hide_suggestions)
    return [coded(error, hide_suggestions) for error in errors]
