"""How every operation is checked and observed: documents parsed and validated once by their
text with the document limits, errors coded and masked, a metric and a log line per operation.

Queries and mutations over HTTP run through `SessionSchema.execute` (api/schema.py), which calls
these directly. Operations over WebSocket run through Strawberry's own pipeline, where the
`OperationPolicy` extension applies the same functions.
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse, specified_rules
from graphql.validation import ASTValidationRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from api.masking import coded
from api.metrics import OPERATION_SECONDS

log = logging.getLogger("session_service.operations")


@dataclass(slots=True)
class Checked:
    """A parsed document, its validation errors, and the compiled plans of its operations by
    name (api/compiled.py), which live as long as it does."""

    document: DocumentNode
    errors: list[GraphQLError]
    plans: dict[str | None, Any] = field(default_factory=dict)


class Documents:
    """Parsed and validated documents by their text, the newest `size` of them. A document
    that does not parse is not kept: its error is raised again."""

    def __init__(self, rules: Sequence[type[ASTValidationRule]], max_tokens: int, size: int = 512):
        self.rules = (*specified_rules, *rules)
        self.max_tokens = max_tokens
        self.size = size
        self._checked: OrderedDict[str, Checked] = OrderedDict()
        self._pinned: dict[str, Checked] = {}

    def pin(self, schema: GraphQLSchema, query: str) -> Checked:
        """Check a document now and keep it for good (a trusted document)."""
        self._pinned[query] = found = self.check(schema, query)
        return found

    def check(self, schema: GraphQLSchema, query: str) -> Checked:
        """The document and its validation errors; raises the GraphQLError of one that does not
        parse."""
        found = self._checked.get(query)
        if found is not None:
            self._checked.move_to_end(query)
            return found
        if (pinned := self._pinned.get(query)) is not None:
            return pinned
        document = parse(query, max_tokens=self.max_tokens)
        found = Checked(document, validate_document(schema, document, self.rules))
        self._checked[query] = found
        if len(self._checked) > self.size:
            self._checked.popitem(last=False)
        return found


def observe(
    operation_type: str,
    operation_name: str | None,
    started: float,
    errors: Sequence[GraphQLError] | None,
    request_id: str | None,
    log_all: bool,
) -> None:
    """The operation's latency metric and, if it failed or `log_all`, its log line. Variables
    are never logged: they may hold detail values."""
    elapsed = time.perf_counter() - started
    _seconds(operation_type).observe(elapsed)
    if (log_all or errors) and log.isEnabledFor(logging.INFO):
        log.info(
            "graphql %s %s",
            operation_type,
            operation_name or "-",
            extra={
                "operation_type": operation_type,
                "operation_name": operation_name,
                "duration_ms": round(elapsed * 1000, 3),
                "outcome": _outcome(errors),
                "request_id": request_id,
            },
        )


@cache
def _seconds(operation_type: str) -> Any:
    """The histogram's child for one operation type (`labels` looks it up on every call)."""
    return OPERATION_SECONDS.labels(operation_type)


def _outcome(errors: Sequence[GraphQLError] | None) -> str:
    if not errors:
        return "ok"
    codes = {(error.extensions or {}).get("code", "ERROR") for error in errors}
    return ",".join(sorted(codes))


class OperationPolicy(SchemaExtension):
    """The same checks for operations over WebSocket, as one extension: made for each operation
    (Strawberry calls the factory); `documents` is shared."""

    def __init__(self, documents: Documents, hide_suggestions: bool, log_all: bool) -> None:
        super().__init__()
        self.documents = documents
        self.hide_suggestions = hide_suggestions
        self.log_all = log_all
        self._errors: list[GraphQLError] = []

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        context = self.execution_context
        result = context.result
        if result is not None and result.errors:
            result.errors = [coded(error, self.hide_suggestions) for error in result.errors]
        try:
            operation_type = context.operation_type.value
        except Exception:  # the document did not parse: there is no operation
            operation_type = "invalid"
        errors = getattr(result, "errors", None) or context.pre_execution_errors
        request_id = getattr(context.context, "request_id", None)
        observe(operation_type, context.operation_name, started, errors, request_id, self.log_all)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        """A subscription's results (its failure to start, when it fails) are coded too."""
        if getattr(result, "errors", None):
            result.errors = [coded(error, self.hide_suggestions) for error in result.errors]
        yield

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None:
            try:
                checked = self.documents.check(context.schema._schema, context.query)
            except GraphQLError:
                # Raised here, before Strawberry's parse, it would escape the handler that
                # answers it (over WebSocket: a bare `complete`). Strawberry parses it again,
                # with the same limit, and answers the error.
                context.parse_options = {
                    **context.parse_options,
                    "max_tokens": self.documents.max_tokens,
                }
            else:
                context.graphql_document, self._errors = checked.document, checked.errors
        yield

    def on_validate(self) -> Iterator[None]:
        self.execution_context.pre_execution_errors = self._errors
        yield
