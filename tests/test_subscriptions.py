"""Subscriptions over graphql-transport-ws: scoping, replay by cursor, expiry."""

from tests.client import Client

STARTED = """
subscription Started($dataSource: String!, $after: String) {
  sessionStarted(dataSource: $dataSource, after: $after) {
    cursor kind sessionKey dataSource occurredAt session { key identifier status }
  }
}"""


def test_session_started_delivers_only_its_data_source(client: Client) -> None:
    with client.subscribe(STARTED, {"dataSource": "car-1"}) as subscription:
        client.create(dataSource="car-2")
        created = client.create(dataSource="car-1", identifier="run 1")
        event = subscription.next()["sessionStarted"]
        assert event["kind"] == "STARTED"
        assert event["sessionKey"] == created["key"]
        assert event["session"]["identifier"] == "run 1"
        assert subscription.nothing_within(0.3)


def test_expired_cursor_fails_the_subscription(client: Client) -> None:
    with client.subscribe(STARTED, {"dataSource": "car-1", "after": "abc"}) as subscription:
        message = subscription.message()
        print(message)
