"""Who a caller is: a role, the data sources it may touch, and until when."""

from dataclasses import dataclass
from enum import IntEnum

from api.errors import ApiError


class Role(IntEnum):
    # An identity provider's token that maps to none of our roles: authenticated, allowed nothing.
    NONE = 0
    READ = 1
    WRITE = 2
    ADMIN = 3


@dataclass(frozen=True)
class Principal:
    role: Role
    # None: every data source ("*").
    data_sources: frozenset[str] | None
    # Names the caller for rate limits and logs; never the token itself.
    name: str = "open"
    # When the token stops proving this (seconds since the epoch), for those that expire.
    expires_at: float | None = None

    def may_read(self, data_source: str) -> bool:
        return self.data_sources is None or data_source in self.data_sources

    def require(self, role: Role) -> None:
        if self.role is Role.NONE:
            raise ApiError("FORBIDDEN", "this token maps to no role here: it may do nothing")
        if self.role < role:
            raise ApiError("FORBIDDEN", f"this token's role cannot do that ({role.name.lower()})")

    def require_data_source(self, data_source: str) -> None:
        if not self.may_read(data_source):
            raise ApiError("FORBIDDEN", f"this token may not touch data source {data_source!r}")


OPEN = Principal(Role.ADMIN, None)
NOBODY = Principal(Role.READ, frozenset(), name="nobody")


class Unauthenticated(Exception):
    """A bearer token proves nothing. `reason` is for the client and names the check that
    failed, never the token; `check` is that check's short name, for logs."""

    def __init__(self, check: str, reason: str) -> None:
        super().__init__(reason)
        self.check = check
        self.reason = reason
