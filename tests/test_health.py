"""/healthz answers while the process runs; /readyz when the database does too."""

from tests.client import Client


def test_health_endpoints_answer(client: Client) -> None:
    assert client.http.get("/healthz").json() == {"status": "ok"}
    ready = client.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"] == "ok"
