"""The records statements fill are their tables' columns, in order: one field list each."""

from dataclasses import fields

import pytest

from models.records import EventRecord, SessionRecord
from models.tables import EventRow, SessionRow


@pytest.mark.parametrize(
    ("record", "table"), [(SessionRecord, SessionRow), (EventRecord, EventRow)]
)
def test_a_record_has_its_tables_columns_in_order(record: type, table: type) -> None:
    columns = list(table.__table__.columns.keys())  # type: ignore[attr-defined]
    assert [field.name for field in fields(record)] == columns


def test_the_graphql_session_type_has_every_field_of_the_record() -> None:
    """Session.from_row copies the record's fields by name."""
    from api.types import Session

    graphql_fields = {f.python_name for f in Session.__strawberry_definition__.fields}  # type: ignore[attr-defined]
    assert {field.name for field in fields(SessionRecord)} <= graphql_fields
