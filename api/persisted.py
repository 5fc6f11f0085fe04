"""Persisted and trusted documents.

A request may name its document instead of sending it, in the three ways clients do: Apollo's
automatic persisted queries (`extensions.persistedQuery.sha256Hash`, with the text sent once to
register it), the GraphQL-over-HTTP persisted-documents appendix (`documentId: "sha256:<hex>"`)
and Relay (`doc_id`). Registered texts are kept in the database, so every instance knows them.

With a manifest of trusted documents configured, only those run (any id or exact text of
theirs), except for admin tokens; they are parsed and validated once at start-up.
"""

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    parse,
    print_ast,
)
from graphql.utilities import separate_operations

from api.config import PREFIX, ConfigError
from api.errors import ApiError
from api.extension import Documents
from api.principal import OPEN, Principal, Role
from models.documents import DocumentStore

SHA256 = re.compile(r"[0-9a-f]{64}")
MANIFEST_FORMAT = "apollo-persisted-query-manifest"


def not_found() -> ApiError:
    """What Apollo's and urql's persisted-query links recognise, to retry with the text."""
    return ApiError("PERSISTED_QUERY_NOT_FOUND", "PersistedQueryNotFound")


def required() -> ApiError:
    return ApiError(
        "PERSISTED_QUERY_REQUIRED", "Only trusted documents run here: send a persisted id."
    )


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Named:
    """How a request names its document: `id` as given, `sha256` when it is a text's hash, and
    `automatic` for Apollo's persisted queries, whose text may come along to be registered."""

    id: str
    sha256: str | None
    automatic: bool = False


def named(extensions: Any, document_id: Any, doc_id: Any) -> Named | None:
    """The document id a request gives, or None; a malformed one is a VALIDATION error."""
    persisted = extensions.get("persistedQuery") if isinstance(extensions, dict) else None
    given = [found for found in (persisted, document_id, doc_id) if found is not None]
    if len(given) > 1:
        raise ApiError("VALIDATION", "Name the document once: persistedQuery, documentId, doc_id.")
    if persisted is not None:
        if not isinstance(persisted, dict) or persisted.get("version") != 1:
            raise ApiError("PERSISTED_QUERY_NOT_SUPPORTED", "PersistedQueryNotSupported")
        digest = persisted.get("sha256Hash")
        if not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise ApiError("VALIDATION", "persistedQuery.sha256Hash must be 64 hex digits.")
        return Named(digest, digest, automatic=True)
    if document_id is not None:
        if not isinstance(document_id, str) or not document_id:
            raise ApiError("VALIDATION", "documentId must be a non-empty string.")
        prefix, _, digest = document_id.partition(":")
        is_hash = prefix == "sha256" and SHA256.fullmatch(digest)
        return Named(document_id, digest if is_hash else None)
    if doc_id is not None:
        if not isinstance(doc_id, str) or not doc_id:
            raise ApiError("VALIDATION", "doc_id must be a non-empty string.")
        return Named(doc_id, doc_id if SHA256.fullmatch(doc_id) else None)
    return None


# -- the manifest --------------------------------------------------------------------------


def operations_of(texts: Iterable[tuple[str, str]]) -> list[dict[str, str]]:
    """Manifest entries for the operations of some documents, given as (where, text): each
    operation with the fragments it uses, as one text; its id is that text's SHA-256. Fragments
    may live in any of the documents, as front-end builds keep them."""
    definitions: list[Any] = []
    for where, text in texts:
        try:
            definitions.extend(parse(text).definitions)
        except Exception as error:
            raise ValueError(f"{where}: {error}") from None
    operations = [d for d in definitions if isinstance(d, OperationDefinitionNode)]
    for operation in operations:
        if operation.name is None:
            raise ValueError("every trusted operation needs a name")
    names = [operation.name.value for operation in operations if operation.name]
    if len(set(names)) != len(names):
        raise ValueError("operation names must be unique")
    fragments = [d for d in definitions if isinstance(d, FragmentDefinitionNode)]
    entries = []
    for name, document in separate_operations(
        DocumentNode(definitions=(*operations, *fragments))
    ).items():
        body = print_ast(document)
        operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
        kind = operation.operation.value
        entries.append({"id": sha256(body), "body": body, "name": name, "type": kind})
    return sorted(entries, key=lambda entry: entry["name"])


def manifest_of(folder: Path) -> dict[str, Any]:
    """Apollo's persisted-query manifest of every `.graphql` file under `folder`."""
    files = sorted(folder.rglob("*.graphql"))
    if not files:
        raise ValueError(f"{folder}: no .graphql files")
    entries = operations_of((str(path), path.read_text()) for path in files)
    return {"format": MANIFEST_FORMAT, "version": 1, "operations": entries}


class Manifest:
    """Trusted documents: their texts by id, by their SHA-256, and the texts themselves."""

    def __init__(self, operations: list[dict[str, Any]]) -> None:
        self.by_id: dict[str, str] = {}
        for entry in operations:
            body = entry.get("body")
            if not isinstance(body, str) or not isinstance(entry.get("id"), str):
                raise ValueError("each operation needs a string id and body")
            self.by_id[entry["id"]] = body
            self.by_id[sha256(body)] = body
        self.texts = frozenset(self.by_id.values())

    @classmethod
    def load(cls, path: Path) -> "Manifest":
        """An Apollo manifest file, or a folder of `.graphql` files."""
        if path.is_dir():
            return cls(manifest_of(path)["operations"])
        data = json.loads(path.read_text())
        if data.get("format") != MANIFEST_FORMAT or data.get("version") != 1:
            raise ValueError(f"{path}: not an {MANIFEST_FORMAT} of version 1")
        return cls(data["operations"])

    def get(self, name: Named) -> str | None:
        found = self.by_id.get(name.id)
        if found is None and name.sha256 is not None:
            found = self.by_id.get(name.sha256)
        return found


def trusted_manifest(path: str, documents: Documents, schema: GraphQLSchema) -> Manifest:
    """The trusted documents, each parsed and validated now and kept for good; a document that
    does not validate stops the start-up."""
    try:
        manifest = Manifest.load(Path(path))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{PREFIX}TRUSTED_DOCUMENTS: {path}: {error}") from None
    for text in manifest.texts:
        try:
            errors = documents.pin(schema, text).errors
        except GraphQLError as error:
            errors = [error]
        if errors:
            first = text.strip().splitlines()[0]
            raise ConfigError(f"{PREFIX}TRUSTED_DOCUMENTS: {path}: {first!r}: {errors[0].message}")
    return manifest


class PersistedDocuments:
    """The text a request runs: given, or looked up by the id it names (trusted documents,
    then those registered here, then the database's)."""

    def __init__(
        self,
        store: DocumentStore,
        manifest: Manifest | None,
        is_valid: Callable[[str], bool],
        cache_size: int = 1024,
    ) -> None:
        """`is_valid` tells a document worth keeping: one that parses and validates."""
        self.store = store
        self.manifest = manifest
        self.is_valid = is_valid
        self.cache_size = cache_size
        self._texts: OrderedDict[str, str] = OrderedDict()

    def trusted_only(self, principal: Principal) -> bool:
        """Whether this caller may run trusted documents only: everyone but admin tokens."""
        return self.manifest is not None and (principal.role is not Role.ADMIN or principal is OPEN)

    async def text(self, query: Any, name: Named | None, principal: Principal) -> Any:
        """The document to run, or an ApiError; `query` as given when no id is named (the
        executor refuses what is not a document)."""
        trusted_only = self.trusted_only(principal)
        if name is None:
            if trusted_only and query not in self.manifest.texts:  # type: ignore[union-attr]
                raise required()
            return query
        if query is not None:
            if not name.automatic:
                raise ApiError("VALIDATION", "Send a document's id or its text, not both.")
            if not isinstance(query, str) or sha256(query) != name.sha256:
                raise ApiError("VALIDATION", "provided sha256Hash does not match query")
            if trusted_only and query not in self.manifest.texts:  # type: ignore[union-attr]
                raise required()
            return query
        found = self.manifest.get(name) if self.manifest is not None else None
        if found is None and name.sha256 is not None and not trusted_only:
            found = await self._registered(name.sha256)
        if found is None:
            raise not_found()
        return found

    async def _registered(self, digest: str) -> str | None:
        found = self._texts.get(digest)
        if found is None:
            found = await self.store.get(digest)
            if found is not None:
                self._remember(digest, found)
        else:
            self._texts.move_to_end(digest)
        return found

    async def register(self, name: Named | None, query: Any) -> None:
        """Keep an automatic persisted query's text (`text` checked that it matches its hash)
        for every instance, when it is valid. Trusted documents need no registering."""
        if name is None or not name.automatic or name.sha256 is None:
            return
        if name.sha256 in self._texts or self.manifest is not None or not self.is_valid(query):
            return
        await self.store.put(name.sha256, query)
        self._remember(name.sha256, query)

    def _remember(self, digest: str, text: str) -> None:
        self._texts[digest] = text
        if len(self._texts) > self.cache_size:
            self._texts.popitem(last=False)
