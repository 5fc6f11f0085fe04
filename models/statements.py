"""Statement parts written once for both backends: WHERE clauses with their parameters."""

from collections.abc import Sequence
from typing import Any

from models.database import Database


class Conditions:
    """The WHERE clause of a statement being built, with its parameters in order."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def add(self, clause: str, *params: Any) -> "Conditions":
        self.clauses.append(clause)
        self.params.extend(params)
        return self

    def among(self, column: str, values: Sequence[str] | None) -> "Conditions":
        """`column` is one of `values` (None: no condition). One value is compared as itself:
        without a JSON list and json_each (or an array) a lookup by key costs a third less."""
        if values is None:
            return self
        if len(values) == 1:
            return self.add(f"{column} = ?", values[0])
        return self.add(self.database.in_keys(column), self.database.keys(values))

    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.clauses) if self.clauses else ""
