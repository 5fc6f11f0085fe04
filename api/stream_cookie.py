"""The stream cookie: how a browser's `EventSource`, which cannot send an Authorization header,
subscribes without a token in its URL.

An authenticated `POST /graphql/stream-cookie` answers with an HttpOnly, SameSite=Strict cookie
holding the caller's role, data sources and expiry, signed with HMAC-SHA256. Only GET requests
for `text/event-stream` accept it (nothing that writes), and the browser sends it again on
every reconnect, where a single-use ticket in the URL would make `EventSource`'s own reconnect
(the one that carries `Last-Event-ID`) fail.
"""

import base64
import hashlib
import hmac
import json
import secrets
import time

from starlette.requests import Request
from starlette.responses import Response

from api.auth import Unauthenticated
from api.config import Settings
from api.limits import error_body
from api.principal import Principal, Role

NAME = "session_service_stream"
PATH = "/graphql"


def _encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class StreamCookies:
    """Makes and checks stream cookies with one key (the setting, or a random one)."""

    def __init__(self, settings: Settings) -> None:
        secret = settings.stream_cookie_secret or secrets.token_urlsafe(32)
        self.key = hashlib.sha256(b"stream-cookie:" + secret.encode()).digest()
        self.lifetime = settings.stream_cookie_seconds

    def make(self, principal: Principal, now: float) -> tuple[str, float]:
        """The cookie's value and its expiry: the setting's lifetime, or the token's if sooner."""
        expires = now + self.lifetime
        if principal.expires_at is not None:
            expires = min(expires, principal.expires_at)
        scope = None if principal.data_sources is None else sorted(principal.data_sources)
        claims = {"r": int(principal.role), "s": scope, "n": principal.name, "x": expires}
        body = _encode(json.dumps(claims, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}", expires

    def principal(self, value: str, now: float) -> Principal:
        """Who the cookie proves the caller is; Unauthenticated when it proves nothing."""
        body, _, signature = value.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            raise Unauthenticated("stream-cookie", "The stream cookie is not valid here.")
        claims = json.loads(_decode(body))
        if claims["x"] <= now:
            raise Unauthenticated("stream-cookie", "The stream cookie has expired.")
        scope = claims["s"]
        return Principal(
            Role(claims["r"]),
            None if scope is None else frozenset(scope),
            name=claims["n"],
            expires_at=claims["x"],
        )

    def _sign(self, body: str) -> str:
        return _encode(hmac.new(self.key, body.encode(), hashlib.sha256).digest())


async def stream_cookie_endpoint(request: Request) -> Response:
    """POST: the caller's bearer token exchanged for a stream cookie; DELETE: the cookie gone."""
    response = Response(status_code=204)
    if request.method == "DELETE":
        response.delete_cookie(NAME, path=PATH, httponly=True, samesite="strict")
        return response
    services = request.app.state.services
    try:
        principal = await services.authenticator.identify(request.headers.get("authorization"))
    except Unauthenticated as refused:
        body = json.dumps(error_body("UNAUTHENTICATED", refused.reason))
        return Response(
            body, 401, headers={"www-authenticate": "Bearer"}, media_type="application/json"
        )
    now = time.time()
    value, expires = services.stream_cookies.make(principal, now)
    response.set_cookie(
        NAME,
        value,
        max_age=max(0, int(expires - now)),
        path=PATH,
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return response
