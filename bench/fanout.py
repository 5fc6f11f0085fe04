"""The fan-out group of the benchmark (issue 13): graphql-transport-ws subscribers against a raw
Starlette loop writing one pre-encoded frame to every socket, side by side.

Method. Servers run on core 0 (bench/run.py's `serve`), the load on core 1: the subscribers
live in client processes (`python -m bench.fanout client`), each one asyncio loop on uvloop
whose connections are bare `asyncio.Protocol`s speaking just enough WebSocket (an upgrade,
unmasked server frames in, masked frames with a zero key out, pongs): a few µs of client CPU
per frame, so that the client is never the bottleneck of the raw side (each run prints the
clients' CPU per frame). A process holds at most 10,000 sockets (RLIMIT_NOFILE's hard limit
here is 20,000); 20,000 subscribers use two. The mutations come from this process, so their
timing is not disturbed by the clients' work.

Every run: start the server, warm it up, time createSession (raw: publish) with no subscriber at
the pace the events will come, open the subscribers (service: connection_init, subscribe to
`sessionStarted`, ping, pong), deliver a sentinel event to all of them (so every subscription is
known to be live), read the server's RSS (memory per idle subscription), then create sessions
(raw: POST /publish of the same-sized `next` frame) a fixed interval apart, each timed from the
mutation's response to its arrival at the last subscriber, with the server's CPU time (/proc,
every thread) over the events divided by the frames delivered. Service and raw runs alternate.

Churn and `serve --workers 2` have targets of their own: churn's is absolute (the raw loop
goes through the same churn, and its growth is reported beside it), `--workers 2`'s against the
service's one-process figure.
"""

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx

from bench.run import (
    CORES,
    LOAD_CPU,
    PYTHON,
    ROOT,
    Result,
    Running,
    _cell,
    _met,
    environment,
    progress,
    raw_command,
    serve,
    service_command,
)

HEADING = "## Fan-out"
SUBSCRIPTION = (
    'subscription { sessionStarted(dataSource: "bench") { cursor kind sessionKey occurredAt } }'
)
CREATE = """mutation Create($input: CreateSessionInput!) { createSession(input: $input) {
  ... on SessionCreated { session { key } } } }"""
CREATE_BODY = {"query": CREATE, "variables": {"input": {"dataSource": "bench"}}}
# What the raw loop publishes: a `next` frame of the service's shape and size.
RAW_FRAME = (
    '{"id":"1","type":"next","payload":{"data":{"sessionStarted":{"cursor":"%s","kind":'
    '"STARTED","sessionKey":"00000000-0000-4000-8000-%012d","occurredAt":'
    '"2026-01-01T00:00:00.000000+00:00"}}}}'
)
NEXT = b'{"id":"1","type":"next"'
PER_CLIENT = 10_000
# Events of a run: (subscribers, events, seconds apart), as issue 13 measured them.
SCHEDULE = {1000: (20, 0.5), 10_000: (10, 1.0)}
EVENT_TIMEOUT = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("fan-out")
    group.add_argument("--subscribers", type=int, nargs="+", default=[1000, 10_000])
    group.add_argument("--fan-out-runs", type=int, default=2, help="alternating runs per side")
    group.add_argument(
        "--fan-out-events",
        type=int,
        default=0,
        help="events per run (default: 20 at 1,000 subscribers, 10 above)",
    )
    group.add_argument("--churn-seconds", type=int, default=60)
    group.add_argument("--churn-steady", type=int, default=1000)
    group.add_argument(
        "--churn-rate", type=int, default=200, help="subscribes (and disconnects) /s"
    )
    group.add_argument("--workers-subscribers", type=int, default=20_000)
    group.add_argument(
        "--worker-cores", default="0,1", help="cores of the two workers of the --workers 2 run"
    )


# The client side: runs in its own process on the load core.


def _frame(opcode: int, payload: bytes) -> bytes:
    """A client frame: final, masked with a zero key (legal, and the payload stays as is)."""
    length = len(payload)
    if length < 126:
        head = bytes((0x80 | opcode, 0x80 | length))
    elif length < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


class Socket(asyncio.Protocol):
    """One client WebSocket: frames go to `on_text` as they are parsed, nothing queued."""

    def __init__(self, request: bytes, on_text: Callable[["Socket", bytes], None]) -> None:
        self.request = request
        self.on_text = on_text
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.received = 0
        self.cursors: list[str] | None = None
        self.waiter: asyncio.Future[bytes] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)
        if not self.upgraded.done():
            self.upgraded.set_exception(ConnectionError("closed before the upgrade"))
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError(f"closed ({self.close_code})"))

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        if not self.upgraded.done():
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if b" 101 " not in buffer[: buffer.find(b"\r\n")]:
                self.upgraded.set_exception(ConnectionError(bytes(buffer[:end]).decode()))
                return
            del buffer[: end + 4]
            self.upgraded.set_result(None)
        position, size = 0, len(buffer)
        while size - position >= 2:
            length, head = buffer[position + 1] & 0x7F, 2
            if length == 126:
                if size - position < 4:
                    break
                length, head = int.from_bytes(buffer[position + 2 : position + 4], "big"), 4
            elif length == 127:
                if size - position < 10:
                    break
                length, head = int.from_bytes(buffer[position + 2 : position + 10], "big"), 10
            if size - position < head + length:
                break
            opcode = buffer[position] & 0x0F
            payload = bytes(buffer[position + head : position + head + length])
            position += head + length
            if opcode == 1:
                if self.waiter is not None and not self.waiter.done():
                    self.waiter.set_result(payload)
                else:
                    self.on_text(self, payload)
            elif opcode == 9:
                self.write(_frame(0xA, payload))
            elif opcode == 8:
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) > 1 else 1005
                self.write(_frame(0x8, payload[:2]))
                assert self.transport is not None
                self.transport.close()
        del buffer[:position]

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def send(self, message: dict[str, Any]) -> None:
        self.write(_frame(0x1, json.dumps(message).encode()))

    async def reply(self, message: dict[str, Any], timeout: float = 60) -> bytes:
        self.waiter = asyncio.get_running_loop().create_future()
        self.send(message)
        try:
            async with asyncio.timeout(timeout):
                return await self.waiter
        finally:
            self.waiter = None

    def close(self, graceful: bool = True) -> None:
        if graceful:
            self.write(_frame(0x8, (1000).to_bytes(2, "big")))
        if self.transport is not None:
            self.transport.close()


class Load:
    """A client process's subscribers, counting every frame by its index on its socket."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        port = int(config["url"].rsplit(":", 1)[1])
        self.port = port
        service = config["kind"] == "service"
        protocol = b"Sec-WebSocket-Protocol: graphql-transport-ws\r\n" if service else b""
        self.request = (
            (
                b"GET " + (b"/graphql" if service else b"/ws") + b" HTTP/1.1\r\n"
                b"Host: 127.0.0.1:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                % port
            )
            + protocol
            + b"\r\n"
        )
        self.service = service
        self.steady: list[Socket] = []
        self.counts: list[int] = []
        self.bad = 0
        self.churned = 0
        self.churn_failures = 0

    def counted(self, socket: Socket, payload: bytes) -> None:
        index = socket.received
        socket.received = index + 1
        if not payload.startswith(NEXT):
            self.bad += 1
            return
        if socket.cursors is not None:
            socket.cursors.append(
                json.loads(payload)["payload"]["data"]["sessionStarted"]["cursor"]
            )
        counts = self.counts
        while len(counts) <= index:
            counts.append(0)
        counts[index] += 1
        if counts[index] == len(self.steady):
            print(json.dumps({"event": index, "last": time.time()}), flush=True)

    def churner_frame(self, socket: Socket, payload: bytes) -> None:
        if not payload.startswith(NEXT):
            self.bad += 1

    async def open(self, on_text: Callable[[Socket, bytes], None]) -> Socket:
        loop = asyncio.get_running_loop()
        _, socket = await loop.create_connection(
            lambda: Socket(self.request, on_text), "127.0.0.1", self.port
        )
        await socket.upgraded
        if self.service:
            await socket.reply({"type": "connection_init"})
            socket.send({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}})
            # Messages are handled in order: the pong says the subscribe has been taken.
            await socket.reply({"type": "ping"})
        return socket

    async def connect(self, count: int) -> None:
        window = asyncio.Semaphore(64)

        async def one() -> Socket:
            async with window:
                socket = await self.open(self.counted)
                if self.config.get("cursors"):
                    socket.cursors = []
                return socket

        self.steady = list(await asyncio.gather(*(one() for _ in range(count))))

    async def churn(self, seconds: float, rate: int) -> None:
        """`rate` subscribes a second, each closed a second later (half with a close frame,
        half dropped): after the first second, as many disconnects a second."""
        tasks: set[asyncio.Task[None]] = set()

        async def one(number: int) -> None:
            try:
                socket = await self.open(self.churner_frame)
                await asyncio.sleep(1.0)
                socket.close(graceful=number % 2 == 0)
                self.churned += 1
            except (ConnectionError, OSError, TimeoutError):
                self.churn_failures += 1

        started = time.monotonic()
        for number in range(int(seconds * rate)):
            await asyncio.sleep(max(0.0, started + number / rate - time.monotonic()))
            task = asyncio.create_task(one(number))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*list(tasks))

    def stats(self) -> dict[str, Any]:
        closes: dict[str, int] = {}
        for socket in self.steady:
            if socket.close_code is not None:
                closes[str(socket.close_code)] = closes.get(str(socket.close_code), 0) + 1
        found: dict[str, Any] = {
            "received": sorted({s.received for s in self.steady}),
            "bad": self.bad,
            "closes": closes,
            "cpu": time.process_time(),
            "churned": self.churned,
            "churn_failures": self.churn_failures,
        }
        if self.config.get("cursors"):
            sequences = {tuple(s.cursors or ()) for s in self.steady}
            first = next(iter(sequences)) if sequences else ()
            found["sequences"] = len(sequences)
            found["ordered"] = all(
                list(map(int, seq)) == sorted(set(map(int, seq))) for seq in sequences
            )
            found["events"] = len(first)
        return found


async def _client(config: dict[str, Any]) -> None:
    load = Load(config)
    await load.connect(config["count"])
    print(json.dumps({"ready": len(load.steady)}), flush=True)
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().split():
        if line[0] == "churn":
            await load.churn(float(line[1]), int(line[2]))
            print(json.dumps({"churned": load.churned}), flush=True)
        elif line[0] == "stats":
            print(json.dumps(load.stats()), flush=True)
        elif line[0] == "close":
            for socket in load.steady:
                socket.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10):
                    await asyncio.gather(*(s.closed for s in load.steady))
            return


def client_main(config: dict[str, Any]) -> None:
    import uvloop

    uvloop.run(_client(config))


# The orchestrating side.


class Client:
    """A client process on the load core, driven by lines on its stdin and stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.events: dict[int, float] = {}
        self.replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reading = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, config: dict[str, Any]) -> "Client":
        process = await asyncio.create_subprocess_exec(
            "taskset",
            "-c",
            LOAD_CPU,
            PYTHON,
            "-m",
            "bench.fanout",
            "client",
            json.dumps(config),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return cls(process)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            if "event" in message:
                self.events[message["event"]] = message["last"]
            else:
                await self.replies.put(message)

    async def ask(self, command: str, timeout: float = 120) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(command.encode() + b"\n")
        await self.process.stdin.drain()
        return await self.reply(timeout)

    async def reply(self, timeout: float = 300) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await self.replies.get()

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError):
            assert self.process.stdin is not None
            self.process.stdin.write(b"close\n")
            await self.process.stdin.drain()
        try:
            async with asyncio.timeout(20):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self.reading.cancel()


async def _clients(url: str, kind: str, count: int, **extra: Any) -> list[Client]:
    sizes = [min(PER_CLIENT, count - start) for start in range(0, count, PER_CLIENT)]
    clients = [await Client.start({"url": url, "kind": kind, "count": n, **extra}) for n in sizes]
    for client in clients:
        reply = await client.reply()
        if reply.get("ready") is None:
            raise RuntimeError(f"a client did not connect: {reply}")
    return clients


async def _all_received(clients: Sequence[Client], index: int, timeout: float) -> float | None:
    """When the last subscriber got frame `index`, or None if not within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(index in c.events for c in clients):
            return max(c.events[index] for c in clients)
        await asyncio.sleep(0.002)
    return None


class Sender:
    """Sends one event the way its side does: createSession, or the raw loop's publish."""

    def __init__(self, http: httpx.AsyncClient, raw: bool) -> None:
        self.http, self.raw, self.sent = http, raw, 0

    async def send(self) -> tuple[float, float]:
        """(request sent, response received), wall-clock."""
        self.sent += 1
        started = time.time()
        if self.raw:
            response = await self.http.post("/publish", content=RAW_FRAME % (self.sent, self.sent))
        else:
            response = await self.http.post("/graphql", json=CREATE_BODY)
        answered = time.time()
        response.raise_for_status()
        if not self.raw and b'"session":{"key"' not in response.content:
            raise RuntimeError(f"createSession failed: {response.text}")
        return started, answered


@dataclass
class Run:
    latencies: list[float] = field(default_factory=list)
    idle_kb: float = 0.0
    cpu_per_message: float = 0.0
    mutation_alone: list[float] = field(default_factory=list)
    mutation_loaded: list[float] = field(default_factory=list)
    missing: int = 0
    client_cpu_per_frame: float = 0.0


async def _measure(
    servers: Sequence[Running], raw: bool, subscribers: int, events: int, interval: float
) -> Run:
    """One run against running servers (several: the workers of one server share its port)."""
    server = servers[0]
    run = Run()
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        sender = Sender(http, raw)
        for _ in range(5):  # warm up
            await sender.send()
        # The mutation's latency alone, at the loaded run's pace: a mutation after a second of
        # quiet is slower than one of a quick series (cold caches, an idle core).
        for _ in range(events):
            started, answered = await sender.send()
            run.mutation_alone.append(answered - started)
            await asyncio.sleep(interval)
        rss_before = sum(s.rss_mb() for s in servers)
        clients = await _clients(server.url, "raw" if raw else "service", subscribers)
        try:
            await sender.send()  # the sentinel: every subscription is live once it is in
            if await _all_received(clients, 0, EVENT_TIMEOUT) is None:
                raise RuntimeError("the sentinel did not reach every subscriber")
            await asyncio.sleep(0.5)
            run.idle_kb = (sum(s.rss_mb() for s in servers) - rss_before) * 1024 / subscribers
            cpu_before = sum(s.cpu_seconds() for s in servers)
            client_before = [(await c.ask("stats"))["cpu"] for c in clients]
            next_at = time.monotonic()
            for index in range(1, events + 1):
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                next_at += interval
                started, answered = await sender.send()
                run.mutation_loaded.append(answered - started)
                last = await _all_received(clients, index, EVENT_TIMEOUT)
                if last is None:
                    run.missing += 1
                    continue
                run.latencies.append(last - answered)
            run.cpu_per_message = (sum(s.cpu_seconds() for s in servers) - cpu_before) / (
                subscribers * events
            )
            stats = [await c.ask("stats") for c in clients]
            client_cpu = sum(s["cpu"] - b for s, b in zip(stats, client_before, strict=True))
            run.client_cpu_per_frame = client_cpu / (subscribers * events)
            for found in stats:
                if found["bad"] or found["closes"] or found["received"] != [events + 1]:
                    raise RuntimeError(f"subscribers did not get every event once: {found}")
        finally:
            for client in clients:
                await client.close()
    return run


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(len(ordered) * fraction + 0.5) - 1))]


def _raise_file_limit() -> None:
    """As many descriptors as allowed: the servers and clients started here inherit it."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _errors_in(log: Path) -> list[str]:
    text = log.read_text(errors="replace")
    return [line for line in text.splitlines() if re.search(r"\bERROR\b|Traceback", line)]


def side_by_side(args: argparse.Namespace, env: dict[str, str]) -> tuple[list[Result], float]:
    """Latency, CPU, memory and the mutation's latency at each subscriber count; also the
    service's p50 at the largest (the --workers 2 run compares with it)."""
    results: list[Result] = []
    largest_p50 = 0.0
    for subscribers in args.subscribers:
        events, interval = SCHEDULE.get(subscribers, SCHEDULE[10_000])
        events = args.fan_out_events or events
        n = f"{subscribers:,}"
        large = subscribers >= 10_000
        p50 = _at_most(
            f"F1 p50 from the mutation's response to the last of {n} subscribers", "ms", 1.3
        )
        p99 = _at_most(
            f"F1 p99 from the mutation's response to the last of {n} subscribers",
            "ms",
            1.5 if large else None,
        )
        cpu = _at_most(f"F2 server CPU per delivered message, {n} subscribers", "µs", 1.3)
        idle = _at_most(f"F3 memory per idle subscription, {n} subscribers", "KB", 1.2)
        mutation = _at_most(
            f"F4 createSession's own latency with {n} subscribers open (Raw column: with none)",
            "ms",
            1.5 if large else None,
            versus="none",
        )
        for run_number in range(args.fan_out_runs):
            for raw in (False, True):
                side = "raw" if raw else "service"
                with serve(raw_command() if raw else service_command(), env) as server:
                    run = asyncio.run(_measure([server], raw, subscribers, events, interval))
                if run.missing:
                    raise RuntimeError(f"{side}: {run.missing} events did not reach everyone")
                values = [
                    (p50, statistics.median(run.latencies) * 1000),
                    (p99, _percentile(run.latencies, 0.99) * 1000),
                    (cpu, run.cpu_per_message * 1e6),
                    (idle, run.idle_kb),
                ]
                for result, value in values:
                    (result.baseline if raw else result.service).append(value)
                if not raw:
                    mutation.service.append(statistics.median(run.mutation_loaded) * 1000)
                    mutation.baseline.append(statistics.median(run.mutation_alone) * 1000)
                progress(
                    f"F {n} [{side} {run_number + 1}]: p50 {values[0][1]:.1f} ms, "
                    f"p99 {values[1][1]:.1f} ms, {values[2][1]:.1f} µs CPU/message, "
                    f"{run.idle_kb:.1f} KB/subscription, mutation "
                    f"{statistics.median(run.mutation_loaded) * 1000:.1f} ms loaded vs "
                    f"{statistics.median(run.mutation_alone) * 1000:.1f} ms alone; "
                    f"client {run.client_cpu_per_frame * 1e6:.1f} µs CPU/frame"
                )
        results += [p50, p99, cpu, idle]
        if not any(r.baseline == [] for r in (mutation,)):
            results.append(mutation)
        largest_p50 = statistics.median(p50.service)
    return results, largest_p50


@dataclass
class Churned:
    start_rss: float
    end_rss: float
    stats: dict[str, Any]
    sent: int
    open_now: float  # the subscriptions gauge after (the raw loop has none: -1)
    errors: list[str]

    @property
    def growth(self) -> float:
        return self.end_rss / self.start_rss - 1


def _churn_run(args: argparse.Namespace, env: dict[str, str], raw: bool) -> Churned:
    """Steady subscribers and churning ones while events flow, on one side."""
    seconds, rate, steady = args.churn_seconds, args.churn_rate, args.churn_steady

    async def measure(server: Running) -> Churned:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            sender = Sender(http, raw)
            for _ in range(5):
                await sender.send()
            kind = "raw" if raw else "service"
            clients = await _clients(server.url, kind, steady, cursors=True)
            client = clients[0]
            try:
                sender.sent = 0  # the raw loop's cursors count from the first event they see
                await sender.send()
                if await _all_received(clients, 0, EVENT_TIMEOUT) is None:
                    raise RuntimeError("the sentinel did not reach every steady subscriber")
                start_rss = server.rss_mb()
                assert client.process.stdin is not None
                client.process.stdin.write(f"churn {seconds} {rate}\n".encode())
                await client.process.stdin.drain()
                churning = asyncio.create_task(client.reply(seconds + 120))
                while not churning.done():
                    await sender.send()
                    await asyncio.sleep(0.2)
                await churning
                await asyncio.sleep(3)  # the last churners' closes
                stats = await client.ask("stats")
                open_now = -1.0 if raw else await _open_subscriptions(http)
                end_rss = server.rss_mb()
            finally:
                for each in clients:
                    await each.close()
        return Churned(start_rss, end_rss, stats, sender.sent, open_now, [])

    with serve(raw_command() if raw else service_command(), env) as server:
        churned = asyncio.run(measure(server))
        churned.errors = _errors_in(server.log)
    stats = churned.stats
    progress(
        f"F5 churn ({'raw' if raw else 'service'}): {stats['churned']:,} churners "
        f"({stats['churn_failures']} failed), {churned.sent} events, steady subscribers got "
        f"{stats['events']} each, identical {stats['sequences'] == 1}, ordered "
        f"{stats['ordered']}; RSS {churned.start_rss:.1f} -> {churned.end_rss:.1f} MB "
        f"({churned.growth:+.1%}); {churned.open_now:.0f} subscriptions open after (steady "
        f"{steady}); {len(churned.errors)} error lines in the log"
    )
    for line in churned.errors[:5]:
        progress(f"  log: {line}")
    return churned


def churn(args: argparse.Namespace, env: dict[str, str]) -> Result:
    """The service through the churn, and the raw loop through the same churn beside it: how
    much of the RSS a churn leaves is the stack's own."""
    seconds, rate, steady = args.churn_seconds, args.churn_rate, args.churn_steady
    raw = _churn_run(args, env, raw=True)
    service = _churn_run(args, env, raw=False)
    stats = service.stats
    correct = (
        stats["sequences"] == 1
        and stats["ordered"]
        and stats["events"] == service.sent
        and not stats["bad"]
        and not stats["closes"]
        and not service.errors
        and service.open_now == steady
    )
    name = (
        f"F5 churn, {rate} subscribes and {rate} disconnects/s for {seconds} s beside "
        f"{steady:,} steady subscribers, {service.sent} events: server RSS after vs before "
        f"(every steady subscriber got every event once, in order: "
        f"{'yes' if correct else 'NO'}; subscriptions gauge {service.open_now:.0f}; "
        f"{len(service.errors)} error lines logged). The raw loop through the same churn: "
        f"{raw.start_rss:.1f} -> {raw.end_rss:.1f} MB, {raw.growth:+.1%}"
    )
    # Met only when the RSS is back within 5 % and everything else held.
    return Result(
        name,
        "MB",
        "RSS within 5 %, all delivered, no error",
        [service.end_rss],
        [service.start_rss],
        higher_is_better=False,
        minimum_ratio=1 / 1.05 if correct else float("inf"),
    )


async def _open_subscriptions(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    found = re.search(r"^session_service_subscriptions(?:\{[^}]*\})? ([0-9.e+]+)$", text, re.M)
    return float(found.group(1)) if found else -1.0


def _workers(server: Running, cores: list[str]) -> list[Running]:
    """The worker processes of `serve --workers N`, each pinned to its core."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
        workers = [int(pid) for pid in children if "resource_tracker" not in _cmdline(int(pid))]
        if len(workers) >= len(cores):
            break
        time.sleep(0.2)
    if len(workers) < len(cores):
        raise RuntimeError(f"found {len(workers)} worker processes, not {len(cores)}")
    for pid, core in zip(workers, cores, strict=False):
        os.sched_setaffinity(pid, {int(core)})
    return [Running(server.url, pid, server.log) for pid in workers]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def two_workers(args: argparse.Namespace, env: dict[str, str], one_process_p50: float) -> Result:
    subscribers = args.workers_subscribers
    events, interval = SCHEDULE[10_000]
    cores = args.worker_cores.split(",")
    bus_env = {**env, "SESSION_SERVICE_BROADCAST_URL": args.redis_url}
    with serve([*service_command(), "--workers", "2"], bus_env) as server:
        workers = _workers(server, cores)
        run = asyncio.run(_measure(workers, False, subscribers, events, interval))
        errors = _errors_in(server.log)
    p50 = statistics.median(run.latencies) * 1000 if run.latencies else float("inf")
    complete = run.missing == 0 and not errors
    progress(
        f"F6 --workers 2, {subscribers:,} subscribers on Redis: p50 {p50:.1f} ms "
        f"(one process, 10,000: {one_process_p50:.1f} ms), {run.missing} events missed, "
        f"{run.cpu_per_message * 1e6:.1f} µs CPU/message; client "
        f"{run.client_cpu_per_frame * 1e6:.1f} µs CPU/frame"
    )
    # The workers share the machine's cores with the clients: each event's CPU, theirs and the
    # clients', spread evenly over the cores, is as soon as the last frame could arrive.
    floor = subscribers * (run.cpu_per_message + run.client_cpu_per_frame) / CORES * 1000
    name = (
        f"F6 `serve --workers 2` (cores {args.worker_cores}), {subscribers:,} subscribers, "
        f"Redis bus: p50 (Raw column: one process at 10,000); every event to every "
        f"subscriber: {'yes' if complete else 'NO'}; each event's CPU, servers' "
        f"({run.cpu_per_message * 1e6:.1f} µs a message) and clients' "
        f"({run.client_cpu_per_frame * 1e6:.1f} µs a frame), is {floor:.0f} ms on each of "
        f"the {CORES} cores"
    )
    return Result(
        name,
        "ms",
        "&le; 1.5&times; one process",
        [p50],
        [one_process_p50],
        higher_is_better=False,
        minimum_ratio=1 / 1.5 if complete else float("inf"),
    )


def _at_most(scenario: str, metric: str, times: float | None, versus: str = "raw") -> Result:
    """A row whose target is at most `times` its Raw column (None: reported only)."""
    if times is None:
        return Result(scenario, metric, "report", higher_is_better=False)
    target = f"&le; {times:g}&times; {versus}"
    return Result(scenario, metric, target, higher_is_better=False, minimum_ratio=1 / times)


def fan_out_scenarios(args: argparse.Namespace, database_url: str) -> list[Result]:
    _raise_file_limit()
    env = environment(database_url, SESSION_SERVICE_SUBSCRIBER_QUEUE_SIZE="10000")
    results, p50_at_largest = side_by_side(args, env)
    if args.churn_seconds > 0:
        results.append(churn(args, env))
    if args.workers_subscribers > 0:
        try:
            results.append(two_workers(args, env, p50_at_largest))
        except RuntimeError as error:
            progress(f"F6 --workers 2: skipped ({error})")
    return results


def section(results: list[Result], args: argparse.Namespace) -> str:
    lines = [
        HEADING,
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; "
        f'`make bench BENCH_ARGS="--only fan-out"` rewrites this section alone. '
        f"{args.fan_out_runs} alternating runs per side; subscribers to `sessionStarted` over "
        "graphql-transport-ws (raw: bench/raw.py's /ws loop, sent a `next` frame of the same "
        "shape and size); 20 events 0.5 s apart at 1,000 subscribers, 10 events 1 s apart "
        "above, each timed from the mutation's (raw: publish's) response to the last "
        "subscriber. Servers on core 0, the load on core 1 in client processes of at most "
        "10,000 bare asyncio WebSockets each (bench/fanout.py says how). CPU per message: "
        "the server's CPU time over the events (every thread) over frames delivered. F5 and "
        "F6 are the service's own (their Raw column says what they compare with).",
        "",
        "| Scenario | Service | Raw baseline | Ratio | Target | Met |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        service, baseline = _cell(r.service, r.metric), _cell(r.baseline, r.metric)
        lines.append(
            f"| {r.scenario} | {service} | {baseline} | {r.ratio():.2f} | {r.target} | {_met(r)} |"
        )
    return "\n".join(lines) + "\n"


def merged(previous: str, fan_out: str) -> str:
    """`previous` (a report) with its fan-out section, and any fan-out rows of its main table
    (the old S1, S2 and R1), replaced by `fan_out`, placed before the overload section."""
    kept = [
        line
        for line in previous.split(f"\n{HEADING}\n")[0].splitlines()
        if not re.match(r"\| (S1|S2|R1) ", line)
    ]
    text = "\n".join(kept).rstrip("\n") + "\n"
    tail = ""
    if f"\n{HEADING}\n" in previous:
        after = previous.split(f"\n{HEADING}\n", 1)[1]
        if "\n## " in after:
            tail = "\n## " + after.split("\n## ", 1)[1]
    elif "\n## Overload\n" in text:
        text, rest = text.split("\n## Overload\n", 1)
        tail = "\n## Overload\n" + rest
    return text.rstrip("\n") + "\n\n" + fan_out + tail


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        client_main(json.loads(sys.argv[2]))
