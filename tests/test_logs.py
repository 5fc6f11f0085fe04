"""One structured log line per operation, without tokens or detail values."""

import json
import logging
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from api.observability import JsonFormatter, TextFormatter
from tests.client import Client
from tests.services import Served, service_environment


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


def test_text_format_indents_a_records_further_lines_and_ends_with_its_traceback() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "two\nlines", (), sys.exc_info()
        )
    record.__dict__["outcome"] = "INTERNAL"
    first, *further = TextFormatter().format(record).split("\n")
    assert first.endswith(" ERROR x two")
    assert further[0] == "  lines outcome=INTERNAL"
    assert further[-1] == "  ValueError: boom"
    assert all(line.startswith("  ") for line in further)


def test_json_format_writes_one_object_per_line_with_the_extra_fields() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "graphql %s", ("query",), None)
    record.__dict__["outcome"] = "ok"
    line = JsonFormatter().format(record)
    assert "\n" not in line
    document = json.loads(line)
    assert document["message"] == "graphql query"
    assert document["outcome"] == "ok"


# -- a served process's own output -------------------------------------------------------------

ANSI = re.compile(r"\x1b\[")
FIELD = re.compile(r" ([a-z_]+)=")


def _served_log(tmp_path: Path, log_format: str) -> list[str]:
    """The lines `session-service serve` writes from start to stop: uvicorn's own, a failed and a
    successful operation, and a WebSocket opened and closed."""
    env = service_environment(
        f"sqlite+aiosqlite:///{tmp_path / 'logs.db'}",
        SESSION_SERVICE_LOG_FORMAT=log_format,
        SESSION_SERVICE_LOG_OPERATIONS="all",
    )
    log = tmp_path / "serve.log"
    with Served(env, log=log) as server, Client(server.url) as client:
        client.http.headers["x-request-id"] = "req-7"
        client.create(dataSource="car-1")
        client.execute("query Broken { session(key: 1, nope: 2) { key } }")
        url = server.url.replace("http://", "ws://") + "/graphql"
        with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
            ws.send(json.dumps({"type": "connection_init"}))
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
    return log.read_text().splitlines()


def test_a_served_process_writes_text_lines_with_each_field_once_and_no_colour_codes(
    tmp_path: Path,
) -> None:
    lines = _served_log(tmp_path, "text")
    assert not [line for line in lines if ANSI.search(line)]
    # A record's further lines (here a migration's two-line message) are indented.
    lines = [line for line in lines if not line.startswith("  ")]
    for line in lines:
        fields = FIELD.findall(line)
        assert len(fields) == len(set(fields)), line
        assert not {"asctime", "color_message"} & set(fields), line
        # "2026-12-07 13:12:35,123 INFO logger message…": the time once, at the start.
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ \S+ ", line), line
    text = "\n".join(lines)
    assert text.count("Uvicorn running on") == 1  # uvicorn's, with a color_message
    assert "uvicorn.error" in text and "Shutting down" in text
    created = next(line for line in lines if "graphql mutation Create" in line)
    assert "outcome=ok" in created and "request_id=req-7" in created
    assert "outcome=VALIDATION" in next(line for line in lines if "Broken" in line)


def test_a_served_process_writes_one_json_object_a_line_without_colour_codes(
    tmp_path: Path,
) -> None:
    lines = _served_log(tmp_path, "json")
    documents = [json.loads(line) for line in lines]
    assert all(isinstance(document, dict) for document in documents)
    assert not [line for line in lines if ANSI.search(line) or "\\u001b[" in line]
    assert not [d for d in documents if {"color_message", "asctime"} & set(d)]
    messages = [d["message"] for d in documents]
    assert any(m.startswith("Uvicorn running on") for m in messages)
    assert any(
        d["logger"] == "uvicorn.error" and "Shutting down" in d["message"] for d in documents
    )
    created = next(d for d in documents if d.get("operation_name") == "Create")
    assert (created["outcome"], created["request_id"]) == ("ok", "req-7")
