"""The GraphQL face of the session service: schema, app, configuration and CLI."""

from api.app import create_app
from api.config import ConfigError, Settings, load_settings
from api.schema import build_schema

__all__ = ["ConfigError", "Settings", "build_schema", "create_app", "load_settings"]
