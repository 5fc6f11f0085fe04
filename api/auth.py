"""Bearer tokens: configured ones, and JWTs from trusted issuers; who each proves a caller is."""

import hashlib
import hmac
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from api.identity import IdentityProviders
from api.principal import NOBODY, OPEN, Principal, Role, Unauthenticated

__all__ = [
    "NOBODY",
    "OPEN",
    "Authenticator",
    "Principal",
    "Role",
    "Token",
    "Unauthenticated",
    "identified",
]

REQUIRED = "A valid bearer token is required."
NOT_A_JWT = "The bearer token is neither a configured token nor a JWT (malformed)."
# Only these are roles a configured token may have (Role.NONE is for tokens of issuers).
TOKEN_ROLES = {"read": Role.READ, "write": Role.WRITE, "admin": Role.ADMIN}


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
        role = TOKEN_ROLES.get(str(entry.get("role", "")).lower())
        if role is None:
            raise ValueError(f"{path}.role: must be read, write or admin")
        sources = entry.get("dataSources", ["*"])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise ValueError(f'{path}.dataSources: must be a list of names or ["*"]')
        scope = None if "*" in sources else frozenset(sources)
        return cls(digest, Principal(role, scope, name=f"token:{digest.hex()[:12]}"))


class Authenticator:
    """Configured tokens first (never waiting on a provider), then JWTs of the issuers."""

    def __init__(
        self, tokens: Iterable[Token], identities: IdentityProviders | None = None
    ) -> None:
        self.tokens = tuple(tokens)
        self.identities = identities or IdentityProviders(())

    @property
    def open(self) -> bool:
        return not self.tokens and not self.identities.issuers

    async def identify(self, authorization: object) -> Principal:
        """The principal for an `Authorization` value; Unauthenticated says which check the
        value failed. May wait for an issuer's keys, never beyond the JWKS fetch timeout."""
        if self.open:
            return OPEN
        token = _bearer(authorization)
        if (found := self._configured(token)) is not None:
            return found
        if not self.identities.issuers:
            raise Unauthenticated("token", REQUIRED)
        if token.count(".") != 2:
            raise Unauthenticated("token", NOT_A_JWT)
        return await self.identities.verify(token)

    def authenticate(self, authorization: object) -> Principal | None:
        """The same without waiting, or None: a JWT whose key is not held yet proves nothing
        here (api/metrics.py; `identified` fetches the key first)."""
        if self.open:
            return OPEN
        try:
            token = _bearer(authorization)
            if (found := self._configured(token)) is not None:
                return found
            return self.identities.verify_cached(token) if self.identities.issuers else None
        except Unauthenticated:
            return None

    def _configured(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for candidate in self.tokens:  # every one compared, in constant time
            if hmac.compare_digest(candidate.digest, digest):
                found = candidate.principal
        return found


def _bearer(authorization: object) -> str:
    if not isinstance(authorization, str):
        raise Unauthenticated("token", REQUIRED)
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("token", REQUIRED)
    return token.strip()


Endpoint = Callable[[Request], Awaitable[Response]]


def identified(endpoint: Endpoint) -> Endpoint:
    """An endpoint that checks its caller without waiting (/metrics), behind a refusal with
    the reason, and after the caller's keys are fetched if need be."""

    async def guarded(request: Request) -> Response:
        authenticator: Authenticator = request.app.state.services.authenticator
        try:
            await authenticator.identify(request.headers.get("authorization"))
        except Unauthenticated as refused:
            return PlainTextResponse(
                refused.reason + "\n", 401, headers={"www-authenticate": "Bearer"}
            )
        return await endpoint(request)

    return guarded
