"""The one schema extension every operation runs through: cached parsing and validation with
the document limits, coded and masked errors, and a metric and a log line per operation.

One extension instead of seven: each of Strawberry's hooks is a generator entered and left for
every operation, and the stock caches re-hash the document on every lookup. Ours keys parsing
and validation on the text of the document, once.
"""

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import Any

from graphql import DocumentNode, GraphQLError, GraphQLSchema, parse
from graphql.validation import ASTValidationRule
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

from api.masking import coded
from api.metrics import OPERATION_SECONDS

log = logging.getLogger("session_service.operations")

Checked = tuple[DocumentNode, list[GraphQLError]]


class Documents:
    """Parsed and validated documents by their text, the newest `size` of them. A document
    that does not parse is not kept: its error is raised again."""

    def __init__(self, rules: Sequence[type[ASTValidationRule]], max_tokens: int, size: int = 512):
        self.rules = tuple(rules)
        self.max_tokens = max_tokens
        self.size = size
        self._checked: OrderedDict[str, Checked] = OrderedDict()

    def parse(self, query: str) -> DocumentNode:
        found = self._checked.get(query)
        if found is not None:
            self._checked.move_to_end(query)
            return found[0]
        return parse(query, max_tokens=self.max_tokens)

    def validate(
        self,
        schema: GraphQLSchema,
        query: str,
        document: DocumentNode,
        rules: Sequence[type[ASTValidationRule]],
    ) -> list[GraphQLError]:
        found = self._checked.get(query)
        if found is not None and found[0] is document:
            return found[1]
        errors = validate_document(schema, document, (*rules, *self.rules))
        self._checked[query] = (document, errors)
        if len(self._checked) > self.size:
            self._checked.popitem(last=False)
        return errors


class OperationPolicy(SchemaExtension):
    """Made for each operation (Strawberry calls the factory); `documents` is shared."""

    def __init__(self, documents: Documents, hide_suggestions: bool) -> None:
        super().__init__()
        self.documents = documents
        self.hide_suggestions = hide_suggestions

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        elapsed = time.perf_counter() - started
        context = self.execution_context
        result = context.result
        if result is not None and result.errors:
            result.errors = [coded(error, self.hide_suggestions) for error in result.errors]
        try:
            operation_type = context.operation_type.value
        except Exception:  # the document did not parse: there is no operation
            operation_type = "invalid"
        OPERATION_SECONDS.labels(operation_type).observe(elapsed)
        if log.isEnabledFor(logging.INFO):
            errors = getattr(result, "errors", None) or context.pre_execution_errors
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

    def on_stream_result(self, result: Any) -> Iterator[None]:
        """A subscription's results (its failure to start, when it fails) are coded too."""
        if getattr(result, "errors", None):
            result.errors = [coded(error, self.hide_suggestions) for error in result.errors]
        yield

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query is not None:
            context.graphql_document = self.documents.parse(context.query)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        assert context.graphql_document is not None  # parsed before validation
        context.pre_execution_errors = self.documents.validate(
            context.schema._schema,
            context.query or "",
            context.graphql_document,
            context.validation_rules,
        )
        yield


def _outcome(errors: list[GraphQLError] | None) -> str:
    if not errors:
        return "ok"
    codes = {(error.extensions or {}).get("code", "ERROR") for error in errors}
    return ",".join(sorted(codes))
