"""Settings from the environment and the JSON config file, original keys included."""

import json
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from api import create_app
from api.config import ConfigError, load_settings


def test_defaults_are_the_embedded_ones() -> None:
    settings = load_settings({})
    assert settings.database_url == "sqlite+aiosqlite:///./sessions.db"
    assert settings.broadcast_url == "memory://"
    assert settings.integrate_session_management is True
    assert settings.profile == "development"


def test_config_file_accepts_the_original_keys_and_env_overrides_it(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {"IntegrateSessionManagement": False, "Profile": "production", "LimitPageSize": 20}
        )
    )
    settings = load_settings(
        {"SESSION_SERVICE_CONFIG": str(path), "SESSION_SERVICE_PROFILE": "development"}
    )
    assert settings.integrate_session_management is False
    assert settings.profile == "development"
    assert settings.limits.page_size == 20


def test_environment_variables_set_limits() -> None:
    settings = load_settings({"SESSION_SERVICE_LIMIT_DETAIL_VALUE_LENGTH": "10"})
    assert settings.limits.detail_value_length == 10


def test_unknown_keys_are_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"IntegrateSessionManagment": True}))
    with caplog.at_level(logging.WARNING):
        load_settings({"SESSION_SERVICE_CONFIG": str(path), "SESSION_SERVICE_DATABSE_URL": "x"})
    assert "IntegrateSessionManagment" in caplog.text
    assert "SESSION_SERVICE_DATABSE_URL" in caplog.text


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SESSION_SERVICE_INTEGRATE_SESSION_MANAGEMENT", "maybe"),
        ("SESSION_SERVICE_PROFILE", "staging"),
        ("SESSION_SERVICE_SUBSCRIBER_QUEUE_SIZE", "-1"),
        ("SESSION_SERVICE_DATABASE_URL", "sessions.db"),
        ("SESSION_SERVICE_LIMIT_PAGE_SIZE", "0"),
        ("SESSION_SERVICE_DATABASE_POOLER", "pgcat"),
    ],
)
def test_invalid_values_are_refused_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        load_settings({key: value})


def test_an_unreadable_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="SESSION_SERVICE_CONFIG"):
        load_settings({"SESSION_SERVICE_CONFIG": str(path)})


POOLED = {
    "SESSION_SERVICE_DATABASE_URL": "postgresql+asyncpg://app@db.internal:6432/sessions",
    "SESSION_SERVICE_DATABASE_POOLER": "pgbouncer",
}


def test_a_postgres_bus_through_the_pooler_is_refused() -> None:
    bus = {"SESSION_SERVICE_BROADCAST_URL": "postgres://app@DB.internal:6432/sessions"}
    with pytest.raises(ConfigError, match=r"SESSION_SERVICE_BROADCAST_URL.*direct connection"):
        load_settings(POOLED | bus)
    with pytest.raises(ConfigError, match="SESSION_SERVICE_BROADCAST_URL"):
        create_app(replace(load_settings(POOLED), broadcast_url=bus[next(iter(bus))]))


@pytest.mark.parametrize(
    "bus",
    ["postgres://app@db.internal:5432/sessions", "redis://127.0.0.1:6379/0", "memory://"],
)
def test_a_bus_that_does_not_go_through_the_pooler_is_accepted(bus: str) -> None:
    settings = load_settings(POOLED | {"SESSION_SERVICE_BROADCAST_URL": bus})
    assert settings.database_pooler == "pgbouncer"
    assert load_settings({"SESSION_SERVICE_BROADCAST_URL": bus}).database_pooler == "none"
