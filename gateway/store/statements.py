"""Running the hot path's Core statements: on the SQLite lane straight on sqlite3, compiled once.

SQLAlchemy spends some 25 us on each execution (cache key, execution context, result objects) of a
statement that SQLite itself runs in a few, and a turn runs five. On the lane's connection (pysqlite)
each statement is compiled once per set of parameter names and executed on the DBAPI connection, inside
the transaction the lane opened; any other connection (Postgres through run_sync) executes through
SQLAlchemy as usual. Only statements whose missing columns have plain scalar defaults take the direct
way; the others fall back to SQLAlchemy too.
"""

from __future__ import annotations

import logging
import operator
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Executable
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql.compiler import SQLCompiler

Parameters = Mapping[str, Any]

# Statements and their parameters (message contents) at DEBUG, like the drivers' own statement logs;
# quiet unless GATEWAY_LOG_CONTENT is set (see redaction.py).
log = logging.getLogger("gateway.sqlite")


@dataclass(frozen=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]  # parameter names, in the order of the placeholders
    defaults: Mapping[str, Any]  # values of what the parameters leave out: column defaults, LIMITs
    pick: Callable[[Parameters], tuple[Any, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One C call per row instead of a generator over the names (a turn's rows go through here).
        pick: Callable[[Parameters], tuple[Any, ...]]
        if not self.names:
            pick = lambda _parameters: ()  # noqa: E731
        elif len(self.names) == 1:
            name = self.names[0]
            pick = lambda parameters: (parameters[name],)  # noqa: E731
        else:
            pick = operator.itemgetter(*self.names)
        object.__setattr__(self, "pick", pick)

    def values(self, parameters: Parameters) -> tuple[Any, ...]:
        if self.defaults:
            parameters = {**self.defaults, **parameters}
        return self.pick(parameters)


def _compile(statement: Executable, dialect: Dialect, keys: tuple[str, ...]) -> _Compiled | None:
    compiled = cast(SQLCompiler, cast(Any, statement).compile(dialect=dialect, column_keys=list(keys)))
    defaults = []
    for column in compiled.insert_prefetch:
        default = column.default
        if default is None or not default.is_scalar:
            return None
        defaults.append((column.key, cast(Any, default).arg))
    if compiled.update_prefetch or compiled.positiontup is None:
        return None
    for name in compiled.positiontup:  # parameters the statement carries its own value for (a LIMIT)
        bind = compiled.binds.get(name)
        if name not in keys and bind is not None and bind.value is not None:
            defaults.append((name, bind.value))
    return _Compiled(str(compiled), tuple(compiled.positiontup), dict(defaults))


_COMPILED: dict[tuple[Any, ...], _Compiled | None] = {}
_COMPILED_MAX = 512  # statements built per call (listings) would otherwise pile up
_UNKNOWN = object()


def _direct(connection: Connection, statement: Executable, parameters: Parameters) -> _Compiled | None:
    """The statement compiled for sqlite3 (None: not on the lane's driver, or not a direct statement).

    Cached by statement, dialect and parameter names in the order given (each call site passes them in one
    order), so a statement run again costs one dict lookup (sorting the names and a cached function's call
    cost as much as the statement's own work in Python).
    """
    key = (statement, connection.dialect, *parameters)
    compiled = _COMPILED.get(key, _UNKNOWN)
    if compiled is _UNKNOWN:
        dialect = connection.dialect
        direct = dialect.driver == "pysqlite"
        compiled = _compile(statement, dialect, tuple(sorted(parameters))) if direct else None
        if len(_COMPILED) >= _COMPILED_MAX:
            _COMPILED.clear()
        _COMPILED[key] = compiled
    return cast(_Compiled | None, compiled)


def _driver_error(compiled: _Compiled, values: Any, exc: sqlite3.Error) -> StatementError:
    """The driver's own error as SQLAlchemy's (IntegrityError, OperationalError, ...), as SQLAlchemy itself
    raises it: no caller outside the store sees a sqlite3 exception. (A plain `except` at each call rather
    than a context manager: a generator-based one cost a few microseconds per statement.)"""
    return DBAPIError.instance(compiled.sql, values, exc, sqlite3.Error)


def fetch(connection: Connection, statement: Executable, parameters: Parameters) -> list[Sequence[Any]]:
    """The rows of a SELECT, as tuples in the order of its columns."""
    compiled = _direct(connection, statement, parameters)
    if compiled is None:
        return [tuple(row) for row in connection.execute(statement, dict(parameters))]
    raw = connection.connection.dbapi_connection
    assert raw is not None
    values = compiled.values(parameters)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("executing %s %r", compiled.sql, values)
    try:
        return cast(list[Sequence[Any]], raw.execute(compiled.sql, values).fetchall())
    except sqlite3.Error as exc:
        raise _driver_error(compiled, values, exc) from exc


def execute(connection: Connection, statement: Executable, rows: Parameters | Sequence[Parameters]) -> int:
    """Run an INSERT or UPDATE once per parameter set (`rows`: one mapping or a list); rows affected."""
    many = [rows] if isinstance(rows, Mapping) else list(rows)
    if not many:
        return 0
    compiled = _direct(connection, statement, many[0])
    if compiled is None or any(row.keys() != many[0].keys() for row in many):
        # One parameter set executes singly, so that its rowcount is reliable (fenced updates read it).
        parameters = dict(many[0]) if len(many) == 1 else [dict(row) for row in many]
        result = connection.execute(statement, parameters)
        return int(cast(Any, result).rowcount)
    raw = connection.connection.dbapi_connection
    assert raw is not None
    values = [compiled.values(row) for row in many]
    if log.isEnabledFor(logging.DEBUG):
        log.debug("executing %s %r", compiled.sql, values)
    try:
        return int(raw.executemany(compiled.sql, values).rowcount)
    except sqlite3.Error as exc:
        raise _driver_error(compiled, values, exc) from exc


def insert_returning_key(connection: Connection, statement: Executable, row: Parameters) -> int:
    """Run a single-row INSERT and return the new row's integer primary key."""
    compiled = _direct(connection, statement, row)
    if compiled is None:
        key = connection.execute(statement, dict(row)).inserted_primary_key
        assert key is not None
        return int(key[0])
    raw = connection.connection.dbapi_connection
    assert raw is not None
    values = compiled.values(row)
    if log.isEnabledFor(logging.DEBUG):
        log.debug("executing %s %r", compiled.sql, values)
    try:
        return int(raw.execute(compiled.sql, values).lastrowid)
    except sqlite3.Error as exc:
        raise _driver_error(compiled, values, exc) from exc
