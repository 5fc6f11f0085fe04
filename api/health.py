"""Health endpoints: /healthz (the process answers) and /readyz (it can do its work)."""

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.context import Services

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
        await asyncio.wait_for(services.database.ping(), READY_TIMEOUT)
    except Exception as error:
        report |= {"status": "unavailable", "database": type(error).__name__}
        return JSONResponse(report, status_code=503)
    degraded = not bus.connected or identities.degraded
    return JSONResponse({"status": "degraded" if degraded else "ok", "database": "ok", **report})
