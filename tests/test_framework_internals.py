"""The framework internals api/ relies on, each pinned in pyproject.toml: these fail when an
upgrade moves one, before a subscriber or a request notices."""

from types import SimpleNamespace

from graphql import parse
from graphql.execution import Executor, execute_subscription_event
from strawberry.http import process_result
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext, validate_document
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType

from api import Settings
from api.executor import PerEventExecutor
from api.schema import build_schema

SUBSCRIPTION = "subscription { sessionEvents { cursor } }"


def _executor() -> Executor:
    schema = build_schema(Settings())
    executor = PerEventExecutor.build(schema._schema, parse(SUBSCRIPTION))
    assert isinstance(executor, Executor), executor
    return executor


def test_graphql_core_shares_the_subfield_memo_with_every_per_event_executor() -> None:
    """The leak api/executor.py works around: graphql-core's per-event copy shares the memo
    keyed by per-event lists. If this stops holding, the workaround can go."""
    executor = _executor()
    memo = executor._relevant_sub_fields
    assert isinstance(memo, dict)
    plain = Executor.build_per_event_executor(executor, {"sessionEvents": None})
    assert plain._relevant_sub_fields is memo


def test_each_event_gets_a_fresh_memo_and_is_executed_by_graphql_core() -> None:
    executor = _executor()
    event = executor.build_per_event_executor(SimpleNamespace(cursor="7"))
    assert event._relevant_sub_fields == {}
    assert event._relevant_sub_fields is not executor._relevant_sub_fields
    result = execute_subscription_event(event)
    assert result.data == {"sessionEvents": {"cursor": "7"}}  # type: ignore[union-attr]


def test_the_strawberry_parts_the_fast_path_answers_with() -> None:
    """Strawberry's validation (with its own rules), result shape and refusal reasons, which
    the fast path (api/view.py, SessionSchema.execute) reuses to answer as Strawberry does."""
    schema = build_schema(Settings())
    assert issubclass(PerEventExecutor, StrawberryGraphQLCoreExecutionContext)
    assert validate_document(schema._schema, parse("{ __typename }"), ()) == []
    assert process_result(ExecutionResult(data={"a": 1}, errors=None)) == {"data": {"a": 1}}
    assert "subscriptions are not allowed" in InvalidOperationTypeError(
        OperationType.SUBSCRIPTION
    ).as_http_error_reason("POST")
    assert CannotGetOperationTypeError("X").as_http_error_reason()
