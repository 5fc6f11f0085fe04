"""schema.graphql is generated from the code and contains the whole public contract."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from api.cli import export_schema

ROOT = Path(__file__).resolve().parent.parent
CHECKER = ROOT.parent / "shared" / "tools" / "check_contract.py"


def test_schema_file_matches_the_code() -> None:
    committed = (ROOT / "schema.graphql").read_text()
    assert committed == export_schema(), "schema.graphql is stale: run `make schema`"


def test_schema_contains_the_whole_contract() -> None:
    if not CHECKER.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHECKER} is missing: CI runs beside shared/")
        pytest.skip(f"the contract checker lives beside the repo in {CHECKER.parent}")
    result = subprocess.run(
        [sys.executable, str(CHECKER), str(ROOT / "schema.graphql")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
