"""The benchmark's own database, never anyone else's.

With ``DATABASE_URL`` pointing at PostgreSQL the harness creates ``moonslot_bench`` (or the
name in ``MOONSLOT_BENCH_DATABASE``, which must start so) on the same
server (dropping a leftover one first) and drops it at the end; the database named in the URL,
and pytest's ``test_*`` databases, are never opened. Without it, a SQLite file in a temporary
directory. Everything here runs before Django is set up, so it uses psycopg directly.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

BENCH_DATABASE = "moonslot_bench"
_SAFE_NAME = re.compile(r"^moonslot_bench[a-z0-9_]*$")
# Two people benchmarking against one PostgreSQL server at once would drop each other's
# database: each names its own (it must still start moonslot_bench, e.g. moonslot_bench_ann).
DATABASE_ENV = "MOONSLOT_BENCH_DATABASE"


def bench_database_name() -> str:
    return os.environ.get(DATABASE_ENV) or BENCH_DATABASE


@dataclass(frozen=True)
class BenchDatabase:
    url: str
    vendor: str  # "postgresql" | "sqlite"
    name: str


def bench_database_url(source_url: str | None, *, name: str, tmpdir: Path) -> BenchDatabase:
    """Where the benchmark's data goes, derived from the configured ``DATABASE_URL``: the same
    PostgreSQL server under the database ``name``, or a SQLite file in ``tmpdir``."""
    if not source_url or source_url.startswith("sqlite"):
        path = tmpdir / "bench.sqlite3"
        return BenchDatabase(url=f"sqlite:///{path}", vendor="sqlite", name=str(path))
    parts = urlsplit(source_url)
    if parts.scheme not in ("postgres", "postgresql", "pgsql", "psql"):
        raise ValueError(f"unsupported DATABASE_URL scheme {parts.scheme!r}")
    if not _SAFE_NAME.match(name):
        raise ValueError(f"refusing to use {name!r}: bench database names start {BENCH_DATABASE}")
    if parts.path.lstrip("/") == name:
        raise ValueError("DATABASE_URL already names the bench database; point it elsewhere")
    url = urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))
    return BenchDatabase(url=url, vendor="postgresql", name=name)


def _maintenance_dsn(url: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(("postgresql", parts.netloc, "/postgres", parts.query, ""))


def create_database(database: BenchDatabase) -> None:
    """A fresh, empty database (a leftover of an interrupted run is dropped first)."""
    if database.vendor == "sqlite":
        Path(database.name).unlink(missing_ok=True)
        return
    _drop_and_create(database, create=True)


def drop_database(database: BenchDatabase) -> None:
    if database.vendor == "sqlite":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(database.name + suffix).unlink(missing_ok=True)
        return
    _drop_and_create(database, create=False)


def _drop_and_create(database: BenchDatabase, *, create: bool) -> None:
    import psycopg
    from psycopg import sql

    if not _SAFE_NAME.match(database.name):  # the last guard before a DROP DATABASE
        raise ValueError(f"refusing to drop {database.name!r}")
    with psycopg.connect(_maintenance_dsn(database.url), autocommit=True) as conn:
        ident = sql.Identifier(database.name)
        # FORCE ends sessions a killed run may have left (PostgreSQL 13+).
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        if create:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
