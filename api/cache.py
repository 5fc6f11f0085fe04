"""An exact response cache for queries: an answer is served again only while the data it was
made from is still the data.

Every change commits with a move of the data version (`event_log_state.version`: every write
use case, and the janitor's deletions, which record no event). A query's encoded answer is kept
with the version read before it was computed; a request first reads the version, one indexed
row, and is answered from the cache only when the entry's version is that version. A change
committed while an answer was being computed moves the version past the entry's, so a cached
answer is never older than the database, whichever instance wrote. Only answers without errors
are kept; the key is the document, the operation, the variables and who asks (role and scope).
"""

from collections import OrderedDict
from typing import Any

import orjson

from api.metrics import CACHE_EVICTIONS, CACHE_HITS, CACHE_MISSES
from api.principal import Principal

# What is asked (document, operation, variables), then who asks (role, scope).
Asked = tuple[str, str | None, bytes]
Key = tuple[str, str | None, bytes, Any, Any]


def asked(query: str, operation: str | None, variables: dict[str, Any] | None) -> Asked | None:
    """What a request asks, or None for variables that have no one encoding (not JSON-typed)."""
    try:
        encoded = orjson.dumps(variables or {}, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        return None
    return (query, operation, encoded)


def cache_key(question: Asked, caller: Principal) -> Key:
    return (*question, caller.role, caller.data_sources)


class Known:
    """Plain request bodies seen before, with what each asks and its operation's name: a body
    met again is answered from the cache without being decoded, checked or keyed afresh. The
    body's bytes say everything the key holds but the caller, which is added on each request.
    Bounded by count, oldest first out; long bodies are not kept."""

    MAX_BODIES = 1024
    MAX_BODY_BYTES = 4096

    def __init__(self) -> None:
        self._bodies: dict[bytes, tuple[Asked, str | None]] = {}

    def get(self, body: bytes) -> tuple[Asked, str | None] | None:
        return self._bodies.get(body)

    def add(self, body: bytes, question: Asked, name: str | None) -> None:
        if len(body) > self.MAX_BODY_BYTES or body in self._bodies:
            return
        if len(self._bodies) >= self.MAX_BODIES:
            del self._bodies[next(iter(self._bodies))]
        self._bodies[body] = (question, name)


class ResponseCache:
    """Encoded answers by key, with the data version each was made at; at most `max_bytes` of
    answers, the least recently used evicted first.

    Reading the version costs a round trip to the database, which only hits repay: while
    writes move the version faster than answers are asked for again, every lookup misses and
    the cache would make reads slower (bench/REPORT.md measured it with 50 writes a second).
    So the cache follows its recent hit rate and, below `WORTH_IT`, asks for the version on one
    request in `PROBE_EVERY` only, which notices when hits come back."""

    WORTH_IT = 0.25
    PROBE_EVERY = 64

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.hit_rate = 1.0  # a moving average over about the last 32 lookups
        self._requests = 0
        self._entries: OrderedDict[Key, tuple[int, bytes]] = OrderedDict()
        self.known = Known()

    def worth_asking(self) -> bool:
        """Whether this request should read the data version and use the cache."""
        self._requests += 1
        return self.hit_rate >= self.WORTH_IT or self._requests % self.PROBE_EVERY == 0

    def get(self, key: Key, version: int) -> bytes | None:
        found = self._entries.get(key)
        hit = found is not None and found[0] == version
        self.hit_rate += (hit - self.hit_rate) / 32
        if not hit:
            CACHE_MISSES.inc()
            return None
        assert found is not None
        self._entries.move_to_end(key)
        CACHE_HITS.inc()
        return found[1]

    def put(self, key: Key, version: int, body: bytes) -> None:
        if len(body) > self.max_bytes:
            return
        old = self._entries.pop(key, None)
        if old is not None:
            self.size -= len(old[1])
        self._entries[key] = (version, body)
        self.size += len(body)
        while self.size > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.size -= len(evicted)
            CACHE_EVICTIONS.inc()
