"""The /dashboard page: live sessions from a snapshot and sessionEvents, plain HTML and JS."""

import os
from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import PathLike, StaticFiles
from starlette.types import Scope

STATIC = Path(__file__).parent / "static" / "dashboard"

# Everything comes from this service: a stray external URL fails in the browser, not silently.
SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
HEADERS = {"content-security-policy": SECURITY_POLICY, "cache-control": "no-cache"}


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers=HEADERS)


class _Assets(StaticFiles):
    """The page's scripts and styles, revalidated on every load so an upgrade shows at once."""

    def file_response(
        self, full_path: PathLike, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(HEADERS)
        return response


DASHBOARD_ROUTES: list[BaseRoute] = [
    Route("/dashboard", page, methods=["GET", "HEAD"]),
    Mount("/dashboard/assets", _Assets(directory=STATIC), name="dashboard-assets"),
]
