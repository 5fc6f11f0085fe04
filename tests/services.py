"""Private service processes for fault tests: started, killed and restarted only by the test."""

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import redis


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own on a free loopback port, so killing it harms nobody else."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> "PrivateRedis":
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind", "127.0.0.1",
                "--port", str(self.port),
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.05)

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        self.kill()

    def processes(self) -> list[int]:
        assert self.process is not None
        return [self.process.pid]


COMMAND = str(Path(sys.executable).parent / "session-service")


def service_environment(database_url: str, **extra: str) -> dict[str, str]:
    """This process's environment without any SESSION_SERVICE_ setting, plus the given ones."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSION_SERVICE_")}
    # Rate limits off unless a test turns them on: tests drive load from one address.
    unlimited = {
        "SESSION_SERVICE_MUTATION_RATE_PER_SECOND": "0",
        "SESSION_SERVICE_SUBSCRIBE_RATE_PER_SECOND": "0",
    }
    return {**env, **unlimited, "SESSION_SERVICE_DATABASE_URL": database_url, **extra}


class Served:
    """`session-service serve` in a process of its own, on a free loopback port."""

    def __init__(
        self,
        env: dict[str, str],
        *args: str,
        cwd: Path | None = None,
        port: int | None = None,
        command: str = COMMAND,
        log: Path | None = None,
    ) -> None:
        # A given port restarts a service where its clients expect it.
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # The log (stderr) goes to `log` when given; the process keeps its own copy of the file.
        with contextlib.ExitStack() as files:
            output = files.enter_context(log.open("wb")) if log else subprocess.DEVNULL
            self.process = subprocess.Popen(
                [command, "serve", "--port", str(self.port), *args],
                env=env,
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=output,
            )

    def __enter__(self) -> "Served":
        try:
            self._wait_until_healthy()
        except BaseException:
            # `with` never calls __exit__ when __enter__ raises: a server left running would
            # outlive the test and fail a later one with its ResourceWarning.
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_healthy(self) -> None:
        # Generous: on a loaded machine a new process takes long to import and migrate.
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{self.url}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert self.process.poll() is None, "session-service serve exited"
            assert time.monotonic() < deadline, "session-service serve did not answer in 90 s"
            time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=30)


class PrivatePostgres:
    """A PostgreSQL cluster of our own (initdb in a temporary directory, a free port), so that
    stopping it harms nobody else. Run as the postgres user when the tests run as root."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="session-service-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"
        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        assert found, "PostgreSQL server binaries not found under /usr/lib/postgresql"
        self.bin = found[-1].parent

    def _run(self, *args: str) -> None:
        command = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=60)

    def start(self) -> "PrivatePostgres":
        if not self.data.exists():
            if os.geteuid() == 0:
                shutil.chown(self.directory, "postgres")
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust")
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
        log = str(self.directory / "server.log")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def processes(self) -> list[int]:
        """This cluster's postmaster (from its postmaster.pid), then its children (backends and
        helpers): pausing them in that order lets the postmaster start no new one meanwhile."""
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        return [postmaster, *children(postmaster)]

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def pause(pids: list[int]) -> None:
    """SIGSTOP: the processes keep their sockets open and answer nothing."""
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)


def resume(pids: list[int]) -> None:
    for pid in reversed(pids):
        os.kill(pid, signal.SIGCONT)


def children(pid: int) -> list[int]:
    """The live child processes of `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


class PrivatePgBouncer:
    """Debian's PgBouncer of our own in front of one PostgreSQL, on a free loopback port, in
    transaction pooling mode with a small server pool, so that client transactions take turns
    on the same few server connections. Run as the postgres user when the tests run as root
    (PgBouncer refuses to run as root)."""

    def __init__(self, upstream_port: int, *, pool_size: int = 2, max_clients: int = 500) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="session-service-pgbouncer-"))
        self.port = free_port()
        self.upstream_port = upstream_port
        self.pool_size = pool_size
        self.max_clients = max_clients
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        return os.access(PGBOUNCER, os.X_OK)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> "PrivatePgBouncer":
        (self.directory / "userlist.txt").write_text('"postgres" ""\n')
        config = self.directory / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={self.upstream_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.directory / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            f"default_pool_size = {self.pool_size}\n"
            "min_pool_size = 0\n"
            "reserve_pool_size = 0\n"
            f"max_client_conn = {self.max_clients}\n"
            f"logfile = {self.directory / 'pgbouncer.log'}\n"
        )
        command = [PGBOUNCER, str(config)]
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres")
            command[1:1] = ["-u", "postgres"]
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            assert self.process.poll() is None, f"pgbouncer exited: {self.log()}"
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=1),
            ):
                return self
            assert time.monotonic() < deadline, "private pgbouncer did not start"
            time.sleep(0.05)

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.directory / "pgbouncer.log").read_text()[-4000:]
        return ""

    def stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


def snippet(path: Path, name: str) -> str:
    """The code between `// README: <name> begin` and `// README: <name> end` in a client's
    file: what the README shows, checked by the tests that run the file."""
    text = path.read_text()
    found = re.search(rf"// README: {name} begin\n(.*?)\n *// README: {name} end", text, re.S)
    assert found, f"no {name} snippet in {path}"
    return found.group(1)
