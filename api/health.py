"""Health endpoints: /healthz (the process answers) and /readyz (it can do its work)."""

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from api.context import Services

READY_TIMEOUT = 2.0


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    """Ready while the database answers. The bus is reported but does not decide: without it,
    events still flow through the hubs' periodic log reads, only later."""
    services: Services = request.app.state.services
    bus = services.hub.bus
    report = {"bus": "connected" if bus.connected else "reconnecting"}
    try:
        await asyncio.wait_for(services.database.ping(), READY_TIMEOUT)
    except Exception as error:
        report |= {"status": "unavailable", "database": type(error).__name__}
        return JSONResponse(report, status_code=503)
    return JSONResponse(
        {"status": "ok" if bus.connected else "degraded", "database": "ok", **report}
    )
