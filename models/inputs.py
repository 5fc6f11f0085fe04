"""Use-case inputs and the limits they are validated against before they reach a row."""

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

from models.errors import InvalidInput
from models.tables import as_utc

DATA_SOURCE_PATTERN = re.compile(r"[A-Za-z0-9._\-:/]+")
MAX_INT32 = 2**31 - 1
MAX_UTC_OFFSET = 64800


@dataclass(frozen=True)
class Limits:
    """Input limits; every one is configurable and each refusal names the field at fault."""

    data_source_length: int = 128
    text_length: int = 256
    details_per_session: int = 256
    detail_name_length: int = 128
    detail_value_length: int = 4096
    associates_per_session: int = 1024
    streams_per_session: int = 256
    stream_name_length: int = 256
    key_length: int = 64
    page_size: int = 100


Detail = tuple[str, str]


def check_text(value: str, path: str, max_length: int, min_length: int = 0) -> None:
    if not min_length <= len(value) <= max_length:
        raise InvalidInput(path, f"must be {min_length}..{max_length} characters long")
    # PostgreSQL text cannot hold NUL and UTF-8 cannot hold lone surrogates.
    if "\x00" in value:
        raise InvalidInput(path, "must not contain NUL characters")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidInput(path, "must be valid Unicode text") from None


def check_time(value: datetime | None, path: str) -> datetime | None:
    """The time in UTC (one without an offset is taken as UTC already)."""
    if value is None:
        return None
    try:
        return as_utc(value)
    except OverflowError:
        raise InvalidInput(path, "is outside the range of representable times") from None


def check_lookup(value: str, path: str) -> None:
    """Text used only to look things up: anything goes (unknown finds nothing) but what no
    database can be asked about."""
    check_text(value, path, max_length=len(value))


def check_range(value: int, path: str, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidInput(path, f"must be between {low} and {high}")


def check_data_source(value: str, limits: Limits, path: str = "dataSource") -> None:
    check_text(value, path, limits.data_source_length, 1)
    if not DATA_SOURCE_PATTERN.fullmatch(value):
        raise InvalidInput(path, "may hold only letters, digits and . _ - : /")


def check_key(value: str, limits: Limits, path: str) -> None:
    check_text(value, path, limits.key_length, 1)


def check_details(details: Sequence[Detail], limits: Limits, path: str = "details") -> None:
    if len(details) > limits.details_per_session:
        raise InvalidInput(path, f"at most {limits.details_per_session} details per session")
    seen: set[str] = set()
    for index, (name, value) in enumerate(details):
        check_text(name, f"{path}.{index}.name", limits.detail_name_length, 1)
        check_text(value, f"{path}.{index}.value", limits.detail_value_length)
        if name in seen:
            raise InvalidInput(f"{path}.{index}.name", f"duplicate detail name {name!r}")
        seen.add(name)


def check_streams(streams: Sequence[str], limits: Limits, path: str = "streams") -> None:
    if len(streams) > limits.streams_per_session:
        raise InvalidInput(path, f"at most {limits.streams_per_session} streams per session")
    for index, name in enumerate(streams):
        check_text(name, f"{path}.{index}", limits.stream_name_length, 1)


def unique(items: Sequence[str]) -> list[str]:
    """The items without repeats, first occurrence kept."""
    return list(dict.fromkeys(items))


@dataclass(frozen=True)
class NewSession:
    data_source: str
    type: str = "Session"
    version: int = 1
    utc_offset_seconds: int = 0
    identifier: str = ""
    details: Sequence[Detail] = ()
    associate_keys: Sequence[str] = ()
    streams: Sequence[str] = ()
    created_at: datetime | None = None

    def validate(self, limits: Limits) -> None:
        check_data_source(self.data_source, limits)
        check_text(self.type, "type", limits.text_length)
        check_range(self.version, "version", 0, MAX_INT32)
        check_range(self.utc_offset_seconds, "utcOffsetSeconds", -MAX_UTC_OFFSET, MAX_UTC_OFFSET)
        check_text(self.identifier, "identifier", limits.text_length)
        check_details(self.details, limits)
        if len(self.associate_keys) > limits.associates_per_session:
            raise InvalidInput(
                "associateSessionKeys",
                f"at most {limits.associates_per_session} associates per session",
            )
        for index, key in enumerate(self.associate_keys):
            check_key(key, limits, f"associateSessionKeys.{index}")
        check_streams(self.streams, limits)
        check_time(self.created_at, "createdAt")

    def fingerprint(self) -> str:
        """A digest of the input, so a retry can be told from a different request."""
        fields = asdict(self)
        fields["created_at"] = self.created_at.isoformat() if self.created_at else None
        encoded = json.dumps(fields, sort_keys=True, default=list, ensure_ascii=False)
        return hashlib.sha256(encoded.encode()).hexdigest()


@dataclass(frozen=True)
class DetailsChange:
    session_key: str
    details: Sequence[Detail] = ()
    remove: Sequence[str] = field(default_factory=tuple)
    expected_revision: int | None = None

    def validate(self, limits: Limits) -> None:
        check_key(self.session_key, limits, "sessionKey")
        check_details(self.details, limits)
        upserted = {name for name, _ in self.details}
        for index, name in enumerate(self.remove):
            path = f"remove.{index}"
            check_text(name, path, limits.detail_name_length, 1)
            if name in upserted:
                raise InvalidInput(path, f"{name!r} is both set and removed")
