"""One hand-written statement the ORM has no method for: ``INSERT … ON CONFLICT DO NOTHING
RETURNING id`` for a single new row.

A unique index that decides between concurrent writers (a booking reference, an outbox dedupe
key, an Idempotency-Key claim) normally means ``create()`` inside a savepoint, catching the
IntegrityError: three round trips, and a savepoint's bookkeeping, on paths every hold takes.
This is one statement, and a conflict is an answer rather than an error that would spoil the
enclosing transaction. PostgreSQL and SQLite (3.35+) both support it.
"""

from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Field, Model


def insert_unless_conflict(instance: Model, *, conflict: str | tuple[str, ...]) -> bool:
    """Insert ``instance`` (not saved yet) unless a row with the same value in the unique
    field ``conflict`` (or the same values in a unique tuple of fields) exists. True with
    ``instance.pk`` set and the instance marked saved, as ``save()`` leaves it; False,
    leaving it unsaved, on a conflict. Values are prepared by the fields themselves
    (defaults, ``auto_now``, JSON), as ``save()`` prepares them; no signals are sent, so use
    it only for models without receivers."""
    meta = instance._meta
    quote = connection.ops.quote_name
    fields = [field for field in meta.concrete_fields if not field.primary_key]
    unique = [
        meta.get_field(name) for name in ((conflict,) if isinstance(conflict, str) else conflict)
    ]
    if not all(isinstance(field, Field) for field in unique) or meta.pk is None:
        raise TypeError(f"{conflict!r} are not columns of {meta.label}")
    arbiter = ", ".join(quote(_column(field)) for field in unique if isinstance(field, Field))
    columns = ", ".join(quote(_column(field)) for field in fields)
    sql = (
        # Names come from model metadata, values are parameters.
        f"INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"ON CONFLICT ({arbiter}) DO NOTHING "
        f"RETURNING {quote(_column(meta.pk))}"
    )
    values = [
        field.get_db_prep_save(field.pre_save(instance, add=True), connection) for field in fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        row = cursor.fetchone()
    if row is None:
        return False
    instance.pk = row[0]
    instance._state.adding = False
    instance._state.db = connection.alias
    return True


def _column(field: Field[Any, Any]) -> str:
    if not field.column:
        raise TypeError(f"{field} has no column")
    return str(field.column)
