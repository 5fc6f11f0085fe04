"""An issuer's signing keys: those its configuration gives, and those of its JWKS URL, fetched
without blocking, cached, refreshed, and refetched for an unknown `kid` at most once per
interval, however many requests miss at once."""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

log = logging.getLogger(__name__)

# The longest any fetch may take, connecting and reading included: no request waits longer.
FETCH_TIMEOUT = 3.0
MAX_JWKS_BYTES = 1 << 20
# Enough for any provider's overlapping keys, few enough that a token without a kid, tried
# against each, costs little.
MAX_KEYS = 32
# Key types a JWKS URL may supply; an HMAC secret (`oct`) only ever comes from the configuration.
FETCHED_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})

Jwk = Mapping[str, Any]


class JwksUnavailable(Exception):
    """No key set could be fetched: the provider is down, slow or answered nonsense."""


class KeySet:
    def __init__(
        self,
        issuer: str,
        url: str | None,
        given: Sequence[Jwk],
        client: httpx.AsyncClient | None,
        *,
        refresh_seconds: float,
        refetch_seconds: float,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:
        self.issuer = issuer
        self.url = url
        self.given = tuple(given)
        self.client = client
        self.refresh_seconds = refresh_seconds
        self.refetch_seconds = refetch_seconds
        self.timeout = timeout
        self.fetched: tuple[Jwk, ...] = ()
        # Monotonic times of the last successful fetch and of the last attempt's start.
        self.fetched_at: float | None = None
        self.attempted_at: float | None = None
        # Why the last attempt failed (an exception's name or "HTTP 503"), or None.
        self.error: str | None = None
        self._fetching: asyncio.Task[None] | None = None

    def cached(self, kid: str | None) -> list[Jwk]:
        """The keys held for `kid`: those that name it, else those that name no kid; every
        key for a token that names none."""
        keys = self.given + self.fetched
        if kid is None:
            return list(keys)
        return [key for key in keys if key.get("kid") == kid] or [
            key for key in keys if "kid" not in key
        ]

    async def find(self, kid: str | None) -> list[Jwk]:
        """The keys for `kid`, fetched when none is held and the last attempt is old enough
        (or still under way): a first token waits for the first fetch, a flood of unknown
        kids causes one fetch per interval. JwksUnavailable when the fetch failed."""
        if (found := self.cached(kid)) or self.url is None:
            return found
        if self._fetching is not None or self._may_fetch():
            await self.refresh()
            found = self.cached(kid)
        if not found and self.error is not None:
            raise JwksUnavailable(self.error)
        return found

    def _may_fetch(self) -> bool:
        return (
            self.attempted_at is None
            or time.monotonic() - self.attempted_at >= self.refetch_seconds
        )

    async def refresh(self) -> None:
        """Fetch the key set, or join the fetch under way; failures are kept in `error`."""
        if self.url is None:
            return
        if self._fetching is None:
            self._fetching = asyncio.create_task(self._fetch(self.url))
        # Shielded: a request that gives up must not cancel the fetch others wait on.
        await asyncio.shield(self._fetching)

    async def cancel(self) -> None:
        """End a fetch under way (at shutdown, before the client closes)."""
        if (fetching := self._fetching) is not None:
            fetching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await fetching

    async def keep_fresh(self) -> None:
        """Fetch now, then every refresh interval; after a failure sooner, backing off."""
        retry = self.refetch_seconds
        while True:
            await self.refresh()
            if self.error is None:
                retry = self.refetch_seconds
                await asyncio.sleep(self.refresh_seconds)
            else:
                await asyncio.sleep(retry)
                retry = min(retry * 2, max(self.refresh_seconds, self.refetch_seconds))

    async def _fetch(self, url: str) -> None:
        self.attempted_at = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                keys = await self._download(url)
        except (httpx.HTTPError, httpx.StreamError, TimeoutError, _Refused) as error:
            self.error = _why(error)
            log.warning(
                "cannot fetch the JWKS: cached keys kept",
                extra={"issuer": self.issuer, "reason": self.error, "cached": len(self.fetched)},
            )
        except Exception:
            # A fault of ours: logged with its cause, and the requests waiting get a refusal.
            self.error = "an internal error"
            log.exception("fetching the JWKS failed", extra={"issuer": self.issuer})
        else:
            self.fetched, self.fetched_at, self.error = keys, time.monotonic(), None
        finally:
            self._fetching = None

    async def _download(self, url: str) -> tuple[Jwk, ...]:
        assert self.client is not None  # every key set with a URL is given the client
        body = bytearray()
        async with self.client.stream("GET", url, headers={"accept": "application/json"}) as got:
            if got.status_code != 200:
                raise _Refused(f"HTTP {got.status_code}")
            async for chunk in got.aiter_bytes():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise _Refused("a JWKS larger than 1 MiB")
        try:
            document = json.loads(body)
        except ValueError:
            raise _Refused("a JWKS that is not JSON") from None
        keys = document.get("keys") if isinstance(document, dict) else None
        if not isinstance(keys, list):
            raise _Refused("a JWKS without a keys list")
        usable = tuple(
            dict(key)
            for key in keys
            if isinstance(key, dict) and key.get("kty") in FETCHED_KEY_TYPES
        )[:MAX_KEYS]
        if not usable:
            raise _Refused("a JWKS without signing keys")
        return usable

    def report(self) -> dict[str, Any]:
        """This key set's state, for /readyz."""
        report: dict[str, Any] = {"issuer": self.issuer, "jwks": self.state}
        if self.url is not None:
            report["keys"] = len(self.fetched)
            if self.fetched_at is not None:
                report["fetchedSecondsAgo"] = round(time.monotonic() - self.fetched_at, 1)
            if self.error is not None:
                report["error"] = self.error
        return report

    @property
    def state(self) -> str:
        """configured (no URL), pending (first fetch under way), ok, stale (the last fetch
        failed: cached keys still verify) or unavailable (no fetch has succeeded)."""
        if self.url is None:
            return "configured"
        if self.error is None:
            return "ok" if self.fetched_at is not None else "pending"
        return "stale" if self.fetched_at is not None else "unavailable"


class _Refused(Exception):
    """The provider answered, but not with a usable key set."""


def _why(error: Exception) -> str:
    """A failed fetch, in a few words for logs and /readyz."""
    if isinstance(error, _Refused):
        return str(error)
    if isinstance(error, TimeoutError | httpx.TimeoutException):
        return f"no answer within {FETCH_TIMEOUT:g} s"
    return type(error).__name__
