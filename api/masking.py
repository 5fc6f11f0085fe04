"""The error policy: every top-level error carries `extensions.code`, unexpected ones are
masked, and only unexpected ones are logged."""

import logging
import re

from asyncpg.exceptions import PostgresConnectionError
from graphql import GraphQLError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError

from api.errors import ApiError
from api.metrics import DATABASE_ERRORS

log = logging.getLogger("api.schema")

INTERNAL_MESSAGE = "Unexpected error."
UNAVAILABLE_MESSAGE = "The database is unavailable; retry shortly (with the same idempotencyKey)."

# graphql-core's "Did you mean …?" hints name schema members; only some of them can be
# switched off (StrawberryConfig covers object fields, not arguments, input fields, enum
# values or types).
SUGGESTION = re.compile(r" ?Did you mean [^?]*\?")


def _document(error: GraphQLError) -> bool:
    """A parse, validation or coercion error, as opposed to one raised while resolving."""
    return error.original_error is None or isinstance(error.original_error, GraphQLError)


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
        if isinstance(error.original_error, DBAPIError):
            DATABASE_ERRORS.inc()
        if not _document(error):
            log.error(
                "unexpected error in operation %s at %s",
                operation_name,
                error.path,
                exc_info=error.original_error,
            )
