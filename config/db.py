"""What the ORM has no method for, on paths every hold takes.

``insert_unless_conflict``: one hand-written statement, ``INSERT … ON CONFLICT DO NOTHING
RETURNING id``, for a single new row (and ``insert_row``, the same without the conflict
clause, built once per model where ``save()`` compiles its INSERT on every call).

A unique index that decides between concurrent writers (a booking reference, an outbox dedupe
key, an Idempotency-Key claim) normally means ``create()`` inside a savepoint, catching the
IntegrityError: three round trips, and a savepoint's bookkeeping, on paths every hold takes.
This is one statement, and a conflict is an answer rather than an error that would spoil the
enclosing transaction. PostgreSQL and SQLite (3.35+) both support it.

``CompiledGet``: a ``get()`` on a fixed queryset whose SQL is compiled once per connection,
for the reads a hold makes before anything else (its slot class, the API key).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.db import DEFAULT_DB_ALIAS, connection, connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model, QuerySet
from django.db.models.query import get_related_populators
from django.db.models.sql.compiler import SQLCompiler


def insert_unless_conflict(instance: Model, *, conflict: str | tuple[str, ...]) -> bool:
    """Insert ``instance`` (not saved yet) unless a row with the same value in the unique
    field ``conflict`` (or the same values in a unique tuple of fields) exists. True with
    ``instance.pk`` set and the instance marked saved, as ``save()`` leaves it; False,
    leaving it unsaved, on a conflict. Values are prepared by the fields themselves
    (defaults, ``auto_now``, JSON), as ``save()`` prepares them; no signals are sent, so use
    it only for models without receivers."""
    names = (conflict,) if isinstance(conflict, str) else conflict
    return _insert(instance, names)


def insert_row(instance: Model) -> None:
    """Insert ``instance`` (not saved yet) as ``save()`` inserts a new row, in one statement
    built once per model instead of compiled on every call; ``instance.pk`` is set and the
    instance marked saved. No signals are sent: only for models without receivers, on paths
    every hold takes (its payload declaration, its event)."""
    _insert(instance, None)


def _insert(instance: Model, conflict: tuple[str, ...] | None) -> bool:
    statement = _insert_statement(type(instance), conflict, connection.vendor)
    values = [
        field.get_db_prep_save(field.pre_save(instance, add=True), connection)
        for field in statement.fields
    ]
    with connection.cursor() as cursor:
        cursor.execute(statement.sql, values)
        row = cursor.fetchone()
    if row is None:
        return False
    instance.pk = row[0]
    instance._state.adding = False
    instance._state.db = connection.alias
    return True


@dataclass(frozen=True)
class _InsertStatement:
    sql: str
    fields: tuple[Field[Any, Any], ...]


@functools.cache
def _insert_statement(
    model: type[Model], conflict: tuple[str, ...] | None, vendor: str
) -> _InsertStatement:
    """``INSERT … [ON CONFLICT (…) DO NOTHING] RETURNING id`` for every concrete column but
    the primary key, per model, conflict target and database vendor."""
    meta = model._meta
    quote = connection.ops.quote_name
    fields = tuple(field for field in meta.concrete_fields if not field.primary_key)
    if meta.pk is None:
        raise TypeError(f"{meta.label} has no primary key")
    on_conflict = ""
    if conflict is not None:
        unique = [meta.get_field(name) for name in conflict]
        if not all(isinstance(field, Field) for field in unique):
            raise TypeError(f"{conflict!r} are not columns of {meta.label}")
        arbiter = ", ".join(quote(_column(field)) for field in unique if isinstance(field, Field))
        on_conflict = f"ON CONFLICT ({arbiter}) DO NOTHING "
    columns = ", ".join(quote(_column(field)) for field in fields)
    sql = (
        # Names come from model metadata, values are parameters.
        f"INSERT INTO {quote(meta.db_table)} ({columns}) "  # noqa: S608
        f"VALUES ({', '.join(['%s'] * len(fields))}) "
        f"{on_conflict}RETURNING {quote(_column(meta.pk))}"
    )
    return _InsertStatement(sql=sql, fields=fields)


def _column(field: Field[Any, Any]) -> str:
    if not field.column:
        raise TypeError(f"{field} has no column")
    return str(field.column)


M = TypeVar("M", bound=Model)


class CompiledGet(Generic[M]):
    """``queryset.get(<field>=value)`` for a queryset that never changes (its joins and
    columns), compiled to SQL once per database connection instead of on every call.

    Django compiles a queryset afresh each time it runs: for a ``select_related`` read of a
    few joined tables that costs more CPU than PostgreSQL spends answering it (about 0.9 ms
    against 0.3 ms for the slot class every hold reads). This keeps the first call's compiled
    SQL, select list and converters, and builds the instances as the ORM does (``from_db``
    for the model and each related one), so what comes back is what ``get()`` returns. The
    queryset must have exactly one parameter, the looked-up value: ``example`` is a value of
    its type, used to compile it, and values are passed to the database as they are (ints
    and strings, not model instances).
    """

    def __init__(self, queryset: Callable[[], QuerySet[M]], field: str, example: Any) -> None:
        self._queryset = queryset
        self._field = field
        self._example = example
        # Per thread, as Django's connections are: a compiler (and its converters) refers to
        # the connection it was made for, and a thread's copy goes when the thread does.
        self._local = threading.local()

    def get(self, value: Any) -> M:
        """The one instance whose ``field`` is ``value``. Raises the model's
        ``DoesNotExist`` or ``MultipleObjectsReturned``, as ``get()`` does."""
        wrapper = connections[DEFAULT_DB_ALIAS]
        compiled: _Compiled[M] | None = getattr(self._local, "compiled", None)
        if compiled is None or compiled.compiler.connection is not wrapper:
            compiled = self._compile(wrapper)
            self._local.compiled = compiled
        with wrapper.cursor() as cursor:
            cursor.execute(compiled.sql, [value])
            rows = cursor.fetchmany(2)
        if len(rows) != 1:
            model: Any = compiled.model  # DoesNotExist is made per model class
            name = model._meta.object_name
            if not rows:
                raise model.DoesNotExist(f"{name} matching query does not exist.")
            raise model.MultipleObjectsReturned(f"get() returned more than one {name}")
        row = rows[0]
        if compiled.converters:
            row = next(iter(compiled.compiler.apply_converters([row], compiled.converters)))
        start, end = compiled.own_columns
        instance = compiled.model.from_db(DEFAULT_DB_ALIAS, compiled.init_list, row[start:end])
        for populator in compiled.populators:
            populator.populate(row, instance)
        return instance

    def _compile(self, wrapper: BaseDatabaseWrapper) -> _Compiled[M]:
        # As get() runs it: without the model's default ordering, and with a limit (two rows
        # are enough to tell one from several).
        queryset = self._queryset().filter(**{self._field: self._example}).order_by()[:2]
        compiler = queryset.query.get_compiler(connection=wrapper)
        sql, params = compiler.as_sql()
        if len(params) != 1:
            raise TypeError(f"{queryset.model.__name__}: expected one parameter, got {params!r}")
        klass_info = compiler.klass_info
        if klass_info is None or compiler.annotation_col_map:
            raise TypeError("CompiledGet reads model instances without annotations")
        own = klass_info["select_fields"]
        start, end = own[0], own[-1] + 1
        fields = [column[0] for column in compiler.select[: compiler.col_count]]
        return _Compiled(
            model=klass_info["model"],
            sql=sql,
            compiler=compiler,
            converters=compiler.get_converters(fields),
            own_columns=(start, end),
            init_list=[column[0].target.attname for column in compiler.select[start:end]],
            # Django 5.2's signature (the stubs follow 6.x, which adds a fetch mode).
            populators=get_related_populators(  # type: ignore[call-arg]
                klass_info, compiler.select, DEFAULT_DB_ALIAS
            ),
        )


@dataclass(frozen=True)
class _Compiled(Generic[M]):
    model: type[M]
    sql: str
    compiler: SQLCompiler
    converters: dict[int, Any]
    own_columns: tuple[int, int]
    init_list: list[str]
    populators: list[Any]
