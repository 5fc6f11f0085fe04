"""Health endpoints: /healthz (the process answers) and /readyz (it can do its work)."""

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.context import Services
from models.database import deadline

READY_TIMEOUT = 2.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready while the database answers. The bus and the issuers' key sets are reported but do
    not decide: without the bus, events still flow through the hubs' periodic log reads, only
    later; without a provider, configured tokens and tokens whose keys are cached still work."""
    services: Services = request.app.state.services
    bus = services.hub.bus
    identities = services.authenticator.identities
    report: dict[str, Any] = {"bus": "connected" if bus.connected else "reconnecting"}
    if identities.issuers:
        report["issuers"] = identities.report()
    try:
        # A deadline, not a cancellation: cancelling a statement a paused database never answers
        # left the probe waiting on the cancel request (models/database.py).
        with deadline(READY_TIMEOUT):
            await services.database.ping()
    except Exception as error:
        report |= {"status": "unavailable", "database": type(error).__name__}
        return JSONResponse(report, status_code=503)
    degraded = not bus.connected or identities.degraded
    return JSONResponse({"status": "degraded" if degraded else "ok", "database": "ok", **report})
