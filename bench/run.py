"""The benchmark: the service against raw baselines, side by side, as ratios.

`make bench` runs it. Servers are pinned to core 0 and the load (wrk) to core 1 (where there
are two), each scenario alternates service, raw baseline (and tuned stock Strawberry, for Q1)
several times, and bench/REPORT.md gets medians, min-max, the ratio against each target and
the server CPU time per request.

The raw baseline (bench/raw.py) is the cheapest correct implementation of the same work on the
same stack; bench/stock.py is a plain Strawberry schema doing Q1 with the same single read.
Before a scenario is measured, every variant answers the scenario's requests side by side and
must send the service's exact bytes (createSession: the same bytes but for the new key, and
the same rows stored); during the runs wrk counts every response that does not start as the
service's do, and any such response fails the run.

Groups (--only): http (SQLite: Q1, Q2, M1, mixed reads and writes, and H1), postgres (Q1 and
M1 on a PostgreSQL database of their own), fan-out (bench/fanout.py: its own section of the
report, which `--only fan-out` rewrites alone), hierarchy (H1 alone), overload (four times
the sustainable rate for a minute: its own section of the report, which `--only overload`
rewrites alone, keeping the rest of REPORT.md).
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SERVICE = str(Path(PYTHON).parent / "session-service")
CORES = os.cpu_count() or 1
SERVER_CPU, LOAD_CPU = ("0", "1") if CORES > 1 else ("0", "0")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

Q1 = """query Q1($key: ID!) { session(key: $key) {
  key dataSource identifier status createdAt details { name value } } }"""
Q2 = """query Q2 { sessions(first: 100) {
  edges { node { key dataSource type version identifier status createdAt revision } }
  pageInfo { hasNextPage } } }"""
M1 = """mutation M1($input: CreateSessionInput!) { createSession(input: $input) {
  ... on SessionCreated { session { key } } } }"""
H1 = """query H1($key: ID!) { session(key: $key) {
  descendants(maxDepth: 8) { depth viaKey session { key } } } }"""
SEED = """mutation Seed($input: CreateSessionInput!) { createSession(input: $input) {
  ... on SessionCreated { session { key } } ... on Error { code message } } }"""
# A few distinct selection sets; the service's commit time is read from occurredAt.
SELECTIONS = [
    "cursor kind sessionKey occurredAt",
    "cursor kind sessionKey dataSource occurredAt",
    "cursor kind occurredAt session { key identifier status }",
]
CREATE = {
    "dataSource": "bench",
    "details": [{"name": n, "value": v} for n, v in (("a", "1"), ("b", "2"), ("c", "3"))],
}
SEEDED_SESSIONS = 200
TREE_SIZE, TREE_FAN_OUT = 1000, 10
# How every response of a kind starts (wrk counts those that do not).
EXPECT = {
    "q1": '{"data":{"session":{"key":"',
    "q2": '{"data":{"sessions":{"edges":[{"node":{"key":"',
    "m1": '{"data":{"createSession":{"session":{"key":"',
    "h1": '{"data":{"session":{"descendants":[{"depth":1,"viaKey":"',
}

GROUPS = ["http", "postgres", "fan-out", "hierarchy", "overload"]


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
    # Server CPU seconds per request of each run, when measured.
    service_cpu: list[float] = field(default_factory=list)
    baseline_cpu: list[float] = field(default_factory=list)
    # The ratio the target asks for, when it is one.
    minimum_ratio: float | None = None

    def ratio(self) -> float:
        service, baseline = statistics.median(self.service), statistics.median(self.baseline)
        return service / baseline if self.higher_is_better else baseline / service


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpu_ticks() -> dict[int, tuple[int, int]]:
    """Every process's (parent, utime + stime + cutime + cstime): all its threads, and its
    children that have been waited for."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()
        # fields[0] is the 3rd field of stat (state): ppid is the 4th, utime..cstime 14th-17th.
        found[int(entry)] = (int(fields[1]), sum(int(f) for f in fields[11:15]))
    return found


@dataclass(frozen=True)
class Running:
    url: str
    pid: int
    log: Path

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        """CPU time of the server process and every live descendant of it."""
        ticks = _cpu_ticks()
        children: dict[int, list[int]] = {}
        for pid, (parent, _) in ticks.items():
            children.setdefault(parent, []).append(pid)
        total, pending, seen = 0, [self.pid], set[int]()
        while pending and len(seen) < len(ticks):
            pid = pending.pop()
            if pid in seen or pid not in ticks:
                continue
            seen.add(pid)
            total += ticks[pid][1]
            pending += children.get(pid, [])
        return total / CLOCK_TICKS

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


@contextmanager
def serve(command: list[str], env: dict[str, str]) -> Iterator[Running]:
    """A server process on core 0 (taskset execs it: same PID), stopped by its PID on exit."""
    port = free_port()
    with tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False) as log:
        log_path = Path(log.name)
        process = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU, *command, "--port", str(port)],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    running = Running(url, process.pid, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz" if "serve" in command else url, timeout=1)
                break
            except httpx.TransportError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{command} did not start:\n{running.log_tail()}") from None
                time.sleep(0.1)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log_path.unlink(missing_ok=True)


def environment(database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SERVICE_")}
    return {
        **env,
        "SESSION_SERVICE_DATABASE_URL": database_url,
        "SESSION_SERVICE_MUTATION_RATE_PER_SECOND": "0",
        "SESSION_SERVICE_SUBSCRIBE_RATE_PER_SECOND": "0",
        "SESSION_SERVICE_RESPONSE_CACHE": "off",
        "SESSION_SERVICE_LOG_FORMAT": "text",
        **extra,
    }


def service_command() -> list[str]:
    return [SERVICE, "serve"]


def _uvicorn(factory: str) -> list[str]:
    return [PYTHON, "-m", "uvicorn", "--factory", factory, "--loop", "uvloop", "--http",
            "httptools", "--log-level", "warning", "--no-access-log"]  # fmt: skip


def raw_command() -> list[str]:
    return _uvicorn("bench.raw:create_app")


def stock_command() -> list[str]:
    return _uvicorn("bench.stock:create_app")


@dataclass(frozen=True, eq=False)
class Variant:
    name: str
    command: Callable[[], list[str]]
    # The path of each kind of request (q1, q2, m1, h1) it serves.
    paths: Mapping[str, str]


GRAPHQL_PATHS = {kind: "/graphql" for kind in EXPECT}
SERVICE_VARIANT = Variant("service", service_command, GRAPHQL_PATHS)
RAW_VARIANT = Variant("raw", raw_command, {kind: f"/{kind}" for kind in EXPECT})
STOCK_VARIANT = Variant("stock", stock_command, {"q1": "/graphql"})
# The service with its response cache on (the bench's environment turns it off).
CACHED_VARIANT = Variant(
    "service, cache on",
    lambda: ["env", "SESSION_SERVICE_RESPONSE_CACHE=on", *service_command()],
    GRAPHQL_PATHS,
)


@dataclass(frozen=True)
class Load:
    """One wrk process: `connections` connections sending `bodies` in turn to one kind of
    request."""

    kind: str
    bodies: Sequence[bytes]
    connections: int
    # A pause before each request: one connection with 20 ms makes a steady trickle.
    delay_ms: int = 0


@dataclass(frozen=True)
class Wrk:
    requests: int
    rate: float
    p99_ms: float


def _lua_string(text: str) -> str:
    """A Lua string literal of any text (LuaJIT knows decimal byte escapes, not \\u)."""
    safe = (chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\{b:03d}" for b in text.encode())
    return '"' + "".join(safe) + '"'


def _wrk_script(bodies: Sequence[bytes], expect: str, delay_ms: int = 0) -> str:
    listed = ",\n".join(f"  {_lua_string(body.decode())}" for body in bodies)
    paced = f"function delay()\n  return {delay_ms}\nend\n" if delay_ms else ""
    return (
        paced
        + f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {{
{listed}
}}
local expect = {_lua_string(expect)}
local prepared = {{}}
local index = 0
local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  unexpected = 0
  for i, body in ipairs(bodies) do
    prepared[i] = wrk.format(nil, nil, nil, body)
  end
end

function request()
  index = index % #prepared + 1
  return prepared[index]
end

function response(status, headers, body)
  if string.sub(body, 1, #expect) ~= expect then
    unexpected = unexpected + 1
  end
end

function done(summary, latency, requests)
  local count = 0
  for _, thread in ipairs(threads) do
    count = count + thread:get("unexpected")
  end
  io.write(string.format("unexpected responses: %d\\n", count))
end
"""
    )


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _parse_wrk(url: str, output: str) -> Wrk:
    problems = []
    if errors := re.search(r"Non-2xx or 3xx responses: (\d+)", output):
        problems.append(f"{errors.group(1)} failed responses")
    if sockets := re.search(r"Socket errors: (.*)", output):
        problems.append(f"socket errors: {sockets.group(1)}")
    unexpected = re.search(r"unexpected responses: (\d+)", output)
    if unexpected is None or int(unexpected.group(1)):
        problems.append(f"{unexpected.group(1) if unexpected else '?'} unexpected responses")
    requests = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.M)
    if requests is None or rate is None or p99 is None or not int(requests.group(1)):
        problems.append("no requests, rate or p99")
    if problems:
        raise RuntimeError(f"{url}: {'; '.join(problems)}\n{output}")
    assert requests and rate and p99
    return Wrk(int(requests.group(1)), float(rate.group(1)),
               float(p99.group(1)) * _UNITS[p99.group(2)])  # fmt: skip


def wrk(server: Running, variant: Variant, loads: Sequence[Load], seconds: float) -> list[Wrk]:
    """Every load at once, each a wrk process on the load core, for `seconds`."""
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as directory:
        processes: list[tuple[str, subprocess.Popen[str], IO[str]]] = []
        try:
            for index, load in enumerate(loads):
                script = Path(directory) / f"load{index}.lua"
                script.write_text(_wrk_script(load.bodies, EXPECT[load.kind], load.delay_ms))
                url = server.url + variant.paths[load.kind]
                log = (Path(directory) / f"load{index}.out").open("w+")
                command = ["taskset", "-c", LOAD_CPU, "wrk", "-t1", f"-c{load.connections}",
                           f"-d{round(seconds)}s", "--timeout", "10s", "--latency",
                           "-s", str(script), url]  # fmt: skip
                processes.append((url, subprocess.Popen(command, stdout=log, text=True), log))
            results = []
            for url, process, out in processes:
                if process.wait(timeout=seconds + 60):
                    raise RuntimeError(f"wrk failed against {url}")
                out.seek(0)
                results.append(_parse_wrk(url, out.read()))
            return results
        finally:
            for _, process, out in processes:
                if process.poll() is None:
                    process.kill()
                    process.wait(timeout=10)
                out.close()


# -- checks: every variant sends the service's bytes --------------------------------------------


class Mismatch(AssertionError):
    pass


def _post(client: httpx.Client, url: str, body: bytes) -> bytes:
    response = client.post(url, content=body, headers={"content-type": "application/json"})
    if response.status_code != 200:
        raise Mismatch(f"{url}: HTTP {response.status_code}: {response.text[:500]}")
    return response.content


def _check_reads(servers: Mapping[Variant, Running], kind: str, bodies: Sequence[bytes]) -> None:
    """Each body from every variant: byte for byte the service's response."""
    with httpx.Client(timeout=60) as client:
        for body in bodies:
            answers = {
                variant: _post(client, server.url + variant.paths[kind], body)
                for variant, server in servers.items()
                if kind in variant.paths
            }
            expected = answers[SERVICE_VARIANT]
            if b'"errors"' in expected:
                raise Mismatch(f"the service answered {body!r} with errors: {expected!r}")
            for variant, answer in answers.items():
                if answer != expected:
                    pairs = enumerate(zip(expected, answer, strict=False))
                    at = next((i for i, (a, b) in pairs if a != b), min(len(expected), len(answer)))
                    start = max(0, at - 300)
                    raise Mismatch(
                        f"{kind}: {variant.name} differs from the service at byte {at} (of "
                        f"{len(expected)} and {len(answer)}) for {body.decode()}\n"
                        f"service: ...{expected[start : at + 300].decode(errors='replace')}\n"
                        f"{variant.name}: ...{answer[start : at + 300].decode(errors='replace')}"
                    )


CREATED = re.compile(rb'\{"data":\{"createSession":\{"session":\{"key":"([^"]+)"\}\}\}\}')
_SQLITE_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}")


def _stored(database_url: str, key: str) -> dict[str, Any]:
    """The rows a createSession stored, with its key and times replaced by what they must be
    (one time everywhere, in the service's storage format) and its event's cursor by whether
    it is the newest."""
    queries = {
        "session": "SELECT * FROM sessions WHERE key = {p}",
        "details": "SELECT * FROM session_details WHERE session_key = {p} ORDER BY name",
        "event": "SELECT * FROM session_events WHERE session_key = {p}",
    }
    newest = "SELECT last_cursor FROM event_log_state WHERE id = 1"
    if database_url.startswith("sqlite"):
        with contextlib.closing(sqlite3.connect(database_url.split(":///", 1)[1])) as connection:
            rows = {
                name: [tuple(r) for r in connection.execute(sql.format(p="?"), (key,))]
                for name, sql in queries.items()
            }
            cursor = connection.execute(newest).fetchone()[0]
    else:

        async def read() -> tuple[dict[str, list[tuple[Any, ...]]], int]:
            dsn = database_url.replace("postgresql+asyncpg://", "postgresql://", 1)
            connection = await asyncpg.connect(dsn)
            try:
                found = {
                    name: [tuple(r) for r in await connection.fetch(sql.format(p="$1"), key)]
                    for name, sql in queries.items()
                }
                return found, await connection.fetchval(newest)
            finally:
                await connection.close()

        rows, cursor = asyncio.run(read())
    times: set[object] = set()

    def shape(value: object) -> object:
        if value == key:
            return "<key>"
        if isinstance(value, datetime):
            times.add(value)
            return f"<{'aware' if value.utcoffset() is not None else 'naive'} datetime>"
        if isinstance(value, str) and _SQLITE_TIME.fullmatch(value):
            times.add(value)
            return "<naive UTC text>"
        return value

    shaped: dict[str, Any] = {name: [tuple(map(shape, r)) for r in found]
                              for name, found in rows.items()}  # fmt: skip
    # The event's cursor (its first column) is the newest: no other writer is running.
    shaped["event"] = [("<newest cursor>" if r[0] == cursor else r[0], *r[1:])
                       for r in shaped["event"]]  # fmt: skip
    shaped["one time"] = len(times) == 1
    return shaped


def _check_create(servers: Mapping[Variant, Running], database_url: str) -> None:
    """createSession on each variant: the service's bytes but for the new key, and the same
    rows stored."""
    body = _body(M1, {"input": CREATE})
    with httpx.Client(timeout=60) as client:
        answers: dict[Variant, tuple[bytes, dict[str, Any]]] = {}
        for variant, server in servers.items():
            if "m1" not in variant.paths:
                continue
            answer = _post(client, server.url + variant.paths["m1"], body)
            match = CREATED.fullmatch(answer)
            if match is None:
                raise Mismatch(f"createSession on {variant.name}: {answer.decode()[:1000]}")
            key = match.group(1).decode()
            uuid.UUID(key)
            answers[variant] = (
                answer.replace(match.group(1), b"<key>"),
                _stored(database_url, key),
            )
    expected = answers[SERVICE_VARIANT]
    for variant, created in answers.items():
        if created != expected:
            raise Mismatch(f"createSession: {variant.name} differs from the service\n"
                           f"service: {expected!r}\n{variant.name}: {created!r}")  # fmt: skip


def check(
    variants: Sequence[Variant], env: dict[str, str], checks: Sequence[Callable[..., None]]
) -> None:
    """Start every variant at once (one database state for all) and run the checks."""
    with contextlib.ExitStack() as stack:
        servers = {v: stack.enter_context(serve(v.command(), env)) for v in variants}
        try:
            for one in checks:
                one(servers)
        except Mismatch:
            for variant, server in servers.items():
                print(f"--- {variant.name} log:\n{server.log_tail()}", file=sys.stderr)
            raise


# -- scenarios ----------------------------------------------------------------------------------


def _body(query: str, variables: Mapping[str, object] | None = None) -> bytes:
    document: dict[str, object] = {"query": query}
    if variables is not None:
        document["variables"] = variables
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Row:
    """A report row from a scenario's runs: `value` of the wrk results, `versus` raw."""

    scenario: str
    metric: str
    target: str
    value: Callable[[list[Wrk]], float]
    higher_is_better: bool = True
    versus: str = "service"
    minimum_ratio: float | None = None


@dataclass(frozen=True)
class Scenario:
    name: str
    variants: Sequence[Variant]
    loads: Sequence[Load]
    checks: Sequence[Callable[[Mapping[Variant, Running]], None]]
    rows: Sequence[Row]


def _cpu(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs" if seconds < 1e-3 else f"{seconds * 1e3:,.1f} ms"


def run_scenario(scenario: Scenario, env: dict[str, str], args: argparse.Namespace) -> list[Result]:
    progress(
        f"{scenario.name}: checking the bytes of {', '.join(v.name for v in scenario.variants)}"
    )
    check(scenario.variants, env, scenario.checks)
    results = [
        Result(row.scenario, row.metric, row.target, higher_is_better=row.higher_is_better,
               minimum_ratio=row.minimum_ratio)
        for row in scenario.rows
    ]  # fmt: skip
    for run in range(args.runs):
        # Every other run in reverse order: a machine that drifts faster or slower through a
        # scenario favours no variant.
        for variant in scenario.variants if run % 2 == 0 else reversed(scenario.variants):
            with serve(variant.command(), env) as server:
                wrk(server, variant, scenario.loads, args.warmup)
                before = server.cpu_seconds()
                measured = wrk(server, variant, scenario.loads, args.seconds)
                cpu = (server.cpu_seconds() - before) / sum(w.requests for w in measured)
            for row, result in zip(scenario.rows, results, strict=True):
                if variant.name == "raw":
                    result.baseline.append(row.value(measured))
                    result.baseline_cpu.append(cpu)
                elif variant.name == row.versus:
                    result.service.append(row.value(measured))
                    result.service_cpu.append(cpu)
            rates = " + ".join(
                f"{load.kind} {w.rate:,.0f}/s"
                + (f" ({1000 / w.rate:,.1f} ms/request)" if load.connections == 1 else "")
                + f" (p99 {w.p99_ms:,.1f} ms)"
                for load, w in zip(scenario.loads, measured, strict=True)
            )
            progress(f"{scenario.name} [{variant.name} {run + 1}]: {rates}, "
                     f"{_cpu(cpu)} CPU/request")  # fmt: skip
    return results


def _rate(index: int = 0) -> Callable[[list[Wrk]], float]:
    return lambda measured: measured[index].rate


def _p99(measured: list[Wrk]) -> float:
    return measured[0].p99_ms


def _ms_per_request(measured: list[Wrk]) -> float:
    return 1000 / measured[0].rate


def _q1_scenario(database: str, keys: Sequence[str], stock: bool) -> Scenario:
    bodies = [_body(Q1, {"key": key}) for key in keys]
    unknown = _body(Q1, {"key": str(uuid.uuid4())})
    name = f"Q1 session query, {database}, 16 connections"
    rows = [Row(name, "requests/s", "&ge; 0.3", _rate(), minimum_ratio=0.3)]
    if stock:
        rows.append(Row(f"{name}: tuned stock Strawberry (in the Service column) vs raw",
                        "requests/s", "report", _rate(), versus="stock"))  # fmt: skip
    return Scenario(
        name,
        [SERVICE_VARIANT, RAW_VARIANT, *([STOCK_VARIANT] if stock else [])],
        [Load("q1", bodies, 16)],
        [lambda servers: _check_reads(servers, "q1", [*bodies, unknown])],
        rows,
    )


def _m1_scenario(database: str, database_url: str) -> Scenario:
    name = f"M1 createSession, 3 details, {database}, 16 connections"
    return Scenario(
        name,
        [SERVICE_VARIANT, RAW_VARIANT],
        [Load("m1", [_body(M1, {"input": CREATE})], 16)],
        [lambda servers: _check_create(servers, database_url)],
        [
            Row(name, "requests/s", "&ge; 0.5", _rate(), minimum_ratio=0.5),
            Row(f"{name}: p99 latency", "ms", "&le; 5&times; raw (ratio &ge; 0.2)", _p99,
                higher_is_better=False, minimum_ratio=0.2),
        ],
    )  # fmt: skip


def seed_sessions(env: dict[str, str], count: int) -> list[str]:
    """`count` sessions of 3 details each, created through the service's API."""
    keys = []
    with serve(service_command(), env) as server, httpx.Client(timeout=60) as client:
        for index in range(count):
            details = (("track", "Monza"), ("temp", f"{20 + index % 10}°C"), ("driver", "A. N."))
            given = {"dataSource": "car-44", "identifier": f"run {index}",
                     "details": [{"name": n, "value": v} for n, v in details]}  # fmt: skip
            keys.append(_created(client, server, given))
    return keys


def seed_tree(env: dict[str, str], size: int, fan_out: int) -> list[str]:
    """A tree through the service's API, node i the child of node (i - 1) // fan_out: created
    leaves first, each parent with its children as associates, in order."""
    keys: dict[int, str] = {}
    with serve(service_command(), env) as server, httpx.Client(timeout=60) as client:
        for index in reversed(range(size)):
            children = range(index * fan_out + 1, min(index * fan_out + fan_out + 1, size))
            given = {"dataSource": "h1", "identifier": f"node {index}",
                     "associateSessionKeys": [keys[c] for c in children]}  # fmt: skip
            keys[index] = _created(client, server, given)
    return [keys[index] for index in range(size)]


def _created(client: httpx.Client, server: Running, given: Mapping[str, object]) -> str:
    response = client.post(
        f"{server.url}/graphql", json={"query": SEED, "variables": {"input": given}}
    )
    try:
        return str(response.json()["data"]["createSession"]["session"]["key"])
    except (KeyError, TypeError, ValueError):
        raise RuntimeError(
            f"seeding failed: {response.status_code} {response.text[:500]}"
        ) from None


def http_scenarios(args: argparse.Namespace, directory: str) -> list[Result]:
    """Q1, Q2, M1 and mixed reads and writes on SQLite, over the seeded sessions."""
    database_url = f"sqlite+aiosqlite:///{directory}/bench.db"
    env = environment(database_url)
    progress(f"seeding {SEEDED_SESSIONS} sessions through the service")
    keys = seed_sessions(env, SEEDED_SESSIONS)
    q2 = _body(Q2)
    mixed = "Mixed: 16 readers (Q1) and 4 writers (M1) at once, SQLite"
    scenarios = [
        _q1_scenario("SQLite", keys, stock=True),
        Scenario(
            "Q2 sessions(first: 100), 8 fields, SQLite, 16 connections",
            [SERVICE_VARIANT, RAW_VARIANT],
            [Load("q2", [q2], 16)],
            [lambda servers: _check_reads(servers, "q2", [q2])],
            [Row("Q2 sessions(first: 100), 8 fields, SQLite, 16 connections", "requests/s",
                 "&ge; 0.15", _rate(), minimum_ratio=0.15)],
        ),
        _m1_scenario("SQLite", database_url),
    ]  # fmt: skip
    reads = _q1_scenario("SQLite", keys, stock=False)
    scenarios.append(
        Scenario(
            mixed,
            [SERVICE_VARIANT, RAW_VARIANT],
            [Load("q1", reads.loads[0].bodies, 16), Load("m1", [_body(M1, {"input": CREATE})], 4)],
            [*reads.checks, lambda servers: _check_create(servers, database_url)],
            [Row(f"{mixed}: reads", "reads/s", "&ge; 0.3", _rate(0), minimum_ratio=0.3),
             Row(f"{mixed}: writes", "writes/s", "report", _rate(1))],
        )
    )  # fmt: skip
    results = [result for s in scenarios for result in run_scenario(s, env, args)]
    # The same Q1 with the response cache on: after the first pass over the 200 keys, answers
    # come from the cache (no writes meanwhile), each after one read of the data version.
    cached = "Q1 session query, SQLite, 16 connections, response cache on, keys repeating"
    q1 = reads.loads[0]
    scenario = Scenario(
        cached,
        [SERVICE_VARIANT, RAW_VARIANT],
        [q1],
        reads.checks,
        [Row(cached, "requests/s", "&ge; 0.8", _rate(), minimum_ratio=0.8)],
    )
    cache_on = {**env, "SESSION_SERVICE_RESPONSE_CACHE": "on"}
    results += run_scenario(scenario, cache_on, args)
    # The cache must never make reads slower, even when writes keep moving the data version:
    # the same readers with about 50 createSession calls a second, the cache on and off.
    busy = "Q1 with about 50 writes/s in the background, SQLite, 16 connections"
    scenario = Scenario(
        busy,
        [SERVICE_VARIANT, CACHED_VARIANT, RAW_VARIANT],
        [q1, Load("m1", [_body(M1, {"input": CREATE})], 1, delay_ms=20)],
        reads.checks,
        [Row(f"{busy}: reads, cache on", "reads/s", "&ge; the cache-off reads (next row)",
             _rate(0), versus=CACHED_VARIANT.name),
         Row(f"{busy}: reads, cache off", "reads/s", "report", _rate(0)),
         Row(f"{busy}: writes, cache on", "writes/s", "report", _rate(1),
             versus=CACHED_VARIANT.name)],
    )  # fmt: skip
    return results + run_scenario(scenario, env, args)


def hierarchy_scenarios(args: argparse.Namespace, directory: str) -> list[Result]:
    """H1 through the HTTP servers, one request at a time, on a tree of its own."""
    env = environment(f"sqlite+aiosqlite:///{directory}/hierarchy.db")
    progress(f"H1: building a {TREE_SIZE:,}-session tree, fan-out {TREE_FAN_OUT}, through the "
             "service")  # fmt: skip
    keys = seed_tree(env, TREE_SIZE, TREE_FAN_OUT)
    root = _body(H1, {"key": keys[0]})
    others = [_body(H1, {"key": key}) for key in (keys[1], keys[-1], str(uuid.uuid4()))]
    name = (f"H1 descendants(maxDepth: 8) of a {TREE_SIZE:,}-session tree, fan-out "
            f"{TREE_FAN_OUT}, 1 connection")  # fmt: skip
    scenario = Scenario(
        name,
        [SERVICE_VARIANT, RAW_VARIANT],
        [Load("h1", [root], 1)],
        [lambda servers: _check_reads(servers, "h1", [root, *others])],
        [Row(name, "ms/request", "&ge; 0.33", _ms_per_request, higher_is_better=False,
             minimum_ratio=0.33)],
    )  # fmt: skip
    return run_scenario(scenario, env, args)


def postgres_scenarios(args: argparse.Namespace) -> list[Result]:
    """Q1 and M1 on PostgreSQL, in a database of their own that is dropped afterwards."""
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
        progress(f"PostgreSQL scenarios: skipped ({error})")
        return []
    try:
        base = admin.replace("postgresql://", "postgresql+asyncpg://", 1).rsplit("/", 1)[0]
        url = f"{base}/{name}"
        env = environment(url)
        progress(f"seeding {SEEDED_SESSIONS} sessions on PostgreSQL through the service")
        keys = seed_sessions(env, SEEDED_SESSIONS)
        scenarios = [_q1_scenario("PostgreSQL", keys, stock=True), _m1_scenario("PostgreSQL", url)]
        return [result for s in scenarios for result in run_scenario(s, env, args)]
    finally:
        asyncio.run(admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


OVERLOAD_HEADING = "## Overload"


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


def overload_section(args: argparse.Namespace, directory: str) -> str:
    """Q2 on SQLite: the sustainable rate (wrk, 16 connections), then an open-loop load
    (bench/overload.py) at half that rate, four times it for `args.overload_seconds`, and half
    again; admitted and refused answers, server memory and CPU through it all."""
    env = environment(f"sqlite+aiosqlite:///{directory}/overload.db")
    progress(f"overload: seeding {SEEDED_SESSIONS} sessions")
    seed_sessions(env, SEEDED_SESSIONS)
    q2 = _body(Q2)
    body = Path(directory) / "overload-body.json"
    body.write_bytes(q2)
    with serve(service_command(), env) as server:
        wrk(server, SERVICE_VARIANT, [Load("q2", [q2], 16)], args.warmup)
        sustainable = wrk(server, SERVICE_VARIANT, [Load("q2", [q2], 16)], 10)[0]
        rate = sustainable.rate
        phases = [("before", rate / 2, 10), ("overload", rate * 4, args.overload_seconds),
                  ("after", rate / 2, 10)]  # fmt: skip
        progress(f"overload: sustainable {rate:,.0f}/s (p99 {sustainable.p99_ms:.1f} ms); "
                 f"offering {rate * 4:,.0f}/s for {args.overload_seconds} s")  # fmt: skip
        command = ["taskset", "-c", LOAD_CPU, PYTHON, "-m", "bench.overload", server.url,
                   str(body), json.dumps(phases)]  # fmt: skip
        rss: list[tuple[float, float]] = []
        cpu_before = server.cpu_seconds()
        started = time.monotonic()
        with tempfile.TemporaryFile("w+") as out:
            load = subprocess.Popen(command, stdout=out, cwd=ROOT, text=True)
            while load.poll() is None:
                rss.append((time.monotonic() - started, server.rss_mb()))
                time.sleep(1)
            if load.returncode:
                raise RuntimeError(f"the overload load failed ({load.returncode})")
            out.seek(0)
            outcome = json.loads(out.read())
        cpu = server.cpu_seconds() - cpu_before
    answers = outcome["answers"]
    lines = [
        OVERLOAD_HEADING,
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench "
        f'BENCH_ARGS="--only overload"`. Q2 (`sessions(first: 100)`, 8 fields) on SQLite, '
        f"one server process on core {SERVER_CPU}, the load on core {LOAD_CPU}, "
        "`SESSION_SERVICE_MAX_REQUESTS_IN_FLIGHT` at its default (64). Sustainable rate: what "
        f"wrk's 16 connections got answered in 10 s, **{rate:,.0f} requests/s** (p99 "
        f"{sustainable.p99_ms:.1f} ms). Then an open-loop load (bench/overload.py: one request "
        "every 1/rate s whatever the answers, on up to 512 keep-alive connections) at half "
        f"that rate for 10 s, **four times it for {args.overload_seconds} s**, and half again "
        "for 10 s. The machine is shared with other engineers' test runs (2 cores): the "
        "figures are noisy, and the load generator, in Python, may fall short of the rate it "
        "is asked for (the offered column says what it sent).",
        "",
        "| Phase | Offered | Admitted (200) | Refused (503 OVERLOADED) | Other status or "
        "connection lost | Not sent (every connection busy) | Admitted p50 / p99 "
        "| Refused p50 / p99 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, phase_rate, seconds in phases:
        mine = [a for a in answers if a[0] == name]
        ok = [a[2] * 1e3 for a in mine if a[3] == 200]
        refused = [a[2] * 1e3 for a in mine if a[3] == 503]
        other = len(mine) - len(ok) - len(refused)
        unsent = outcome["unsent"].get(name, 0)
        lines.append(
            f"| {name} ({phase_rate:,.0f}/s asked, {seconds} s) | {len(mine) / seconds:,.0f}/s "
            f"| {len(ok) / seconds:,.0f}/s | {len(refused) / seconds:,.0f}/s | {other} | {unsent} "
            f"| {_percentile(ok, 0.5):,.1f} / {_percentile(ok, 0.99):,.1f} ms "
            f"| {_percentile(refused, 0.5):,.1f} / {_percentile(refused, 0.99):,.1f} ms |"
        )
    overload_end = phases[0][2] + phases[1][2]
    recovery = [a[2] * 1e3 for a in answers
                if a[0] == "after" and a[3] == 200 and a[1] < overload_end + 1]  # fmt: skip
    peak = max(mb for _, mb in rss)
    during = [mb for at, mb in rss if phases[0][2] <= at <= overload_end]
    series = ", ".join(f"{mb:.0f}" for _, mb in rss[:: max(1, len(rss) // 20)])
    lines += [
        "",
        f"Recovery: in the first second after the overload, admitted p50 "
        f"{_percentile(recovery, 0.5):,.1f} ms, p99 {_percentile(recovery, 0.99):,.1f} ms "
        f"({len(recovery)} requests). Server RSS: {rss[0][1]:.0f} MB at the start, "
        f"{min(during):.0f}-{max(during):.0f} MB during the overload, peak {peak:.0f} MB, "
        f"{rss[-1][1]:.0f} MB at the end (every ~{max(1, len(rss) // 20)} s: {series}). "
        f"Server CPU over the whole load: {cpu:.1f} s for {len(answers):,} answers "
        f"({_cpu(cpu / max(1, len(answers)))} per answer, refusals included); the load "
        f"opened {outcome['connections']} connections.",
    ]
    return "\n".join(lines) + "\n"


def _cell(values: list[float], metric: str) -> str:
    median = statistics.median(values)
    return f"{median:,.1f} ({min(values):,.1f}-{max(values):,.1f}) {metric}"


def _cpu_cell(values: list[float]) -> str:
    return _cpu(statistics.median(values)) if values else "-"


def _met(result: Result) -> str:
    if result.minimum_ratio is None:
        return ""
    return "yes" if result.ratio() >= result.minimum_ratio else "**no**"


def report(results: list[Result], args: argparse.Namespace, started: float) -> str:
    machine = platform.processor() or platform.machine()
    lines = [
        "# Benchmark report",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench` "
        f"({time.monotonic() - started:.0f} s). Machine: {machine}, {CORES} cores, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}. "
        f"Servers on core {SERVER_CPU}, load on core {LOAD_CPU}; {args.runs} alternating runs "
        f"per variant of {args.seconds} s each (after a {args.warmup} s warm-up); medians with "
        "min-max. The ratio is service / raw for rates, raw / service for times and memory.",
        "",
        "The HTTP rows' raw baseline (bench/raw.py) is the cheapest correct implementation of "
        "the same work on the same stack: plain ASGI on uvicorn with uvloop and httptools, one "
        "shared aiosqlite connection (PostgreSQL: an asyncpg pool), one SQL statement where one "
        "suffices, orjson. Before each scenario is measured, every variant must answer its "
        "requests with the service's exact bytes (createSession: but for the new key, and with "
        "the same rows stored). On the *tuned stock Strawberry* rows the Service column is "
        "bench/stock.py, a plain Strawberry schema doing the raw baseline's read. CPU/request is "
        "the server process's CPU time (every thread, and any child process) over the measured "
        "run, divided by the requests wrk counted (fan-out rows: not measured).",
        "",
        "| Scenario | Service | Raw baseline | Ratio | Target | Met | Service CPU/request "
        "| Raw CPU/request |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        service, baseline = _cell(r.service, r.metric), _cell(r.baseline, r.metric)
        lines.append(
            f"| {r.scenario} | {service} | {baseline} | {r.ratio():.2f} | {r.target} | {_met(r)} "
            f"| {_cpu_cell(r.service_cpu)} | {_cpu_cell(r.baseline_cpu)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="seconds of load before each run")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "REPORT.md")
    parser.add_argument("--overload-seconds", type=int, default=60)
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
    from bench import fanout  # it imports this module: here, not at the top

    fanout.add_arguments(parser)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("bench: wrk is missing (make bench installs it with apt-get)")
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="session-bench-") as directory:
        results = []
        if "http" in args.only:
            results += http_scenarios(args, directory)
        if "http" in args.only or "hierarchy" in args.only:
            results += hierarchy_scenarios(args, directory)
        if "postgres" in args.only:
            results += postgres_scenarios(args)
        fan_out = []
        if "fan-out" in args.only:
            fan_out = fanout.fan_out_scenarios(args, f"sqlite+aiosqlite:///{directory}/fan-out.db")
        overload = overload_section(args, directory) if "overload" in args.only else ""
    previous = args.output.read_text() if args.output.exists() else "# Benchmark report\n"
    # A section not run this time stays as the last run left it.
    kept, _, kept_overload = previous.partition(f"\n{OVERLOAD_HEADING}\n")
    kept = kept.rstrip("\n") + "\n"
    text = report(results, args, started) if results else kept
    if fan_out:
        text = fanout.merged(text, fanout.section(fan_out, args))
    elif fanout.HEADING in kept:
        text = fanout.merged(text, fanout.HEADING + kept.split(fanout.HEADING, 1)[1])
    if not overload and kept_overload:
        overload = f"{OVERLOAD_HEADING}\n{kept_overload}"
    if overload:
        text += "\n" + overload
    args.output.write_text(text)
    progress(f"wrote {args.output}")
    print(text)


if __name__ == "__main__":
    main()
