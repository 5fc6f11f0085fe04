"""One structured log line per operation, without tokens or detail values."""

import json
import logging

import pytest

from api.observability import JsonFormatter
from tests.client import Client


def test_each_operation_logs_type_name_duration_outcome_and_request_id(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="session_service.operations"):
        client.http.headers["x-request-id"] = "req-42"
        client.create(dataSource="car-1", details=[{"name": "secret", "value": "s3cr3t-value"}])
        client.execute("query Broken { session(key: 1, nope: 2) { key } }")
    records = [r for r in caplog.records if r.name == "session_service.operations"]
    created, broken = records[-2:]
    assert created.__dict__["operation_type"] == "mutation"
    assert created.__dict__["operation_name"] == "Create"
    assert created.__dict__["outcome"] == "ok"
    assert created.__dict__["request_id"] == "req-42"
    assert created.__dict__["duration_ms"] > 0
    assert broken.__dict__["outcome"] == "VALIDATION"
    assert "s3cr3t-value" not in caplog.text


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
