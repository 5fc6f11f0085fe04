"""Per-operation observation: latency metrics and one structured log line per operation."""

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from api.metrics import OPERATION_SECONDS

log = logging.getLogger("session_service.operations")


def _outcome(errors: list[GraphQLError] | None) -> str:
    if not errors:
        return "ok"
    codes = {(error.extensions or {}).get("code", "ERROR") for error in errors}
    return ",".join(sorted(codes))


class ObserveOperations(SchemaExtension):
    """Times every operation and logs its type, name, duration, outcome and request id.
    Variables are never logged: they may hold detail values."""

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        elapsed = time.perf_counter() - started
        context = self.execution_context
        try:
            operation_type = context.operation_type.value
        except Exception:  # the document did not parse: there is no operation
            operation_type = "invalid"
        OPERATION_SECONDS.labels(operation_type).observe(elapsed)
        errors = getattr(context.result, "errors", None) or context.pre_execution_errors
        log.info(
            "graphql %s %s",
            operation_type,
            context.operation_name or "-",
            extra={
                "operation_type": operation_type,
                "operation_name": context.operation_name,
                "duration_ms": round(elapsed * 1000, 3),
                "outcome": _outcome(errors),
                "request_id": getattr(context.context, "request_id", None),
            },
        )


_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the record's `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        document.update((k, v) for k, v in record.__dict__.items() if k not in _STANDARD)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines, with the record's `extra` fields appended as key=value."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = [f"{k}={v}" for k, v in record.__dict__.items() if k not in _STANDARD]
        return " ".join([line, *extra])


def logging_config(log_format: str) -> dict[str, Any]:
    """A dictConfig for the server and every worker process: all records through one handler."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": f"{formatter.__module__}.{formatter.__qualname__}"}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["default"], "level": "INFO"},
    }
