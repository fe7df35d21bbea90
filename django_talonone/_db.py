"""Statements the mirror and the outbox write out themselves, and how they are sent.

The checkout path runs a dozen small statements per cart update. Built by the ORM, each cost more
Python time than the database took to run it; sent one by one to PostgreSQL, each also cost a
wait for its answer. Here the statement texts are made once per database vendor
(:func:`statement`), and the statements run inside :func:`together` go to PostgreSQL in one
pipeline (psycopg 3 with libpq 14 or later): sent one after the other without waiting, and answered
all at once when the block ends. Elsewhere (SQLite, psycopg2, other databases) they simply run one
after the other. Either way a statement's results reach its ``then`` callback, at once or at the
end of the block, in the order the statements were given.
"""

from __future__ import annotations

import contextlib
import datetime
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar

from django.core.signals import setting_changed
from django.db import connection, models, transaction
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init

from . import _json

M = TypeVar("M", bound=models.Model)

_state = threading.local()
#: The attribute holding the values a row had when :func:`instances` read it.
_READ = "_talonone_read"
_statements: dict[tuple[Any, ...], Any] = {}
#: ``_state.commit`` inside :func:`atomic_committed_with_last_block`: the COMMIT may still go out
#: with a ``together(last=True)`` block, or has gone out with one.
_COMMIT_ALLOWED = "allowed"
_COMMIT_SENT = "sent"
_pipelines: dict[str, bool] = {}
#: Makes the transaction it runs in commit without waiting for the disk (PostgreSQL).
_ASYNC_COMMIT = "SET LOCAL synchronous_commit TO OFF"


def statement(build: Callable[..., Any], *args: Any) -> Any:
    """``build(*args)``, made once per database vendor (``args`` must be hashable)."""
    cache_key = (_backend()[0], build, *args)
    found = _statements.get(cache_key)
    if found is None:
        found = _statements[cache_key] = build(*args)
    return found


_backends: list[tuple[str, Any]] = []


def _backend() -> tuple[str, Any]:
    """The default database's vendor and driver module, looked up once (each lookup through
    Django's ``connection`` proxy costs a thread-local search, and the checkout path asked some
    thirty times per call); forgotten when ``DATABASES`` changes (``override_settings``)."""
    if not _backends:
        _backends.append((connection.vendor, getattr(connection, "Database", None)))
    return _backends[0]


def _forget_backend(*, setting: str, **kwargs: Any) -> None:
    if setting == "DATABASES":
        _backends.clear()


setting_changed.connect(_forget_backend, dispatch_uid="django_talonone._db.forget_backend")


def _psycopg3() -> Any:
    """The psycopg 3 module when this connection is PostgreSQL through it, else None."""
    vendor, module = _backend()
    if vendor == "postgresql" and getattr(module, "__name__", "") == "psycopg":
        return module
    return None


def pipelined() -> bool:
    """Whether :func:`together` sends its statements as one pipeline on this connection."""
    module = _psycopg3()
    name = getattr(module, "__name__", "")
    found = _pipelines.get(name)
    if found is None:
        found = _pipelines[name] = module is not None and bool(module.Pipeline.is_supported())
    return found


def in_pipeline() -> bool:
    """Whether a :func:`together` block is sending statements as a pipeline right now."""
    return getattr(_state, "waiting", None) is not None


@contextlib.contextmanager
def together(*, last: bool = False) -> Iterator[None]:
    """Run the block's :func:`execute` calls as one pipeline where the database allows it.

    A statement's ``then`` runs when the block ends; nothing inside may need a result earlier.
    An error of any statement is raised (as Django's database error) when the block ends, and
    the statements after it are not run; the caller's transaction must then be rolled back, as
    Django's ``atomic`` does. Nested blocks join the outer one.

    ``last``: the caller runs no statement after this block. Inside
    :func:`atomic_committed_with_last_block` (whose caller promises the same for the rest of the
    transaction) and outside any savepoint, the transaction's COMMIT then goes out in this
    block's pipeline instead of in a round trip of its own.
    """
    if in_pipeline() or not pipelined():
        yield
        return
    connection.ensure_connection()
    waiting: list[tuple[Any, Callable[[Any], Any] | None]] = []
    _state.waiting = waiting
    try:
        with connection.wrap_database_errors, connection.connection.pipeline():
            yield
            if (
                last
                and getattr(_state, "commit", None) == _COMMIT_ALLOWED
                and not any(connection.savepoint_ids)  # None: an atomic block without one
            ):
                if not getattr(_state, "durable", True):
                    execute(_ASYNC_COMMIT)  # this transaction only
                execute("COMMIT")  # queued like the block's statements
                _state.commit = _COMMIT_SENT
        _state.waiting = None  # what a ``then`` runs goes out at once
        for cursor, then in waiting:
            if then is not None:
                then(cursor)
    finally:
        _state.waiting = None
        for cursor, _then in waiting:
            cursor.close()


@contextlib.contextmanager
def atomic_committed_with_last_block(*, durable: bool = True) -> Iterator[None]:
    """``transaction.atomic()``; when it is the outermost block and :func:`together` sends
    pipelines, its COMMIT goes out with the statements of the block's ``together(last=True)``,
    which spares the commit a round trip of its own.

    The transaction is then over when that block ends: Django's own commit at the end of the
    ``atomic`` finds nothing left to commit, and its ``on_commit`` callbacks run as usual. Inside
    a transaction of the caller's (a savepoint), or without pipelines, this is plain ``atomic``
    and ``last`` changes nothing. A statement run through :func:`execute` after the COMMIT has
    gone out is refused, so the transaction cannot be split in two unnoticed.

    ``durable=False``: when the COMMIT goes out with the last block, it does not wait for the
    server to flush it to disk (``synchronous_commit`` off for this transaction only). It is
    visible to every other connection at once, as always; only a crash of the database server
    in the next fraction of a second can undo it, and any later commit that does wait (another
    transaction's, on any connection) makes it durable too. For transactions whose loss the
    caller can recover from.
    """
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if not outermost or not pipelined() or getattr(_state, "commit", None) is not None:
            yield
            return
        _state.commit = _COMMIT_ALLOWED
        _state.durable = durable
        try:
            yield
        finally:
            _state.commit = None
            _state.durable = True


def execute(sql: str, params: Sequence[Any] = (), then: Callable[[Any], Any] | None = None) -> None:
    """Run one statement through a Django cursor; ``then(cursor)`` reads its results.

    Inside :func:`together` on PostgreSQL the statement is only queued, and ``then`` runs when the
    block ends.
    """
    if getattr(_state, "commit", None) == _COMMIT_SENT:
        raise RuntimeError(
            "the transaction was committed with its last together() block: "
            "no statement of it may follow"
        )
    cursor = connection.cursor()
    waiting = getattr(_state, "waiting", None)
    if waiting is None:
        try:
            cursor.execute(sql, params)
            if then is not None:
                then(cursor)
        finally:
            cursor.close()
        return
    cursor.execute(sql, params)
    waiting.append((cursor, then))


def insert_then(
    model: type[M], row: M, sql: str, params: Sequence[Any], *, durable: bool = True
) -> list[Any]:
    """INSERT ``row`` (its pk set) and commit it, then run ``sql`` and return its rows: two
    statements, each committed on its own, so ``sql`` sees what other transactions committed
    meanwhile. Inside a transaction both simply run in it (and nothing is committed).

    On PostgreSQL with psycopg 3 and client-side binding (Django's default) the two go as one
    query, ``BEGIN; INSERT ...; COMMIT; sql``, which the server runs exactly as two committed
    statements but answers in one round trip. Elsewhere they run one after the other.

    ``durable=False``: in that one query, the INSERT's commit does not wait for the disk (see
    :func:`atomic_committed_with_last_block`); elsewhere it changes nothing.
    """
    if not _one_query_allowed():
        insert(model, [row], returning=True)
        found: list[Any] = []
        execute(sql, params, lambda cursor: found.extend(cursor.fetchall()))
        return found
    shape = statement(_insert_shape, model, (), False, True)
    values = [value(row) for value in shape.values]
    # The explicit BEGIN: a COMMIT inside a query's implicit transaction works, but the server
    # logs a warning ("there is no transaction in progress") every time.
    begin = "BEGIN; " if durable else f"BEGIN; {_ASYNC_COMMIT}; "
    with connection.cursor() as cursor:
        cursor.execute(f"{begin}{shape.row_sql}; COMMIT; {sql}", [*values, *params])
        for _ in range(begin.count(";")):
            cursor.nextset()  # past the BEGIN's (and the SET's) results
        ((row.pk,),) = cursor.fetchall()
        row._state.adding = False
        cursor.nextset()  # the COMMIT's
        cursor.nextset()
        return list(cursor.fetchall())


def _one_query_allowed() -> bool:
    """Whether several statements may share one query string here: psycopg 3's client-side
    cursors send it as one simple query (server-side binding takes one statement at a time),
    and only in autocommit, where the COMMIT in it ends no transaction of the caller's."""
    if _psycopg3() is None or in_pipeline():
        return False
    if connection.in_atomic_block or not connection.get_autocommit():
        return False
    return not connection.settings_dict.get("OPTIONS", {}).get("server_side_binding")


def select_sql(model: type[models.Model], where: str, order_by: str, lock: bool) -> str:
    """``SELECT`` of every concrete column of ``model`` (in field order) ``WHERE where``.

    ``lock``: ``FOR UPDATE`` where the database has it.
    """
    table = connection.ops.quote_name(model._meta.db_table)
    sql = f"SELECT {columns(model, table)} FROM {table} WHERE {where}"  # noqa: S608
    if order_by:
        sql += f" ORDER BY {order_by}"
    if lock and connection.features.has_select_for_update:
        sql += " FOR UPDATE"
    return sql


def columns(model: type[models.Model], qualifier: str) -> str:
    """Every concrete column of ``model``, in field order, as ``qualifier.column``: the select
    list :func:`instances` reads."""
    qn = connection.ops.quote_name
    return ", ".join(f"{qualifier}.{qn(f.column)}" for f in model._meta.concrete_fields)


def instances(model: type[M], *extra: str) -> Callable[[Any], list[M]]:
    """A ``then`` that reads rows of :func:`columns` into ``model`` instances, each value
    converted as the ORM would; the values of further columns after them are set on each
    instance as attributes named ``extra``."""
    return statement(_instances, model, extra)


def _instances(model: type[M], extra: tuple[str, ...]) -> Callable[[Any], list[M]]:
    opts = model._meta
    table = opts.db_table
    converters = []
    for index, field in enumerate(opts.concrete_fields):
        column = field.get_col(table)
        found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if isinstance(field, models.JSONField) and found == [field.from_db_value]:
            found = [_json_column(field)]
        if found:
            converters.append((index, column, found))
    alias = connection.alias
    from_db = model.from_db
    attnames = [f.attname for f in opts.concrete_fields]
    width = len(attnames)

    def read(cursor: Any) -> list[M]:
        made = []
        plain = _plain_init(model)
        for row in cursor.fetchall():
            values = list(row[:width])
            for index, column, funcs in converters:
                value = values[index]
                for func in funcs:
                    value = func(value, column, connection)
                values[index] = value
            if plain:
                instance = _bare(model, alias)
                instance.__dict__.update(zip(attnames, values, strict=True))
            else:
                instance = from_db(alias, attnames, values)
            instance.__dict__[_READ] = values  # what upsert() compares with
            for name, value in zip(extra, row[width:], strict=True):
                setattr(instance, name, value)
            made.append(instance)
        return made

    return read


def make(model: type[M], values: dict[str, Any]) -> M:
    """An unsaved ``model`` instance holding ``values``: a value for every concrete field, by
    attname. As ``model(**values)``, but without its per-field work when that would make no
    difference (see :func:`_plain_init`): the mirror makes a few dozen rows per answer."""
    if values.keys() != statement(_attnames, model) or not _plain_init(model):
        return model(**values)
    instance = _bare(model, None)
    instance.__dict__.update(values)
    return instance


def _attnames(model: type[models.Model]) -> frozenset[str]:
    return frozenset(f.attname for f in model._meta.concrete_fields)


def _plain_init(model: type[models.Model]) -> bool:
    """Whether nothing listens to ``model``'s pre_init or post_init: then an instance is just
    its values in ``__dict__`` and a ModelState, which is all Model.__init__ leaves when given
    a value for every concrete field (as Model.from_db does)."""
    return not (pre_init.has_listeners(model) or post_init.has_listeners(model))


def _bare(model: type[M], db: str | None) -> M:
    instance = model.__new__(model)
    state = ModelState()
    if db is not None:
        state.adding = False
        state.db = db
    instance._state = state
    return instance


def _json_column(field: models.JSONField) -> Callable[[Any, Any, Any], Any]:
    """The JSONField's own from_db_value, with the common case (a JSON text and no decoder of
    the field's own) decoded by :func:`_json.loads`."""
    own = field.from_db_value

    def convert(value: Any, expression: Any, conn: Any) -> Any:
        if isinstance(value, str) and field.decoder is None:
            try:
                return _json.loads(value)
            except ValueError:
                pass
        return own(value, expression, conn)

    return convert


def marks(count: int) -> str:
    """``%s, %s, ...``: ``count`` placeholders."""
    return ", ".join(["%s"] * count)


# ---- multi-row writes -----------------------------------------------------------------------


def upsert(model: type[M], rows: Iterable[M], unique_fields: list[str]) -> None:
    """Write these saved rows back: every column but the pk, ``unique_fields`` and
    ``auto_now_add`` ones (``auto_now`` ones stamped).

    Several rows go in one INSERT ... ON CONFLICT (``unique_fields``) DO UPDATE. A single row
    with a pk (the checkout path's usual case) goes as a plain UPDATE by its pk, which PostgreSQL
    parses and plans in about half the time; should that row be gone, it is written by the
    INSERT ... ON CONFLICT after all. If :func:`instances` read that row, the UPDATE leaves out
    the columns whose values are still the ones read, except JSON ones, which are always written
    (a dict changed in place would look unchanged).
    """
    rows = list(rows)
    if len(rows) != 1 or rows[0].pk is None or _backend()[0] not in ("postgresql", "sqlite"):
        insert(model, rows, conflict=unique_fields)
        return
    (row,) = rows
    read = row.__dict__.get(_READ)
    columns = [
        column
        for column in statement(_update_columns, model, tuple(unique_fields))
        if read is None or column.always or getattr(row, column.attname) != read[column.index]
    ]
    if not columns:
        return  # every column still holds what was read
    row.__dict__.pop(_READ, None)  # what was read is not what the row holds once written
    sql = statement(_update_sql, model, tuple(column.attname for column in columns))

    def then(cursor: Any) -> None:
        if cursor.rowcount == 0:
            insert(model, rows, conflict=unique_fields)

    execute(sql, [*(column.value(row) for column in columns), row.pk], then)


def update_many(model: type[M], rows: Sequence[M], attnames: Sequence[str]) -> None:
    """Write the ``attnames`` columns of these saved rows back, by pk.

    On PostgreSQL in one statement (``UPDATE ... FROM jsonb_to_recordset(...)``, the rows as one
    JSON document), elsewhere one UPDATE per row. A row that has gone meanwhile stays gone.
    """
    if not rows:
        return
    attnames = tuple(attnames)
    for row in rows:
        row.__dict__.pop(_READ, None)  # what was read is not what the row holds once written
    if _backend()[0] == "postgresql":
        sql, columns = statement(_update_many_sql, model, attnames)
        pk = model._meta.pk.column
        document = [{pk: row.pk, **{c: value(row) for c, value in columns}} for row in rows]
        execute(sql, [_json.dumps(document, _json_default)])
        return
    sql = statement(_update_sql, model, attnames)
    by_name = {column.attname: column for column in statement(_update_columns, model, ())}
    values = [by_name[name].value for name in attnames]
    for row in rows:
        execute(sql, [*(value(row) for value in values), row.pk])


def _update_many_sql(
    model: type[models.Model], attnames: tuple[str, ...]
) -> tuple[str, list[tuple[str, Callable[[Any], Any]]]]:
    opts = model._meta
    qn = connection.ops.quote_name
    fields = [opts.get_field(name) for name in attnames]
    pk = opts.pk
    types = ", ".join(
        f"{qn(f.column)} {f.db_type(connection).split('(')[0]}" for f in [pk, *fields]
    )
    sets = ", ".join(f"{qn(f.column)} = x.{qn(f.column)}" for f in fields)
    table = qn(opts.db_table)
    sql = (
        f"UPDATE {table} SET {sets} FROM jsonb_to_recordset(%s::jsonb) AS x({types})"  # noqa: S608
        f" WHERE {table}.{qn(pk.column)} = x.{qn(pk.column)}"
    )
    return sql, [(f.column, _column_value(f, True)) for f in fields]


@dataclass(frozen=True)
class _Column:
    """A column :func:`upsert` may write back: the field's attname, its index in a row read by
    :func:`instances`, its placeholder, the function giving its value, and whether it is always
    written (JSON and ``auto_now`` columns)."""

    attname: str
    index: int
    mark: str
    value: Callable[[Any], Any]
    always: bool


def _update_columns(model: type[models.Model], unique: tuple[str, ...]) -> list[_Column]:
    opts = model._meta
    kept = {opts.get_field(name).attname for name in unique}
    found = []
    for index, field in enumerate(opts.concrete_fields):
        if field.primary_key or field.attname in kept or getattr(field, "auto_now_add", False):
            continue
        mark, value = _parameter(field, True)
        always = isinstance(field, models.JSONField) or bool(getattr(field, "auto_now", False))
        found.append(_Column(field.attname, index, mark, value, always))
    return found


def _update_sql(model: type[models.Model], attnames: tuple[str, ...]) -> str:
    """UPDATE of these columns of one row, by its pk (the last parameter)."""
    opts = model._meta
    qn = connection.ops.quote_name
    fields = {field.attname: field for field in opts.concrete_fields}
    sets = ", ".join(
        f"{qn(fields[name].column)} = {_parameter(fields[name], True)[0]}" for name in attnames
    )
    table = qn(opts.db_table)
    return f"UPDATE {table} SET {sets} WHERE {qn(opts.pk.column)} = %s"  # noqa: S608


def _parameter(field: models.Field, existing: bool) -> tuple[str, Callable[[Any], Any]]:
    """A row's value of ``field`` as one statement parameter: its placeholder and a function
    giving the value. On PostgreSQL a JSON column is written as text by _json (as insert()'s
    documents are) and cast to jsonb; everything else as the driver takes it."""
    if not (isinstance(field, models.JSONField) and connection.vendor == "postgresql"):
        return "%s", _column_value(field, existing, json_ready=False)
    ready = _column_value(field, existing)

    def text(row: Any) -> Any:
        found = ready(row)
        return None if found is None else _json.dumps(found, _json_default)

    return "%s::jsonb", text


def insert(
    model: type[M],
    rows: list[Any],
    *,
    conflict: list[str] | None = None,
    ignore: bool = False,
    returning: bool = False,
) -> list[Any]:
    """INSERT new rows (their pks set when ``returning``), or with ``conflict`` write existing
    rows back by those unique fields, in as few multi-row statements as the database takes.
    With ``ignore``, rows that hit ``conflict`` are skipped instead, and the value of the first
    ``conflict`` field of each row inserted is returned (PostgreSQL and SQLite only). ``rows``
    are model instances, or for a plain INSERT dicts of values by attname.

    Django's bulk_create does the same, but on PostgreSQL it sends many rows as one array per
    column, and with client-side binding (psycopg 3's default in Django) every double quote in a
    JSON column is then escaped by a regular expression: most of a batch's CPU time.
    """
    if not rows:
        return []
    vendor = _backend()[0]
    reads_back = returning or ignore
    if vendor not in ("postgresql", "sqlite") or (reads_back and not writes_sets()):
        if ignore:
            raise NotImplementedError("insert(ignore=True) needs PostgreSQL or SQLite 3.35+")
        rows = [model(**row) if isinstance(row, dict) else row for row in rows]
        if conflict:
            _upsert_with_django(model, rows, conflict)
            return rows
        return model._default_manager.bulk_create(rows)
    shape = statement(_insert_shape, model, tuple(conflict or ()), ignore, returning)
    statements: list[tuple[list[Any], str, list[Any]]] = []
    if vendor == "postgresql" and len(rows) == 1:
        # One row: plain VALUES, which the server parses and plans in less time.
        statements.append((rows, shape.row_sql, [value(rows[0]) for value in shape.values]))
    elif vendor == "postgresql":
        columns_of = shape.json_values
        document = [{column: value(row) for column, value in columns_of} for row in rows]
        statements.append((rows, shape.sql, [_json.dumps(document, _json_default)]))
    else:
        per_statement = max(1, (connection.features.max_query_params or 999) // shape.width)
        values = shape.values
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            sql = shape.sql + ", ".join([shape.row_sql] * len(chunk)) + shape.tail
            params = [value(row) for row in chunk for value in values]
            statements.append((chunk, sql, params))
    inserted: list[Any] = []
    for chunk, sql, params in statements:
        if ignore:
            if in_pipeline():
                raise RuntimeError("insert(ignore=True) needs its answer at once: no pipeline")
            execute(sql, params, lambda cur: inserted.extend(v for (v,) in cur.fetchall()))
        elif returning:
            execute(sql, params, _set_pks(chunk))
        else:
            execute(sql, params)
    return inserted if ignore else rows


def _set_pks(rows: list[Any]) -> Callable[[Any], None]:
    def then(cursor: Any) -> None:
        for row, (pk,) in zip(rows, cursor.fetchall(), strict=True):
            row.pk = pk
            row._state.adding = False

    return then


@dataclass
class _InsertShape:
    """The parts of an :func:`insert` statement that depend only on the model and the options:
    PostgreSQL: the whole statement and each column's JSON-ready value, and for a single row the
    whole statement with VALUES (``row_sql``) and its values; elsewhere: the statement up to its
    VALUES rows, one row's placeholders, the tail, the values prepared for the driver."""

    sql: str
    tail: str
    row_sql: str
    width: int
    json_values: list[tuple[str, Callable[[Any], Any]]]
    values: list[Callable[[Any], Any]]


def _insert_shape(
    model: type[models.Model], conflict: tuple[str, ...], ignore: bool, returning: bool
) -> _InsertShape:
    opts = model._meta
    qn = connection.ops.quote_name
    existing = bool(conflict) and not ignore  # rows written back, not new ones
    unique = {opts.get_field(name).attname for name in conflict}
    fields = [f for f in opts.concrete_fields if not f.primary_key]
    columns = ", ".join(qn(f.column) for f in fields)
    tail = ""
    if conflict and ignore:
        target = ", ".join(qn(opts.get_field(name).column) for name in conflict)
        tail = f" ON CONFLICT ({target}) DO NOTHING RETURNING {target.split(', ')[0]}"
    elif conflict:
        kept = [f for f in fields if getattr(f, "auto_now_add", False) or f.attname in unique]
        sets = ", ".join(
            f"{qn(f.column)} = EXCLUDED.{qn(f.column)}" for f in fields if f not in kept
        )
        target = ", ".join(qn(opts.get_field(name).column) for name in conflict)
        tail = f" ON CONFLICT ({target}) DO UPDATE SET {sets}"
    if returning and not ignore:
        tail += f" RETURNING {qn(opts.pk.column)}"
    table = qn(opts.db_table)
    if connection.vendor == "postgresql":
        # All rows as one JSON document, unpacked by the server: one short statement (its text
        # the same for every batch) and one string parameter.
        types = ", ".join(f"{qn(f.column)} {f.db_type(connection).split('(')[0]}" for f in fields)
        sql = (
            f"INSERT INTO {table} ({columns}) SELECT {columns}"  # noqa: S608
            # WHERE true: without it, ON CONFLICT could read as a join's ON.
            f" FROM jsonb_to_recordset(%s::jsonb) AS x({types}) WHERE true{tail}"
        )
        json_values = [(f.column, _column_value(f, existing)) for f in fields]
        params = [_parameter(f, existing) for f in fields]
        one_row = ", ".join(mark for mark, _value in params)
        one = f"INSERT INTO {table} ({columns}) VALUES ({one_row}){tail}"  # noqa: S608
        values = [value for _mark, value in params]
        return _InsertShape(sql, "", one, len(fields), json_values, values)
    sql = f"INSERT INTO {table} ({columns}) VALUES "  # noqa: S608
    row_sql = "(" + ", ".join(["%s"] * len(fields)) + ")"
    values = [_column_value(f, existing, json_ready=False) for f in fields]
    return _InsertShape(sql, tail, row_sql, len(fields), [], values)


def writes_sets() -> bool:
    """Whether :func:`insert` can write a batch itself here, reading back what it inserted
    (PostgreSQL, or SQLite 3.35+ with RETURNING); elsewhere callers go row by row."""
    return _backend()[0] in ("postgresql", "sqlite") and bool(
        connection.features.can_return_rows_from_bulk_insert
    )


def _column_value(
    field: models.Field, existing: bool, *, json_ready: bool = True
) -> Callable[[Any], Any]:
    """A function giving ``field``'s value of a row to write: ``auto_now`` stamped, an
    ``existing`` row keeping its ``auto_now_add`` value, a dict row giving values by attname
    (default: the field's). Prepared for the database: plain strings, numbers and booleans as
    they are; with
    ``json_ready``, JSON values as they are and Decimal and aware datetimes as strings (for a
    JSON document); the rest through the field's own preparation."""
    attname = field.attname
    stamped = getattr(field, "auto_now", False) or (
        getattr(field, "auto_now_add", False) and not existing
    )
    as_is = json_ready and isinstance(field, models.JSONField)
    plain = not isinstance(field, models.JSONField)

    def value(row: Any) -> Any:
        if isinstance(row, dict):
            found = row[attname] if attname in row else field.get_default()
        elif stamped:
            found = field.pre_save(row, True)
        else:
            found = getattr(row, attname)
        if found is None or as_is:
            return found
        kind = type(found)
        if plain and kind in _JSON_READY:
            return found
        if not json_ready:
            return field.get_db_prep_save(found, connection)
        if kind is Decimal:
            return str(found)
        if kind is datetime.datetime and found.tzinfo is not None:
            return found.isoformat()
        return field.get_db_prep_save(found, connection)

    return value


_JSON_READY = frozenset({str, int, bool, float})


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    raise TypeError(f"cannot write {type(value).__name__} through a JSON document")


def _upsert_with_django(model: type[M], rows: list[M], unique_fields: list[str]) -> None:
    """:func:`insert` with ``conflict`` through bulk_create, for other databases."""
    opts = model._meta
    kept = [f for f in opts.concrete_fields if getattr(f, "auto_now_add", False)]
    fields = [
        f.name
        for f in opts.concrete_fields
        if not f.primary_key and f.name not in unique_fields and f not in kept
    ]
    saved = [(row.pk, [getattr(row, f.attname) for f in kept]) for row in rows]
    for row in rows:
        row.pk = None  # insert without the pk: the conflict on unique_fields finds the row
    try:
        model._default_manager.bulk_create(
            rows, update_conflicts=True, unique_fields=unique_fields, update_fields=fields
        )
    finally:
        for row, (pk, values) in zip(rows, saved, strict=True):
            row.pk = pk
            row._state.adding = False
            for f, value in zip(kept, values, strict=True):
                setattr(row, f.attname, value)
