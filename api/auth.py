"""Bearer tokens: who a request is (a role) and which data sources it may touch."""

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from api.errors import ApiError


class Role(IntEnum):
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

    def may_read(self, data_source: str) -> bool:
        return self.data_sources is None or data_source in self.data_sources

    def require(self, role: Role) -> None:
        if self.role < role:
            raise ApiError("FORBIDDEN", f"this token's role cannot do that ({role.name.lower()})")

    def require_data_source(self, data_source: str) -> None:
        if not self.may_read(data_source):
            raise ApiError("FORBIDDEN", f"this token may not touch data source {data_source!r}")


OPEN = Principal(Role.ADMIN, None)
NOBODY = Principal(Role.READ, frozenset(), name="nobody")


@dataclass(frozen=True)
class Token:
    """A configured token, kept only as its SHA-256 digest."""

    digest: bytes
    principal: Principal

    @classmethod
    def parse(cls, entry: Any, path: str) -> "Token":
        """One entry of the "Tokens" setting; errors name the offending key."""
        if not isinstance(entry, Mapping):
            raise ValueError(f"{path}: must be an object")
        unknown = set(entry) - {"token", "sha256", "role", "dataSources"}
        if unknown:
            raise ValueError(f"{path}: unknown keys {sorted(unknown)}")
        if ("token" in entry) == ("sha256" in entry):
            raise ValueError(f"{path}: give exactly one of token or sha256")
        if "token" in entry:
            if not isinstance(entry["token"], str) or len(entry["token"]) < 16:
                raise ValueError(f"{path}.token: must be a string of at least 16 characters")
            digest = hashlib.sha256(entry["token"].encode()).digest()
        else:
            try:
                digest = bytes.fromhex(entry["sha256"])
            except (TypeError, ValueError):
                digest = b""
            if len(digest) != 32:
                raise ValueError(f"{path}.sha256: must be 64 hexadecimal characters")
        try:
            role = Role[str(entry.get("role", "")).upper()]
        except KeyError:
            raise ValueError(f"{path}.role: must be read, write or admin") from None
        sources = entry.get("dataSources", ["*"])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise ValueError(f'{path}.dataSources: must be a list of names or ["*"]')
        scope = None if "*" in sources else frozenset(sources)
        return cls(digest, Principal(role, scope, name=f"token:{digest.hex()[:12]}"))


class Authenticator:
    def __init__(self, tokens: Iterable[Token]) -> None:
        self.tokens = tuple(tokens)

    @property
    def open(self) -> bool:
        return not self.tokens

    def authenticate(self, authorization: object) -> Principal | None:
        """The principal for an `Authorization` value, or None when it proves nothing."""
        if self.open:
            return OPEN
        if not isinstance(authorization, str):
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return None
        digest = hashlib.sha256(token.strip().encode()).digest()
        found = None
        for candidate in self.tokens:  # every one compared, in constant time
            if hmac.compare_digest(candidate.digest, digest):
                found = candidate.principal
        return found
