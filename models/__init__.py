"""The domain: tables and records, the reader and writer, the event log and hub, domain errors."""

from models.database import Database
from models.documents import DocumentStore
from models.errors import (
    AssociationCycle,
    CursorExpired,
    DatabaseUnavailable,
    DomainError,
    IdempotencyMismatch,
    InvalidInput,
    RevisionConflict,
    SessionNotFound,
)
from models.events import EventFilter, decode_cursor, encode_cursor
from models.hierarchy import Direction, TreeNode
from models.hub import EventHub, HubClosed, SubscriberLagging
from models.inputs import DetailsChange, Limits, NewSession
from models.log import EventLog
from models.queries import Page, SessionFilter
from models.reader import SessionReader
from models.records import EventRecord, SessionRecord
from models.tables import EventKind, SessionStatus
from models.writer import SessionWriter, Written

__all__ = [
    "AssociationCycle",
    "CursorExpired",
    "Database",
    "DatabaseUnavailable",
    "DetailsChange",
    "Direction",
    "DocumentStore",
    "DomainError",
    "EventFilter",
    "EventHub",
    "EventKind",
    "EventLog",
    "EventRecord",
    "HubClosed",
    "IdempotencyMismatch",
    "InvalidInput",
    "Limits",
    "NewSession",
    "Page",
    "RevisionConflict",
    "SessionFilter",
    "SessionNotFound",
    "SessionReader",
    "SessionRecord",
    "SessionStatus",
    "SessionWriter",
    "SubscriberLagging",
    "TreeNode",
    "Written",
    "decode_cursor",
    "encode_cursor",
]
