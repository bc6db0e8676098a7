"""Helpers of the hand-written statements (issue 15: the hottest writes are built without the ORM's cost)."""

from __future__ import annotations

from collections.abc import Iterable


def db_values(obj, fields: Iterable, connection) -> list:
    """The values of ``obj``'s ``fields`` as the ORM would save them (each field's ``get_db_prep_save``): the
    parameters of a hand-written INSERT or UPDATE."""
    return [field.get_db_prep_save(getattr(obj, field.attname), connection) for field in fields]
