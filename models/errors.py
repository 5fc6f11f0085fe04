"""Domain errors: expected outcomes of a use case, each carrying the data that explains it."""


class DomainError(Exception):
    """An expected failure; the API maps each kind to a result member."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SessionNotFound(DomainError):
    def __init__(self, key: str) -> None:
        super().__init__(f"No session with key {key!r}.")
        self.key = key


class InvalidInput(DomainError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class RevisionConflict(DomainError):
    def __init__(self, expected: int, current: int) -> None:
        super().__init__(f"Expected revision {expected}, but the session is at {current}.")
        self.current = current


class AssociationCycle(DomainError):
    def __init__(self, parent_key: str, child_key: str) -> None:
        what = "itself" if parent_key == child_key else f"{child_key!r}, which is its ancestor"
        super().__init__(f"Session {parent_key!r} cannot list {what}: hierarchies are acyclic.")


class IdempotencyMismatch(DomainError):
    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency key {key!r} was already used with different input.")


class CursorExpired(DomainError):
    def __init__(self, cursor: int, oldest: int) -> None:
        super().__init__(
            f"Cursor {cursor} is older than the retained event log (oldest resumable: {oldest})."
        )


class DatabaseUnavailable(Exception):
    """The database did not answer within the operation's bound, or too many operations already
    wait for a connection: nothing is known to have changed, and the caller may retry."""
