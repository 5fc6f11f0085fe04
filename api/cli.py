"""The `session-service` command: serve, migrate, export-schema, documents export."""

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging.config
import os
import secrets
import sys
import tempfile
from pathlib import Path

import uvicorn

from api.app import server_options
from api.config import ConfigError, Settings, load_settings
from api.observability import logging_config
from api.persisted import manifest_of, trusted_manifest
from api.schema import build_schema
from models import Database


def export_schema(settings: Settings | None = None) -> str:
    return build_schema(settings).as_str() + "\n"


async def _migrate(settings: Settings) -> None:
    database = Database(settings.database_url, pooler=settings.database_pooler)
    try:
        await database.migrate()
    finally:
        await database.dispose()


def export_documents(folder: Path, settings: Settings) -> str:
    """The trusted-documents manifest of a folder of .graphql files, each operation validated
    against the schema, as JSON text; ValueError says what is wrong."""
    manifest = manifest_of(folder)
    schema = build_schema(settings)
    for entry in manifest["operations"]:
        errors = schema.documents.check(schema._schema, entry["body"]).errors
        if errors:
            raise ValueError(f"operation {entry['name']}: {errors[0].message}")
    return json.dumps(manifest, indent=2) + "\n"


def _documents(args: argparse.Namespace, settings: Settings) -> int:
    try:
        text = export_documents(Path(args.folder), settings)
    except (OSError, ValueError) as error:
        print(f"session-service: {error}", file=sys.stderr)
        return 1
    if args.check:
        if Path(args.output).read_text() != text:
            print(
                f"session-service: {args.output} is not the manifest of {args.folder}: run "
                "session-service documents export again",
                file=sys.stderr,
            )
            return 1
    elif args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="session-service", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the HTTP and WebSocket server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--log-format", choices=["text", "json"], help="overrides the setting")
    commands.add_parser("migrate", help="apply database migrations and exit")
    export = commands.add_parser("export-schema", help="write the GraphQL schema (SDL)")
    export.add_argument("--output", "-o", default="schema.graphql", help="a path, or - for stdout")
    documents = commands.add_parser("documents", help="trusted documents")
    actions = documents.add_subparsers(dest="action", required=True)
    manifest = actions.add_parser(
        "export", help="write the manifest of a folder of .graphql files (Apollo's format)"
    )
    manifest.add_argument("folder", help="searched for .graphql files, recursively")
    manifest.add_argument("--output", "-o", default="-", help="a path, or - for stdout")
    manifest.add_argument(
        "--check", action="store_true", help="exit 1 unless --output already holds it"
    )
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"session-service: configuration error: {error}", file=sys.stderr)
        return 2
    log_format = getattr(args, "log_format", None) or settings.log_format
    log_config = logging_config(log_format)
    logging.config.dictConfig(log_config)

    if args.command == "export-schema":
        sdl = export_schema(settings)
        if args.output == "-":
            sys.stdout.write(sdl)
        else:
            Path(args.output).write_text(sdl)
        return 0
    if args.command == "documents":
        return _documents(args, settings)
    if args.command == "migrate":
        asyncio.run(_migrate(settings))
        return 0
    if settings.trusted_documents is not None:
        schema = build_schema(settings)
        try:  # here, not in each worker: a bad manifest is one clear message
            trusted_manifest(settings.trusted_documents, schema.documents, schema._schema)
        except ConfigError as error:
            print(f"session-service: configuration error: {error}", file=sys.stderr)
            return 2
    is_open = not settings.tokens and not settings.issuers
    if is_open and not settings.allow_open_network and not _loopback(args.host):
        print(
            f"session-service: no tokens or issuers are configured, so the service is open: it "
            f"listens on loopback only, not {args.host}. Configure Tokens or Issuers, or set "
            "SESSION_SERVICE_ALLOW_OPEN_NETWORK=true to serve it open on purpose.",
            file=sys.stderr,
        )
        return 2
    if args.workers > 1 and settings.broadcast_url.startswith("memory://"):
        print(
            "session-service: --workers > 1 needs a shared bus: memory:// only reaches one "
            "process. Set SESSION_SERVICE_BROADCAST_URL to redis://… or postgres://…",
            file=sys.stderr,
        )
        return 2
    # Migrate once here, so that worker processes start on a current schema.
    asyncio.run(_migrate(settings))
    with contextlib.ExitStack() as stack:
        if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
            # Workers share their metrics through files in one directory.
            directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="session-metrics-"))
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        if args.workers > 1 and not settings.stream_cookie_secret:
            # Workers read their settings themselves: one secret for all, so that a stream
            # cookie issued by one is good at the others.
            os.environ["SESSION_SERVICE_STREAM_COOKIE_SECRET"] = secrets.token_urlsafe(32)
        uvicorn.run(
            "api.app:create_served_app",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=log_config,
            **server_options(settings),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
