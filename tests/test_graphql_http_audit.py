"""graphql-http's GraphQL-over-HTTP server audit, run by Node against `session-service serve`."""

import json
import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.services import Served, service_environment

AUDIT = Path(__file__).resolve().parent / "audit"
IN_CI = os.environ.get("CI", "").lower() == "true"


def _node() -> str:
    """The node executable, once tests/audit/node_modules is installed; skip (fail in CI) else."""
    node = shutil.which("node")
    if node is not None and (AUDIT / "node_modules" / "graphql-http").is_dir():
        return node
    missing = "node is not on PATH" if node is None else "tests/audit/node_modules is missing"
    message = f"graphql-http audit: {missing}; run `make test`, which installs it (needs npm)"
    if IN_CI:
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


def test_the_graphql_http_server_audit_finds_no_error_and_no_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = _node()
    env = service_environment(f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}")
    with Served(env, cwd=tmp_path) as server:
        run = subprocess.run(
            [node, str(AUDIT / "audit.mjs"), f"{server.url}/graphql"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    results: list[dict[str, Any]] = [line for line in lines if "status" in line]
    assert results, f"the audit printed no results (exit {run.returncode}):\n{run.stderr}"
    counts = Counter(result["status"] for result in results)
    with capsys.disabled():
        print(
            f"\ngraphql-http audit: {counts['ok']} ok, {counts['notice']} notice, "
            f"{counts['warn']} warn, {counts['error']} error"
        )
        for result in results:
            if result["status"] in ("warn", "error"):
                print(f"  {result['status']} {result['id']} {result['name']}: {result['reason']}")
    findings = [result for result in results if result["status"] in ("warn", "error")]
    assert not findings, "\n".join(json.dumps(finding) for finding in findings)
    assert run.returncode == 0, f"audit.mjs exited {run.returncode}:\n{run.stderr}"
