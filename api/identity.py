"""JWT bearer tokens from trusted OpenID Connect issuers: verified with PyJWT against each
issuer's keys, each refusal named by the check that failed."""

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Sequence
from typing import Any

import httpx
import jwt

from api.issuers import Issuer, fits
from api.jwks import FETCH_TIMEOUT, Jwk, JwksUnavailable, KeySet
from api.principal import Principal, Unauthenticated

log = logging.getLogger(__name__)

# Far above any provider's tokens (Keycloak's with many roles run to a few KiB), so that a
# header full of junk is refused before it is decoded.
MAX_TOKEN_CHARS = 16 * 1024
REQUIRED_CLAIMS = ["exp", "iss", "aud"]

# What a client is told for each check: the check by name, never the token.
REASONS = {
    "malformed": "The bearer token is not a well-formed JWT (malformed).",
    "iss": "The bearer token's issuer is not trusted (iss).",
    "alg": "The bearer token's algorithm is not allowed for its issuer or key (alg).",
    "kid": "The bearer token's signing key is not one of its issuer's keys (kid).",
    "jwks": f"The bearer token's issuer keys could not be fetched within {FETCH_TIMEOUT:g} s "
    "(jwks): retry later.",
    "key": "The bearer token's signing key is not usable (key).",
    "signature": "The bearer token's signature is invalid (signature).",
    "exp": "The bearer token has expired (exp).",
    "nbf": "The bearer token is not valid yet (nbf).",
    "iat": "The bearer token was issued in the future (iat).",
    "aud": "The bearer token's audience is not accepted (aud).",
    "claims": "The bearer token has a claim of the wrong type: exp, nbf and iat are numbers, "
    "sub and jti strings (claims).",
}

# For reading a token's header and claims before any check, to find its issuer and key.
_UNVERIFIED: jwt.types.Options = {"verify_signature": False}


class IdentityProviders:
    """The configured issuers with their key sets; `start()` keeps those with a JWKS URL
    fresh in the background, `stop()` ends that."""

    def __init__(
        self,
        issuers: Iterable[Issuer],
        *,
        refresh_seconds: float = 300.0,
        refetch_seconds: float = 10.0,
    ) -> None:
        self.issuers = {issuer.issuer: issuer for issuer in issuers}
        self.key_sets = {
            name: KeySet(
                name,
                issuer.jwks_url,
                issuer.public_keys,
                None,
                refresh_seconds=refresh_seconds,
                refetch_seconds=refetch_seconds,
            )
            for name, issuer in self.issuers.items()
        }
        self._client: httpx.AsyncClient | None = None
        self._refreshers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start fetching every JWKS, without waiting for any: a provider that is down must
        not keep the service from starting (a token that needs its keys waits instead)."""
        fetched = [keys for keys in self.key_sets.values() if keys.url is not None]
        if not fetched:
            return
        self._client = httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False)
        for keys in fetched:
            keys.client = self._client
            self._refreshers.append(asyncio.create_task(keys.keep_fresh()))

    async def stop(self) -> None:
        for task in self._refreshers:
            task.cancel()
        for task in self._refreshers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._refreshers.clear()
        for keys in self.key_sets.values():
            await keys.cancel()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def report(self) -> list[dict[str, Any]]:
        return [keys.report() for keys in self.key_sets.values()]

    @property
    def degraded(self) -> bool:
        """Some issuer's JWKS cannot be fetched now (tokens with cached keys still work)."""
        return any(keys.state in ("stale", "unavailable") for keys in self.key_sets.values())

    async def verify(self, token: str) -> Principal:
        """The caller a JWT proves, fetching its issuer's keys if need be (within the fetch
        timeout); Unauthenticated names the check that failed."""
        issuer, algorithm, kid = self._claimed(token)
        try:
            keys = await self.key_sets[issuer.issuer].find(kid)
        except JwksUnavailable:
            raise _refused(issuer.issuer, "jwks") from None
        return self._verified(token, issuer, algorithm, keys)

    def verify_cached(self, token: str) -> Principal:
        """The same with the keys already held, for callers that cannot wait."""
        issuer, algorithm, kid = self._claimed(token)
        return self._verified(token, issuer, algorithm, self.key_sets[issuer.issuer].cached(kid))

    def _claimed(self, token: str) -> tuple[Issuer, str, str | None]:
        """The issuer, algorithm and key id the token claims, refused early when the issuer
        is unknown or the algorithm not allowed (so that neither can make us fetch)."""
        if len(token) > MAX_TOKEN_CHARS or token.count(".") != 2:
            raise _refused(None, "malformed")
        try:
            unverified = jwt.decode_complete(token, options=_UNVERIFIED)
        except jwt.PyJWTError:
            raise _refused(None, "malformed") from None
        header, claims = unverified["header"], unverified["payload"]
        claimed = claims.get("iss")
        if claimed is None:
            raise _missing(None, "iss")
        issuer = self.issuers.get(claimed) if isinstance(claimed, str) else None
        if issuer is None:
            raise _refused(str(claimed)[:200], "iss")
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in issuer.algorithms:
            raise _refused(issuer.issuer, "alg")
        if kid is not None and not isinstance(kid, str):
            raise _refused(issuer.issuer, "malformed")
        return issuer, algorithm, kid

    def _verified(
        self, token: str, issuer: Issuer, algorithm: str, keys: Sequence[Jwk]
    ) -> Principal:
        if not keys:
            raise _refused(issuer.issuer, "kid")
        fitting = [key for key in keys if fits(key, algorithm)]
        if not fitting:
            raise _refused(issuer.issuer, "alg")
        failed = "signature"
        for jwk in fitting:
            try:
                # Bound to the algorithm allowed above, which its key family fits.
                key = jwt.PyJWK(dict(jwk), algorithm=algorithm)
                claims = jwt.decode(
                    token,
                    key,
                    algorithms=[algorithm],
                    audience=list(issuer.audiences),
                    issuer=issuer.issuer,
                    leeway=issuer.leeway_seconds,
                    options={"require": REQUIRED_CLAIMS, "enforce_minimum_key_length": True},
                )
            except jwt.InvalidSignatureError:
                continue  # another key with this kid may have signed it
            except (jwt.InvalidKeyError, jwt.PyJWKError):
                failed = "key"
                continue
            except jwt.MissingRequiredClaimError as error:
                raise _missing(issuer.issuer, error.claim) from None
            except jwt.PyJWTError as error:
                raise _refused(issuer.issuer, _check(error)) from None
            return issuer.principal(claims)
        raise _refused(issuer.issuer, failed)


def _check(error: jwt.PyJWTError) -> str:
    """The check a PyJWT error after a good signature stands for."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "exp"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "iat" if "(iat)" in str(error) else "nbf"
    if isinstance(error, jwt.InvalidAudienceError):
        return "aud"
    if isinstance(error, jwt.InvalidIssuerError):
        return "iss"
    if isinstance(error, jwt.InvalidAlgorithmError):
        return "alg"
    return "claims"  # a claim of the wrong type (exp, nbf, iat, sub, jti)


def _refused(issuer: str | None, check: str, reason: str | None = None) -> Unauthenticated:
    # The issuer as claimed (trimmed when unknown) and the check: never the token.
    log.info("bearer token refused", extra={"issuer": issuer or "unknown", "check": check})
    return Unauthenticated(check, reason or REASONS[check])


def _missing(issuer: str | None, claim: str) -> Unauthenticated:
    reason = f"The bearer token lacks the required claim {claim} ({claim})."
    return _refused(issuer, f"claim {claim}", reason)
