"""GraphiQL on assets the set-up installs from npm, so the playground works offline."""

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from api.config import Settings

STATIC = Path(__file__).parent / "static" / "graphiql"
MODULES = STATIC / "node_modules"

# Only these files are served: node_modules holds far more than the page needs. pyproject.toml's
# package-data names each, so that a wheel carries them.
ASSETS: dict[str, Path] = {
    "react.production.min.js": MODULES / "react" / "umd" / "react.production.min.js",
    "react-dom.production.min.js": MODULES / "react-dom" / "umd" / "react-dom.production.min.js",
    "graphiql.min.js": MODULES / "graphiql" / "graphiql.min.js",
    "graphiql.min.css": MODULES / "graphiql" / "graphiql.min.css",
    "graphql-ws.min.js": MODULES / "graphql-ws" / "umd" / "graphql-ws.min.js",
    "graphiql.js": STATIC / "graphiql.js",
}

# GraphiQL styles elements inline and embeds its fonts as data: URLs; nothing else is allowed
# to load from anywhere but this service.
SECURITY_POLICY = (
    "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
)


def assets_installed() -> bool:
    return all(path.is_file() for path in ASSETS.values())


def graphiql_page() -> HTMLResponse | None:
    """Our GraphiQL page, or None when `npm ci` has not installed its assets."""
    if not assets_installed():
        return None
    html = (STATIC / "index.html").read_text(encoding="utf-8")
    return HTMLResponse(html, headers={"content-security-policy": SECURITY_POLICY})


async def asset(request: Request) -> Response:
    path = ASSETS.get(request.path_params["name"])
    if path is None or not path.is_file():
        return PlainTextResponse("Not Found", status_code=404)
    # Revalidated by ETag, so an upgraded package is picked up without a versioned name.
    return FileResponse(path, headers={"cache-control": "no-cache"})


def graphiql_routes(settings: Settings) -> list[BaseRoute]:
    """The asset routes, in the development profile only (production has no GraphiQL)."""
    return [Route("/graphiql/assets/{name}", asset)] if settings.development else []
