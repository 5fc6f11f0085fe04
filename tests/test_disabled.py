"""IntegrateSessionManagement false: mutations answer Disabled, queries fail with DISABLED."""

from typing import Any

from tests.client import Client


def test_disabled_service_refuses_mutations_and_queries(make_server: Any) -> None:
    server = make_server(integrate_session_management=False)
    with Client(server.url) as client:
        result = client.create_result(dataSource="car-1")
        assert result["__typename"] == "SessionManagementDisabledError"
        assert result["code"] == "DISABLED"
        response = client.execute("{ currentSessions { key } }")
        assert response["errors"][0]["extensions"]["code"] == "DISABLED"
        assert response["data"] is None
