"""The domain: tables, the repository, the event log and hub, and domain errors."""

from models.database import Database, SharedRead
from models.errors import (
    AssociationCycle,
    CursorExpired,
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
from models.repository import SessionRepository
from models.tables import EventKind, EventRow, SessionRow, SessionStatus

__all__ = [
    "AssociationCycle",
    "CursorExpired",
    "Database",
    "DetailsChange",
    "Direction",
    "DomainError",
    "EventFilter",
    "EventHub",
    "EventKind",
    "EventLog",
    "EventRow",
    "HubClosed",
    "IdempotencyMismatch",
    "InvalidInput",
    "Limits",
    "NewSession",
    "Page",
    "RevisionConflict",
    "SessionFilter",
    "SessionNotFound",
    "SessionRepository",
    "SessionRow",
    "SessionStatus",
    "SharedRead",
    "SubscriberLagging",
    "TreeNode",
    "decode_cursor",
    "encode_cursor",
]
