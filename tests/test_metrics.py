"""Prometheus /metrics: database-derived gauges right across instances, process counters."""

import re
from typing import Any

from tests.client import Client


def test_sessions_total_counts_sessions_created_by_any_instance(make_server: Any) -> None:
    first = make_server(metrics_cache_seconds=0)
    second = make_server(metrics_cache_seconds=0)
    with Client(first.url) as writer, Client(second.url) as reader:
        for source in ("car-1", "car-1", "car-2"):
            writer.create(dataSource=source)
        ended = writer.create(dataSource="car-2")["key"]
        writer.end(ended)
        samples = reader.metrics()
    assert samples['stream_api_sessions_total{data_source="car-1"}'] == 2
    assert samples['stream_api_sessions_total{data_source="car-2"}'] == 2
    assert samples['session_service_live_sessions{data_source="car-2"}'] == 1


def test_counters_and_latency_move_with_real_work(client: Client) -> None:
    before = client.metrics()
    key = client.create(dataSource="metrics-car")["key"]
    client.end(key)
    client.end(key)  # already ended: not counted again
    subscription_query = "subscription { sessionEvents { kind } }"
    with client.subscribe(subscription_query) as subscription:
        during = client.metrics()
        client.create(dataSource="metrics-car")
        subscription.next()
    after = client.metrics()

    def delta(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert delta('session_service_sessions_created_total{data_source="metrics-car"}') == 2
    assert delta('session_service_sessions_ended_total{data_source="metrics-car"}') == 1
    assert delta('session_service_graphql_operation_seconds_count{operation_type="mutation"}') == 4
    assert delta("session_service_events_delivered_total") == 1
    assert during["session_service_websocket_connections"] >= 1
    assert during["session_service_subscriptions"] >= 1


def test_metrics_have_no_session_keys_in_labels(client: Client) -> None:
    key = client.create(dataSource="car-1")["key"]
    text = client.http.get("/metrics").text
    assert key not in text
    assert not re.search(r'session_key="', text)
