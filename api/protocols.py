"""uvicorn's HTTP and WebSocket protocols, without the reference cycles they leave behind a
connection: the served app collects cycles rarely (api/app.py), and under churn the closed
connections' protocol objects, parsers, buffers and transports piled up until it did."""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol


class HttpProtocol(HttpToolsProtocol):
    def handle_websocket_upgrade(self) -> None:
        super().handle_websocket_upgrade()
        # The parser calls back into this protocol, which holds it. uvicorn lets it go when
        # the connection is lost, but an upgraded connection is no longer this protocol's.
        self.parser = None  # type: ignore[assignment]


class WebSocketProtocol(WebSocketsSansIOProtocol):
    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        # websockets' parser is a generator suspended inside its protocol, which holds it; it
        # would finish only at an EOF, which uvicorn does not pass on. Nothing parses any more.
        self.conn.parser.close()
