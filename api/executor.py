"""The graphql-core executor for every operation, with fixes for long-lived subscriptions."""

import weakref
from collections.abc import Awaitable, Sequence
from typing import Any

from graphql import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class PerEventExecutor(StrawberryGraphQLCoreExecutionContext):
    """Works around two things graphql-core 3.3 does that keep memory:

    - It copies its executor for every event but shares the copy's subfield memo, keyed by the
      identity of per-event lists: it never hits and keeps about 1.7 KB per event for the life
      of the subscription. Each event's executor gets a fresh memo, so a long-lived audience's
      memory stays flat (api/fanout.py renders with this).
    - Its resolver helpers are the executor's own bound methods, a reference cycle: a finished
      executor, its context and a WebSocket connection's every object behind that, waited for
      a full collection (rare, api/app.py), which under churn is megabytes. These helpers hold
      the executor weakly: reference counting frees it when its operation or audience ends.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_helpers = _helpers(self)

    def build_per_event_executor(self, payload: Any) -> Any:
        executor: PerEventExecutor = super().build_per_event_executor(payload)  # type: ignore[assignment]
        executor._relevant_sub_fields = {}
        # Its own helpers: the copy may outlive the executor it was copied from.
        executor.async_helpers = _helpers(executor)
        return executor


def _helpers(executor: PerEventExecutor) -> GraphQLResolveInfoHelpers:
    """graphql-core's helpers, calling the executor only while it is executing (and so alive)."""
    ref = weakref.ref(executor)

    def gather(values: Sequence[Awaitable[Any]]) -> Awaitable[list[Any]]:
        return _alive(ref).gather_async_work(values)

    def track(values: Sequence[Any]) -> None:
        _alive(ref).track_async_work(values)

    return GraphQLResolveInfoHelpers(gather=gather, track=track)


def _alive(ref: "weakref.ReferenceType[PerEventExecutor]") -> PerEventExecutor:
    executor = ref()
    assert executor is not None  # a resolver runs only while its executor executes
    return executor
