"""Errors in the schema: result members for expected outcomes, coded top-level errors otherwise."""

from enum import Enum
from typing import Any

import strawberry
from graphql import GraphQLError

from models import (
    AssociationCycle,
    CursorExpired,
    DomainError,
    IdempotencyMismatch,
    InvalidInput,
    RevisionConflict,
    SessionNotFound,
)


@strawberry.enum
class ErrorCode(Enum):
    NOT_FOUND = "NOT_FOUND"
    VALIDATION = "VALIDATION"
    CONFLICT = "CONFLICT"
    CYCLE = "CYCLE"
    IDEMPOTENCY_MISMATCH = "IDEMPOTENCY_MISMATCH"
    DISABLED = "DISABLED"


@strawberry.interface(description="An expected reason a mutation changed nothing.")
class Error:
    code: ErrorCode
    message: str


@strawberry.type
class SessionNotFoundError(Error):
    session_key: strawberry.ID


@strawberry.type
class ValidationError(Error):
    field: str = strawberry.field(
        description="The input field at fault, as a dotted path such as details.3.value."
    )


@strawberry.type
class RevisionConflictError(Error):
    current_revision: int


@strawberry.type
class AssociationCycleError(Error):
    pass


@strawberry.type
class IdempotencyMismatchError(Error):
    pass


@strawberry.type
class SessionManagementDisabledError(Error):
    pass


DISABLED_MESSAGE = "Session management is disabled on this server (IntegrateSessionManagement)."


def error_member(error: DomainError) -> Any:
    """The result-union member that reports a domain error."""
    match error:
        case SessionNotFound():
            return SessionNotFoundError(
                code=ErrorCode.NOT_FOUND,
                message=error.message,
                session_key=strawberry.ID(error.key),
            )
        case InvalidInput():
            return ValidationError(
                code=ErrorCode.VALIDATION, message=error.message, field=error.field
            )
        case RevisionConflict():
            return RevisionConflictError(
                code=ErrorCode.CONFLICT, message=error.message, current_revision=error.current
            )
        case AssociationCycle():
            return AssociationCycleError(code=ErrorCode.CYCLE, message=error.message)
        case IdempotencyMismatch():
            return IdempotencyMismatchError(
                code=ErrorCode.IDEMPOTENCY_MISMATCH, message=error.message
            )
    raise TypeError(f"no result member for {type(error).__name__}") from error


def disabled_member() -> SessionManagementDisabledError:
    return SessionManagementDisabledError(code=ErrorCode.DISABLED, message=DISABLED_MESSAGE)


class ApiError(GraphQLError):
    """A top-level error whose `extensions.code` tells clients what went wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, extensions={"code": code})


def invalid_argument(field: str, message: str) -> ApiError:
    return ApiError("VALIDATION", f"{field}: {message}")


def top_level(error: DomainError) -> ApiError:
    """A domain error raised outside a mutation, as a coded top-level error."""
    match error:
        case InvalidInput():
            return ApiError("VALIDATION", error.message)
        case CursorExpired():
            return ApiError("CURSOR_EXPIRED", error.message)
    return ApiError("INTERNAL", "Unexpected error.")


def disabled() -> ApiError:
    return ApiError("DISABLED", DISABLED_MESSAGE)
