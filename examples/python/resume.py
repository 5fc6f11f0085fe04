"""Follow session events with gql over WebSocket, resuming by cursor after any disconnect."""

# Usage: python examples/python/resume.py [--url http://127.0.0.1:8000/graphql]
#            [--data-source car-44] [--after CURSOR] [--count N]   (token: SESSION_SERVICE_TOKEN)
#
# One JSON line per event on stdout; what the follower does on stderr. It takes a snapshot
# (live sessions and a cursor), subscribes with after: that cursor, keeps the cursor of every
# event it prints, and after a disconnect subscribes again with after: the last one, so no event
# is missed or printed twice. CURSOR_EXPIRED (the cursor is older than the event retention)
# means: take a new snapshot.

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys

from gql import Client, GraphQLRequest
from gql.client import AsyncClientSession
from gql.transport.exceptions import TransportError, TransportQueryError
from gql.transport.websockets import WebsocketsTransport
from websockets.exceptions import WebSocketException

SNAPSHOT = """
query Snapshot($dataSource: String) {
  sessionSnapshot(dataSource: $dataSource) { cursor sessions { key identifier } }
}"""

EVENTS = """
subscription Events($dataSource: String, $after: String) {
  sessionEvents(dataSource: $dataSource, after: $after) {
    cursor kind sessionKey dataSource occurredAt
    session { identifier status }
  }
}"""

DISCONNECTED = (TransportError, OSError, TimeoutError, WebSocketException)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Follower:
    def __init__(self, url: str, data_source: str | None, token: str | None, count: int) -> None:
        self.url = url.replace("http://", "ws://").replace("https://", "wss://")
        self.data_source = data_source
        self.token = token
        self.remaining = count  # events still to print; negative: no end
        self.cursor: str | None = None

    def transport(self) -> WebsocketsTransport:
        return WebsocketsTransport(
            url=self.url,
            init_payload={"authorization": f"Bearer {self.token}"} if self.token else {},
            subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
            # Our own pings notice a connection that died without closing.
            ping_interval=10,
            pong_timeout=10,
        )

    async def snapshot(self, session: AsyncClientSession) -> None:
        request = GraphQLRequest(SNAPSHOT, variable_values={"dataSource": self.data_source})
        result = (await session.execute(request))["sessionSnapshot"]
        self.cursor = result["cursor"]
        say(f"snapshot: {len(result['sessions'])} live sessions, cursor {self.cursor}")

    async def follow(self, session: AsyncClientSession) -> None:
        """Prints events after self.cursor until the count is reached or the stream ends."""
        variables = {"dataSource": self.data_source, "after": self.cursor}
        say(f"subscribing after cursor {self.cursor}")
        async for data in session.subscribe(GraphQLRequest(EVENTS, variable_values=variables)):
            event = data["sessionEvents"]
            session_state = event.pop("session") or {}
            print(json.dumps({**event, **session_state}), flush=True)
            self.cursor = event["cursor"]
            self.remaining -= 1
            if self.remaining == 0:
                return

    async def run(self) -> None:
        attempt = 0
        while self.remaining != 0:
            try:
                async with Client(transport=self.transport()) as session:
                    attempt = 0
                    if self.cursor is None:
                        await self.snapshot(session)
                    await self.follow(session)
            except TransportQueryError as error:
                codes = [(e.get("extensions") or {}).get("code") for e in error.errors or []]
                if "CURSOR_EXPIRED" not in codes:
                    raise  # FORBIDDEN, VALIDATION...: retrying would not help
                say(f"cursor {self.cursor} has expired: taking a new snapshot")
                self.cursor = None
            except DISCONNECTED as error:
                delay = min(5.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.0)
                attempt += 1
                say(f"disconnected ({type(error).__name__}): resuming in {delay:.1f} s")
                await asyncio.sleep(delay)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:8000/graphql")
    parser.add_argument("--data-source", help="only this data source's events")
    parser.add_argument("--after", help="start after this cursor instead of a snapshot")
    parser.add_argument("--count", type=int, default=-1, help="exit after this many events")
    arguments = parser.parse_args()
    follower = Follower(
        arguments.url,
        arguments.data_source,
        os.environ.get("SESSION_SERVICE_TOKEN"),
        arguments.count,
    )
    follower.cursor = arguments.after
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follower.run())


if __name__ == "__main__":
    main()
