"""The overload scenario's open-loop load: requests sent at a fixed rate whatever the answers.

wrk waits for each answer before it sends the next request on a connection, so it can never
offer more than the server answers. Overload needs arrivals that do not slow down: this sends
one request every 1/rate seconds on an idle keep-alive connection (opening another, up to
`MAX_CONNECTIONS`, when none is idle), and records when each was sent, how long its answer
took and its status. Run as `python -m bench.overload URL BODY_FILE PHASES_JSON`: the phases
are [[name, rate, seconds], ...], run one after another; it prints one JSON object.
"""

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

MAX_CONNECTIONS = 512
TICK = 0.002


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection answering one request at a time."""

    def __init__(self, idle: list["_Connection"], record: Any) -> None:
        self.idle = idle
        self.record = record
        self.transport: Any = None
        self.buffer = b""
        self.sent_at = 0.0
        self.phase = ""
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport instances

    def send(self, request: bytes, phase: str) -> None:
        self.sent_at = time.perf_counter()
        self.phase = phase
        self.transport.write(request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head, separator, rest = self.buffer.partition(b"\r\n\r\n")
        if not separator:
            return
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(rest) < length:
            return
        self.buffer = rest[length:]
        status = int(head.split(b" ", 2)[1])
        self.record(self.phase, self.sent_at, time.perf_counter() - self.sent_at, status)
        self.sent_at = 0.0
        self.idle.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.sent_at:
            self.record(self.phase, self.sent_at, time.perf_counter() - self.sent_at, 0)


async def drive(url: str, body: bytes, phases: list[tuple[str, float, float]]) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"POST /graphql HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []
    opened: list[_Connection] = []
    answers: list[tuple[str, float, float, int]] = []
    unsent: dict[str, int] = {}
    started = time.perf_counter()

    def record(phase: str, sent_at: float, seconds: float, status: int) -> None:
        answers.append((phase, sent_at - started, seconds, status))

    async def connection() -> _Connection | None:
        if len(opened) >= MAX_CONNECTIONS:
            return None
        _, protocol = await loop.create_connection(
            lambda: _Connection(idle, record), host, int(port)
        )
        opened.append(protocol)
        return protocol

    async def send(phase: str) -> None:
        while idle and idle[-1].closed:
            idle.pop()
        chosen = idle.pop() if idle else await connection()
        if chosen is None:
            unsent[phase] = unsent.get(phase, 0) + 1
        else:
            chosen.send(request, phase)

    pending: set[asyncio.Task[None]] = set()
    for phase, rate, seconds in phases:
        begun = time.perf_counter()
        due = 0
        while (elapsed := time.perf_counter() - begun) < seconds:
            target = int(elapsed * rate)
            while due < target:
                due += 1
                if idle:
                    await send(phase)
                else:
                    task = asyncio.create_task(send(phase))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
            await asyncio.sleep(TICK)
    await asyncio.sleep(2)  # the last answers
    for protocol in opened:
        if protocol.transport is not None:
            protocol.transport.close()
    return {"answers": answers, "unsent": unsent, "connections": len(opened)}


def main() -> None:
    url, body_file, phases = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    import uvloop

    outcome = uvloop.run(drive(url, body_file.read_bytes(), [tuple(p) for p in phases]))
    print(json.dumps(outcome))


if __name__ == "__main__":
    main()
