"""Which database errors are transient (config/database_errors.py): by PostgreSQL's SQLSTATE and SQLite's result
code, never by Django's class alone (issue 12 §2: SQLite's "Expression tree is too large" was answered 503)."""

import sqlite3

import psycopg
import pytest
from django.db import DataError, InterfaceError, OperationalError, connection

from config.database_errors import too_large, transient


def _wrapped(cause: Exception) -> OperationalError:
    """As Django raises it: its own class, the driver's exception as the cause."""
    try:
        raise cause
    except (psycopg.Error, sqlite3.Error) as exc:
        try:
            raise OperationalError(str(exc)) from exc
        except OperationalError as wrapped:
            return wrapped


def _sqlite(message: str, code: int) -> sqlite3.OperationalError:
    error = sqlite3.OperationalError(message)
    error.sqlite_errorcode = code
    return error


@pytest.mark.parametrize("cause, is_transient, is_too_large", [
    (psycopg.errors.SerializationFailure("could not serialize access"), True, False),
    (psycopg.errors.DeadlockDetected("deadlock detected"), True, False),
    (psycopg.errors.LockNotAvailable("could not obtain lock"), True, False),
    (psycopg.errors.AdminShutdown("terminating connection"), True, False),
    (psycopg.errors.TooManyConnections("too many clients"), True, False),
    (psycopg.OperationalError("server closed the connection unexpectedly"), True, False),  # no SQLSTATE
    (psycopg.errors.StatementTooComplex("stack depth limit exceeded"), False, True),
    (psycopg.errors.ProgramLimitExceeded("index row size exceeds maximum"), False, True),
    (psycopg.errors.UndefinedTable("relation does not exist"), False, False),
    (_sqlite("database is locked", 5), True, False),
    (_sqlite("database table is locked", 6), True, False),
    (_sqlite("Expression tree is too large (maximum depth 1000)", 1), False, True),
    (_sqlite("too many SQL variables", 1), False, True),
    (_sqlite("string or blob too big", 18), False, True),
    (_sqlite("no such table: x", 1), False, False),
])
def test_an_operational_error_is_transient_only_by_its_code(cause, is_transient, is_too_large):
    error = _wrapped(cause)

    assert (transient(error), too_large(error)) == (is_transient, is_too_large)


def test_a_closed_connection_is_transient_and_other_errors_are_not():
    assert transient(InterfaceError("connection already closed"))
    assert not transient(DataError("value too long"))
    assert not transient(ValueError("not a database error"))


@pytest.mark.django_db
def test_the_real_driver_says_so_on_this_database():
    # SQLite: an expression nested past its limit; PostgreSQL: a statement_timeout that cancels the statement.
    with pytest.raises(OperationalError) as raised, connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("SELECT " + "(" * 1200 + "1" + ")" * 1200)
        else:
            cursor.execute("SET LOCAL statement_timeout = 1")
            cursor.execute("SELECT pg_sleep(1)")
    assert transient(raised.value) == (connection.vendor == "postgresql")
