"""One structured log line per operation, without tokens or detail values."""

import json
import logging
from typing import Any

import pytest

from api.observability import JsonFormatter
from tests.client import Client


def _operation_logs(client: Client, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    with caplog.at_level(logging.INFO, logger="session_service.operations"):
        client.http.headers["x-request-id"] = "req-42"
        client.create(dataSource="car-1", details=[{"name": "secret", "value": "s3cr3t-value"}])
        client.execute("query Broken { session(key: 1, nope: 2) { key } }")
    return [r for r in caplog.records if r.name == "session_service.operations"]


def test_with_log_operations_all_each_operation_logs_type_name_duration_outcome_and_request_id(
    make_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with Client(make_server(log_operations="all").url) as client:
        records = _operation_logs(client, caplog)
    created, broken = records[-2:]
    assert created.__dict__["operation_type"] == "mutation"
    assert created.__dict__["operation_name"] == "Create"
    assert created.__dict__["outcome"] == "ok"
    assert created.__dict__["request_id"] == "req-42"
    assert created.__dict__["duration_ms"] > 0
    assert broken.__dict__["outcome"] == "VALIDATION"
    assert "s3cr3t-value" not in caplog.text


def test_by_default_only_failed_operations_are_logged(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    records = _operation_logs(client, caplog)
    assert [r.__dict__["operation_name"] for r in records] == ["Broken"]
    assert records[0].__dict__["outcome"] == "VALIDATION"
    assert records[0].__dict__["request_id"] == "req-42"


def test_request_id_is_returned_to_the_client(client: Client) -> None:
    response = client.http.post("/graphql", json={"query": "{ dataSources { name } }"})
    assert len(response.headers["x-request-id"]) == 32


def test_json_format_writes_one_object_per_line_with_the_extra_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "graphql %s", ("query",), None)
    record.__dict__["outcome"] = "ok"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    document = json.loads(line)
    assert document["message"] == "graphql query"
    assert document["outcome"] == "ok"
