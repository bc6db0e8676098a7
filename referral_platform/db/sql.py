"""Helpers of the hand-written statements (issue 15: the hottest writes are built without the ORM's cost)."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import datetime

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connection, connections
from django.db.models import BooleanField, ForeignKey, Model
from django.db.models.expressions import RawSQL
from django.db.models.signals import post_save, pre_save

from referral_platform.db.prepared import execute_prepared, execute_prepared_with_next, writes_travel


def db_values(obj, fields: Iterable, connection) -> list:
    """The values of ``obj``'s ``fields`` as the ORM would save them (each field's ``get_db_prep_save``): the
    parameters of a hand-written INSERT or UPDATE."""
    return [field.get_db_prep_save(getattr(obj, field.attname), connection) for field in fields]


def keys_in(model, field_names: tuple[str, ...], keys: Iterable[tuple]) -> RawSQL:
    """A filter (``QuerySet.filter(keys_in(…))``) matching the rows of ``model`` whose ``field_names`` (a
    column each, key fields by their ``_id``) equal one of ``keys``: ``(a, b) IN ((%s, %s), …)``, which
    PostgreSQL reads as the OR of one condition per key that ``Q(a=…, b=…) | Q(…)`` builds — the same plan,
    without building a lookup per key and field in Python (issue 15: a chunk of 200 settled referrals' messages
    and referred companies spent most of their time so). No key matches nothing. Duplicate keys are sent once."""
    unique = list(dict.fromkeys(tuple(key) for key in keys))
    if not unique:
        return RawSQL("FALSE", [], output_field=BooleanField())
    quote = connection.ops.quote_name
    meta = model._meta
    columns = ", ".join(f"{quote(meta.db_table)}.{quote(meta.get_field(name).column)}" for name in field_names)
    one = f"({', '.join(['%s'] * len(field_names))})"
    for key in unique:
        if len(key) != len(field_names):
            raise ValueError(f"a key of {len(key)} values for {len(field_names)} fields: {key!r}")
    # Column names come from the model's metadata and are quoted; every value is a parameter.
    sql = f"({columns}) IN ({', '.join([one] * len(unique))})"
    return RawSQL(sql, [value for key in unique for value in key], output_field=BooleanField())  # noqa: S611


def rows_update(objs: list, field_names: Iterable[str], connection) -> int:
    """Save ``field_names`` of ``objs`` (instances of one model, each with its primary key) with ONE ``UPDATE …
    FROM (VALUES …)``: what ``QuerySet.bulk_update`` writes, without building a ``CASE WHEN`` expression per row
    and field (most of a settlement chunk's CPU was spent so; issue 15). Returns the rows updated."""
    if not objs:
        return 0
    sql, params = rows_update_sql(objs, field_names, connection)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def rows_update_sql(objs: list, field_names: Iterable[str], connection) -> tuple[str, list]:
    """``rows_update``'s statement and parameters (``objs`` not empty), to be sent alone or inside another."""
    meta = objs[0]._meta
    quote = connection.ops.quote_name
    fields = [meta.get_field(name) for name in field_names]
    pk = meta.pk
    typed = [pk, *fields]
    row = "(" + ", ".join(f"%s::{field.db_type(connection)}" for field in typed) + ")"
    params: list = []
    for obj in objs:
        params.append(pk.get_db_prep_value(obj.pk, connection))
        params += db_values(obj, fields, connection)
    names = ", ".join(f"v{index}" for index in range(len(typed)))
    assignments = ", ".join(f"{quote(field.column)} = v.v{index}" for index, field in enumerate(fields, start=1))
    # Identifiers come from the model's metadata and are quoted; every value is a parameter.
    sql = (
        f"UPDATE {quote(meta.db_table)} AS t SET {assignments} "  # noqa: S608
        f"FROM (VALUES {', '.join([row] * len(objs))}) AS v ({names}) WHERE t.{quote(pk.column)} = v.v0"
    )
    return sql, params


def save_fields(obj, field_names: list[str], *, held: bool = False) -> None:
    """``obj.save(update_fields=field_names)`` — in ONE prepared ``UPDATE`` when saving does nothing more than write
    them: no ``pre_save``/``post_save`` receiver for the model, and either no ``save()`` of its own or one that
    derives nothing from these fields (the model names what its ``save()`` derives from in ``save_derives_from``).
    The fields' own ``pre_save`` runs (an ``auto_now`` field listed is stamped), and a row that is gone raises as
    ``save`` does. (Issue 15: a stage move built the ORM's UPDATE for every new referral of a billing run.)
    ``held``: the caller's transaction holds the row (it locked or inserted it), so it cannot be gone; inside
    ``writes_with_next`` the UPDATE then travels with the next statement (its row count is not read)."""
    model = type(obj)
    derives = getattr(model, "save_derives_from", None)
    if (
        pre_save.has_listeners(model)
        or post_save.has_listeners(model)
        or (model.save is not Model.save and (derives is None or not derives.isdisjoint(field_names)))
        or obj._state.db not in (None, connection.alias)
    ):
        obj.save(update_fields=field_names)
        return
    fields, sql = _fields_update_sql(model, tuple(field_names))
    values = [field.get_db_prep_save(field.pre_save(obj, False), connection) for field in fields]
    params = [*values, model._meta.pk.get_db_prep_value(obj.pk, connection)]
    if held and writes_travel():
        execute_prepared_with_next(sql, params)
        return
    with connection.cursor() as cursor:
        execute_prepared(cursor, sql, params)
        if cursor.rowcount == 0:
            raise DatabaseError("Save with update_fields did not affect any rows.")


@functools.cache
def _fields_update_sql(model, field_names: tuple) -> tuple[list, str]:
    """``save_fields``' fields and statement for a model and field names (built once per process)."""
    meta = model._meta
    quote = connection.ops.quote_name
    fields = [meta.get_field(name) for name in field_names]
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    # Identifiers come from the model's metadata and are quoted; every value is a parameter.
    return fields, f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"  # noqa: S608


def model_from_row(model, row: tuple, start: int, connection):
    """The instance whose concrete fields are ``row[start:]`` (None for a LEFT JOIN that found nothing), the
    fields' own conversions from the database applied (a JSON column arrives as text), as the ORM loads it."""
    columns = model._meta.concrete_fields
    values = list(row[start : start + len(columns)])
    if values[[column.primary_key for column in columns].index(True)] is None:
        return None
    for index, column in enumerate(columns):
        if values[index] is not None and hasattr(column, "from_db_value"):
            values[index] = column.from_db_value(values[index], None, connection)
    return model.from_db(connection.alias, [column.attname for column in columns], values)


# The Django field classes whose ``get_db_prep_save`` gives back a value of the matching Python type (or None)
# unchanged: such a value is sent as it is (``rows_insert``); any other value, or field, goes through the field.
_INTEGER_TYPES = {
    "AutoField",
    "BigAutoField",
    "SmallAutoField",
    "IntegerField",
    "BigIntegerField",
    "SmallIntegerField",
    "PositiveIntegerField",
    "PositiveBigIntegerField",
    "PositiveSmallIntegerField",
}
_PLAIN_TYPES = {
    **dict.fromkeys(_INTEGER_TYPES, int),
    **dict.fromkeys(("CharField", "TextField", "SlugField", "EmailField", "URLField"), str),
    "BooleanField": bool,
    "DateTimeField": datetime,  # an aware one (PostgreSQL's adapter takes it as it is)
}


def rows_insert(objs: Iterable) -> list:
    """``Model.objects.bulk_create(objs)`` (new instances of one model, no primary key set) in ONE prepared
    ``INSERT … SELECT * FROM UNNEST(…) RETURNING …``: the statement is built once per process and model and planned
    once per connection, whatever the number of rows (an array per column), and a value a built-in field would
    send unchanged (an ``int`` for an integer field or a key, a ``str`` for a text field, a ``bool``, an aware
    ``datetime``, ``None``) is not passed through the field. Everything else is as ``bulk_create`` does it: each
    field's ``pre_save`` (an ``auto_now_add`` stamp), the related objects' keys taken over
    (``_prepare_related_fields_for_save``), the returned columns set on the objects, which are then saved
    instances; no signals. Objects with a primary key already, or holding an expression, go through
    ``bulk_create``. (Issue 15: building the ORM's INSERT was a measured share of a settlement chunk's CPU.)"""
    objs = list(objs)
    if not objs:
        return objs
    model = type(objs[0])
    plan = _insert_plan(model) if connection.vendor == "postgresql" else None
    if plan is None or any(obj.pk is not None or type(obj) is not model for obj in objs):
        return model._default_manager.bulk_create(objs)
    fields, kinds, sql, returning = plan
    db = connections[DEFAULT_DB_ALIAS]  # (this thread's connection itself: the proxy costs a lookup per use)
    columns: list[list] = [[] for _ in fields]
    for obj in objs:
        obj._prepare_related_fields_for_save(operation_name="bulk_create")
        for field, kind, column in zip(fields, kinds, columns, strict=True):
            value = field.pre_save(obj, True)
            if kind is not None and (
                value is None or (type(value) is kind and (kind is not datetime or value.tzinfo is not None))
            ):
                column.append(value)  # (a datetime only when aware: a naive one is warned about and made aware)
            elif hasattr(value, "resolve_expression"):
                return model._default_manager.bulk_create(objs)
            else:
                column.append(field.get_db_prep_save(value, db))
    with db.cursor() as cursor:
        execute_prepared(cursor, sql, columns)
        rows = cursor.fetchall()
    for obj, row in zip(objs, rows, strict=True):
        for field, value in zip(returning, row, strict=True):
            setattr(obj, field.attname, value)
        obj._state.adding = False
        obj._state.db = connection.alias
    return objs


def _plain_type(field):
    """The Python type whose values ``field`` saves unchanged (``_PLAIN_TYPES``), for Django's own classes only."""
    if field.is_relation:
        # A ForeignKey, or a subclass that prepares its values as ForeignKey does (the tenant key).
        if not isinstance(field, ForeignKey) or any(
            getattr(type(field), name) is not getattr(ForeignKey, name)
            for name in ("get_db_prep_save", "get_db_prep_value", "get_prep_value")
        ):
            return None
        field = field.target_field
        if type(field).__name__ not in _INTEGER_TYPES:
            return None
    if not type(field).__module__.startswith("django.db.models"):
        return None
    return _PLAIN_TYPES.get(type(field).__name__)


@functools.cache
def _insert_plan(model):
    """``rows_insert``'s fields, the Python type each may be sent unchanged as (or None), its statement and the
    returned fields; None when a field cannot travel in an array (as Django's own UNNEST insert decides)."""
    meta = model._meta
    if meta.pk is not meta.auto_field:  # a key the objects bring themselves: bulk_create
        return None
    quote = connection.ops.quote_name
    fields = [field for field in meta.concrete_fields if not field.generated and field is not meta.auto_field]
    for field in fields:
        target = field.target_field if field.is_relation else field
        if hasattr(field, "get_placeholder") or target.get_internal_type() not in connection.data_types:
            return None
    returning = meta.db_returning_fields
    arrays = ", ".join(f"%s::{field.db_type(connection).split('(')[0]}[]" for field in fields)
    # Identifiers come from the model's metadata and are quoted; every value is a parameter.
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(field.column) for field in fields)}) "  # noqa: S608
        f"SELECT * FROM UNNEST({arrays}) RETURNING {', '.join(quote(field.column) for field in returning)}"
    )
    return fields, [_plain_type(field) for field in fields], sql, returning
