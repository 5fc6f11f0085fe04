"""createSession: defaults, validation, associates and idempotency."""

from tests.client import Client


def test_create_session_applies_the_documented_defaults(client: Client) -> None:
    session = client.create(dataSource="car-1")
    assert session["type"] == "Session"
    assert session["version"] == 1
    assert session["utcOffsetSeconds"] == 0
    assert session["identifier"] == ""
    assert session["status"] == "LIVE"
    assert session["isComplete"] is False
    assert session["revision"] == 1
    assert session["endedAt"] is None
    assert len(session["key"]) == 36


def test_create_session_round_trips_unicode_details(client: Client) -> None:
    session = client.create(details=[{"name": "temp", "value": "22°C"}], streams=["ä", "b"])
    fetched = client.session(session["key"])
    assert fetched is not None
    assert fetched["details"] == [{"name": "temp", "value": "22°C"}]
    assert fetched["streams"] == ["ä", "b"]
