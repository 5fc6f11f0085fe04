"""The benchmark: the service against raw Starlette baselines, side by side, as ratios.

`make bench` runs it. Servers are pinned to core 0 and the load to core 1 (where there are two),
each scenario alternates service and baseline several times, and bench/REPORT.md gets medians,
min-max and the ratio against each target.
"""

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import asyncpg
import httpx
import websockets

from bench.hierarchy import measure
from models import Database, Limits, NewSession, SessionRepository

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SERVICE = str(Path(PYTHON).parent / "session-service")
CORES = os.cpu_count() or 1
SERVER_CPU, LOAD_CPU = ("0", "1") if CORES > 1 else ("0", "0")

Q1 = """query Q1($key: ID!) { session(key: $key) {
  key dataSource identifier status createdAt details { name value } } }"""
Q2 = """query Q2 { sessions(first: 100) {
  edges { node { key dataSource type version identifier status createdAt revision } }
  pageInfo { hasNextPage } } }"""
M1 = """mutation M1($input: CreateSessionInput!) { createSession(input: $input) {
  ... on SessionCreated { session { key } } } }"""
# A few distinct selection sets; the service's commit time is read from occurredAt.
SELECTIONS = [
    "cursor kind sessionKey occurredAt",
    "cursor kind sessionKey dataSource occurredAt",
    "cursor kind occurredAt session { key identifier status }",
]


GROUPS = ["http", "postgres", "fan-out", "hierarchy"]


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Result:
    scenario: str
    metric: str
    target: str
    service: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    higher_is_better: bool = True
    note: str = ""

    def ratio(self) -> float:
        service, baseline = statistics.median(self.service), statistics.median(self.baseline)
        return service / baseline if self.higher_is_better else baseline / service


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Running:
    url: str
    pid: int

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


@contextmanager
def serve(command: list[str], env: dict[str, str]) -> Iterator[Running]:
    """A server process on core 0 (taskset execs it: same PID), stopped by its PID on exit."""
    port = free_port()
    process = subprocess.Popen(
        ["taskset", "-c", SERVER_CPU, *command, "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz" if "serve" in command else url, timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command} did not start") from None
                time.sleep(0.1)
        yield Running(url, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=30)


def environment(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SERVICE_")}
    return {
        **env,
        "SESSION_SERVICE_DATABASE_URL": database_url,
        "SESSION_SERVICE_MUTATION_RATE_PER_SECOND": "0",
        "SESSION_SERVICE_SUBSCRIBE_RATE_PER_SECOND": "0",
        "SESSION_SERVICE_LOG_FORMAT": "text",
        **extra,
    }


def service_command() -> list[str]:
    return [SERVICE, "serve"]


def raw_command() -> list[str]:
    return [PYTHON, "-m", "uvicorn", "--factory", "bench.raw:create_app", "--log-level", "warning"]


def wrk(url: str, body: Mapping[str, object], connections: int, seconds: float) -> float:
    """Requests per second that wrk sustains against one POST."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
    try:
        output = subprocess.run(
            ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{connections}", f"-d{round(seconds)}s",
             "-s", script.name, url],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        ).stdout  # fmt: skip
    finally:
        os.unlink(script.name)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise RuntimeError(f"{url}: {errors.group(1)} failed responses\n{output}")
    match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if match is None:
        raise RuntimeError(f"wrk printed no rate:\n{output}")
    return float(match.group(1))


async def seed(database_url: str, sessions: int) -> list[str]:
    database = Database(database_url)
    await database.migrate()
    repository = SessionRepository(database, Limits())
    keys = []
    for index in range(sessions):
        details = (("track", "Monza"), ("temp", f"{20 + index % 10}°C"), ("driver", "A. N."))
        row, _ = await repository.create(
            NewSession("car-44", identifier=f"run {index}", details=details)
        )
        keys.append(row.key)
    await database.dispose()
    return keys


def http_scenarios(args: argparse.Namespace, database_url: str, key: str) -> list[Result]:
    """Each plan: the result, the raw endpoint doing the same work, the body, connections."""
    details = [{"name": n, "value": v} for n, v in (("a", "1"), ("b", "2"), ("c", "3"))]
    create = {"dataSource": "bench", "details": details}
    plans: list[tuple[Result, str, Mapping[str, object], int]] = [
        (
            Result(f"Q1 session query, {c} connections", "requests/s", "&ge; 0.5"),
            "/q1",
            {"query": Q1, "variables": {"key": key}},
            c,
        )
        for c in (16, 64)
    ]
    plans += [
        (
            Result("Q2 sessions(first: 100), 8 fields, 16 connections", "requests/s", "&ge; 0.35"),
            "/q2",
            {"query": Q2},
            16,
        ),
        (
            Result("M1 createSession, 3 details, SQLite, 16 connections", "requests/s", "&ge; 0.5"),
            "/m1",
            {"query": M1, "variables": {"input": create}},
            16,
        ),
    ]
    env = environment(database_url)
    for result, raw_path, body, connections in plans:
        for run in range(args.runs):
            for raw in (False, True):
                with serve(raw_command() if raw else service_command(), env) as server:
                    url = server.url + (raw_path if raw else "/graphql")
                    wrk(url, body, connections, args.seconds)  # warm-up
                    value = wrk(url, body, connections, args.seconds)
                (result.baseline if raw else result.service).append(value)
                variant = "raw" if raw else "service"
                progress(f"{result.scenario} [{variant} {run + 1}]: {value:,.0f} {result.metric}")
    return [plan[0] for plan in plans]


def postgres_scenarios(args: argparse.Namespace) -> list[Result]:
    """M1 on PostgreSQL, in a database of its own that is dropped afterwards."""
    admin = args.postgres_admin_dsn
    name = f"session_bench_{os.getpid()}"

    async def admin_execute(statement: str) -> None:
        connection = await asyncpg.connect(admin)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    try:
        asyncio.run(admin_execute(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError) as error:
        progress(f"M1 on PostgreSQL: skipped ({error})")
        return []
    try:
        base = admin.replace("postgresql://", "postgresql+asyncpg://", 1).rsplit("/", 1)[0]
        url = f"{base}/{name}"
        asyncio.run(seed(url, 10))
        result = Result("M1 createSession, 3 details, PostgreSQL, 16 connections",
                        "requests/s", "&ge; 0.5")  # fmt: skip
        details = [{"name": n, "value": v} for n, v in (("a", "1"), ("b", "2"), ("c", "3"))]
        body = {"query": M1, "variables": {"input": {"dataSource": "bench", "details": details}}}
        env = environment(url)
        for run in range(args.runs):
            for raw in (False, True):
                with serve(raw_command() if raw else service_command(), env) as server:
                    target = server.url + ("/m1" if raw else "/graphql")
                    wrk(target, body, 16, args.seconds)
                    value = wrk(target, body, 16, args.seconds)
                (result.baseline if raw else result.service).append(value)
                variant = "raw" if raw else "service"
                progress(f"{result.scenario} [{variant} {run + 1}]: {value:,.0f} requests/s")
        return [result]
    finally:
        asyncio.run(admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class FanOut:
    deliveries_per_second: float
    end_to_end_per_second: float
    latencies: list[float]
    idle_kb_per_subscriber: float


async def _fan_out_once(
    server: Running, subscribers: int, events: int, raw: bool, writer: Running | None = None
) -> FanOut:
    """Deliveries per second of fan-out time, per-event latencies from commit (the raw
    endpoint: from its publish request) to the last subscriber, the same rate with each event's
    createSession request included, and the server's memory per idle subscription. With a
    `writer`, sessions are created there and reach the subscribers' server over the bus.

    Times are wall-clock (time.time), as the service's occurredAt is: it is taken in the
    transaction just before the commit, so latencies from it are if anything too long."""
    url = server.url
    rss_before = server.rss_mb()
    ws_url = url.replace("http://", "ws://") + ("/ws" if raw else "/graphql")
    received: list[list[float]] = [[] for _ in range(events)]
    committed: list[float | None] = [None] * events
    sockets = []
    for index in range(subscribers):
        if raw:
            socket = await websockets.connect(ws_url, max_size=None, compression=None)
        else:
            socket = await websockets.connect(
                ws_url, subprotocols=[websockets.Subprotocol("graphql-transport-ws")],
                max_size=None, compression=None,
            )  # fmt: skip
            await socket.send(json.dumps({"type": "connection_init"}))
            await socket.recv()
            selection = SELECTIONS[index % len(SELECTIONS)]
            query = f"subscription {{ sessionEvents {{ {selection} }} }}"
            await socket.send(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}})
            )
        sockets.append(socket)

    async def listen(socket: websockets.ClientConnection, timed: bool) -> None:
        for event in range(events):
            message = await socket.recv()
            received[event].append(time.time())
            if timed and committed[event] is None:
                data = json.loads(message)["payload"]["data"]["sessionEvents"]
                committed[event] = datetime.fromisoformat(data["occurredAt"]).timestamp()

    timed = [
        not raw and "occurredAt" in SELECTIONS[i % len(SELECTIONS)] for i in range(len(sockets))
    ]
    listeners = [asyncio.create_task(listen(s, t)) for s, t in zip(sockets, timed, strict=True)]
    await asyncio.sleep(1)  # let every subscribe settle (the service has no per-subscription ack)
    idle = (server.rss_mb() - rss_before) * 1024 / subscribers
    sent: list[float] = []
    async with httpx.AsyncClient(base_url=(writer or server).url, timeout=60) as client:
        for index in range(events):
            sent.append(time.time())
            if raw:
                payload = {"id": "1", "type": "next", "payload": {"data": {"sessionEvents": {
                    "cursor": str(index), "kind": "STARTED", "sessionKey": "x" * 36}}}}  # fmt: skip
                await client.post("/publish", content=json.dumps(payload))
            else:
                body = {"query": M1, "variables": {"input": {"dataSource": "bench", "details": []}}}
                await client.post("/graphql", json=body)
            # One event at a time: each is measured until its last delivery.
            while len(received[index]) < subscribers:
                await asyncio.sleep(0.001)
    await asyncio.gather(*listeners)
    for socket in sockets:
        await socket.close()
    starts = (
        sent if raw else [c if c is not None else s for c, s in zip(committed, sent, strict=True)]
    )
    latencies = [max(times) - start for times, start in zip(received, starts, strict=True)]
    end_to_end = [max(times) - start for times, start in zip(received, sent, strict=True)]
    deliveries = subscribers * events
    return FanOut(deliveries / sum(latencies), deliveries / sum(end_to_end), latencies, idle)


def fan_out_scenarios(args: argparse.Namespace, database_url: str) -> list[Result]:
    results = []
    env = environment(database_url, SESSION_SERVICE_SUBSCRIBER_QUEUE_SIZE="10000")
    for subscribers in args.subscribers:
        large = subscribers >= 5000
        rate = Result(f"S1 fan-out to {subscribers} subscribers, 50 events", "deliveries/s",
                      "&ge; 0.5")  # fmt: skip
        p50 = Result(f"S1 p50 commit-to-last-subscriber, {subscribers} subscribers", "ms",
                     "report", higher_is_better=False)  # fmt: skip
        p99 = Result(f"S1 p99 commit-to-last-subscriber, {subscribers} subscribers", "ms",
                     "< 2x raw" if large else "report", higher_is_better=False)  # fmt: skip
        idle = Result(f"R1 memory per idle subscription, {subscribers} subscribers", "KB",
                      "&le; 2x raw" if large else "report", higher_is_better=False)  # fmt: skip
        end_to_end = Result(f"S1 end to end, {subscribers} subscribers: from the createSession "
                            "request (raw: publish request) to the last subscriber",
                            "deliveries/s", "report")  # fmt: skip
        for run in range(args.runs):
            for raw in (False, True):
                with serve(raw_command() if raw else service_command(), env) as server:
                    outcome = asyncio.run(_fan_out_once(server, subscribers, 50, raw))
                latencies = sorted(outcome.latencies)
                for result, value in (
                    (rate, outcome.deliveries_per_second),
                    (p50, latencies[len(latencies) // 2] * 1000),
                    (p99, latencies[int(len(latencies) * 0.99) - 1] * 1000),
                    (idle, outcome.idle_kb_per_subscriber),
                    (end_to_end, outcome.end_to_end_per_second),
                ):
                    (result.baseline if raw else result.service).append(value)
                progress(f"S1 {subscribers} [{'raw' if raw else 'service'} {run + 1}]: "
                         f"{outcome.deliveries_per_second:,.0f} deliveries/s, "
                         f"p99 {latencies[int(len(latencies) * 0.99) - 1] * 1000:.1f} ms, "
                         f"{outcome.idle_kb_per_subscriber:.1f} KB/subscription")  # fmt: skip
        results += [rate, p50, p99, idle, end_to_end]
    # S2 alternates its own memory:// runs with the bus runs, so noise hits both alike. Each
    # bus twice: sessions created on the subscribers' instance (the bus only carries wake-ups
    # to others), and on a second instance, so every event crosses the bus.
    subscribers = args.subscribers[0]
    memory: list[float] = []
    buses = {"Redis": args.redis_url, "PostgreSQL": args.postgres_bus_url}
    rates: dict[tuple[str, bool], list[float]] = {}
    for run in range(args.runs):
        with serve(service_command(), env) as server:
            outcome = asyncio.run(_fan_out_once(server, subscribers, 50, False))
        memory.append(outcome.deliveries_per_second)
        progress(f"S2 memory:// [{run + 1}]: {outcome.deliveries_per_second:,.0f} deliveries/s")
        for (bus, url), across in itertools.product(buses.items(), (False, True)):
            bus_env = {**env, "SESSION_SERVICE_BROADCAST_URL": url}
            try:
                with contextlib.ExitStack() as stack:
                    server = stack.enter_context(serve(service_command(), bus_env))
                    writer = None
                    if across:
                        writer = stack.enter_context(serve(service_command(), bus_env))
                    outcome = asyncio.run(_fan_out_once(server, subscribers, 50, False, writer))
            except RuntimeError as error:
                progress(f"S2 {bus}: skipped ({error})")
                continue
            rates.setdefault((bus, across), []).append(outcome.deliveries_per_second)
            where = "written on another instance" if across else "one instance"
            progress(f"S2 {bus}, {where} [{run + 1}]: "
                     f"{outcome.deliveries_per_second:,.0f} deliveries/s")  # fmt: skip
    for (bus, across), values in rates.items():
        if across:
            name = (f"S2 fan-out to {subscribers} subscribers written on another instance, "
                    f"across the {bus} bus, vs memory://")  # fmt: skip
            results.append(Result(name, "deliveries/s", "report", values, memory))
        else:
            name = f"S2 fan-out to {subscribers} subscribers on the {bus} bus vs memory://"
            results.append(Result(name, "deliveries/s", "&ge; 0.8", values, memory))
    return results


def hierarchy_scenarios(args: argparse.Namespace, database_url: str) -> list[Result]:
    progress("H1: building a 10,000-session tree and a 1,000-session forest")
    results = []
    for name, service, raw, statements in asyncio.run(measure(database_url, args.runs)):
        result = Result(f"{name} ({statements} SQL statements)", "ms",
                        "bounded statements; report time", higher_is_better=False)  # fmt: skip
        result.service, result.baseline = [service * 1000], [raw * 1000]
        progress(f"{name}: {service * 1000:.1f} ms vs raw {raw * 1000:.1f} ms")
        results.append(result)
    return results


def _cell(values: list[float], metric: str) -> str:
    median = statistics.median(values)
    return f"{median:,.1f} ({min(values):,.1f}-{max(values):,.1f}) {metric}"


def report(results: list[Result], args: argparse.Namespace, started: float) -> str:
    machine = platform.processor() or platform.machine()
    lines = [
        "# Benchmark report",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench` "
        f"({time.monotonic() - started:.0f} s). Machine: {machine}, {CORES} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}. "
        f"Servers on core {SERVER_CPU}, load on core {LOAD_CPU}; {args.runs} alternating runs "
        f"per variant of {args.seconds} s each (after a warm-up); medians with min-max. The "
        "ratio is service / raw for rates, raw / service for times and memory.",
        "",
        "| Scenario | Service | Raw baseline | Ratio | Target |",
        "|---|---|---|---|---|",
    ]
    for r in results:
        service, baseline = _cell(r.service, r.metric), _cell(r.baseline, r.metric)
        lines.append(f"| {r.scenario} | {service} | {baseline} | {r.ratio():.2f} | {r.target} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--subscribers", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "REPORT.md")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--postgres-admin-dsn", default="postgresql://postgres@127.0.0.1:5432/postgres"
    )
    parser.add_argument("--postgres-bus-url", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=GROUPS,
        default=GROUPS,
        help="scenario groups to run (all by default; the report then holds only these)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is missing (make bench installs it with apt-get)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="session-bench-") as directory:
        database_url = f"sqlite+aiosqlite:///{directory}/bench.db"
        progress("seeding 1,000 sessions")
        keys = asyncio.run(seed(database_url, 1000))
        results = []
        if "http" in args.only:
            results += http_scenarios(args, database_url, keys[len(keys) // 2])
        if "postgres" in args.only:
            results += postgres_scenarios(args)
        if "fan-out" in args.only:
            results += fan_out_scenarios(args, database_url)
        if "hierarchy" in args.only:
            results += hierarchy_scenarios(args, f"sqlite+aiosqlite:///{directory}/hierarchy.db")
    text = report(results, args, started)
    args.output.write_text(text)
    progress(f"wrote {args.output}")
    print(text)


if __name__ == "__main__":
    main()
