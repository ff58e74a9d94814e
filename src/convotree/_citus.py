"""Citus: distributing convotree's tables by conversation, in one transaction.

convotree's schema is shardable as it stands (every key carries the conversation id),
but ``create_distributed_table`` cannot distribute it table by table: a distributed
table's foreign keys must point at distributed tables, and the conversations and the
nodes point at each other (the conversation's current node is a node). So
``distribute`` does, in one transaction on the coordinator: drop each foreign key
whose target is not distributed yet, distribute every convotree table (the
conversations by ``id``, every other table by ``conversation_id``, all co-located, so
a conversation's rows of every table are on one shard), put the dropped keys back
(Citus then enforces them per shard), and move any existing rows out of the
coordinator's local tables. The reporting views are re-created in their distributed
form (``migrations/versions/0006_reporting_views.py``).

It is idempotent: tables already distributed the right way are left alone, so it is
also how a table added by a later migration gets distributed (the migrations do it
themselves when they run on a distributed database; see docs/architecture.md). A
table distributed another way (another column, a reference table) is refused, not
repaired. On a server without the citus extension nothing is changed and a
``ConfigurationError`` says what is missing.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType

from sqlalchemy import Connection, Engine, Table, text
from sqlalchemy.exc import DBAPIError

from . import _dberrors
from ._revision import SCHEMA_REVISION, VERSION_TABLE, lock_schema
from ._schema import conversations, metadata
from .errors import ConfigurationError, ConvotreeError, InvalidArgument, SchemaOutOfDate

__all__ = ["Distribution", "distribute", "distribute_tables", "distribution_column",
           "follow_distribution", "is_distributed"]

#: Every convotree table is co-located with this one.
ANCHOR = conversations.name
#: Citus's upper bound for ``shard_count``.
MAX_SHARDS = 64_000


@dataclass(frozen=True, slots=True)
class Distribution:
    """What ``distribute`` found and did.

    ``distributed``: the tables this call distributed (empty when there was nothing to
    do); ``already``: the tables that were distributed before it; ``shard_count``: the
    shards of their co-location group; ``citus_version``: the extension's version.
    """

    distributed: tuple[str, ...]
    already: tuple[str, ...]
    shard_count: int
    citus_version: str

    @property
    def changed(self) -> bool:
        return bool(self.distributed)


def distribution_column(table: Table) -> str:
    """The column a table is distributed by: the conversation's id, whatever its name."""
    return "id" if table.name == ANCHOR else "conversation_id"


def _tables() -> list[Table]:
    """convotree's tables, the anchor first, then in foreign-key order."""
    ordered = [t for t in metadata.sorted_tables if t.name != ANCHOR]
    return [conversations, *ordered]


def citus_version(conn: Connection) -> str | None:
    """The citus extension's version in this database, or None without it."""
    if conn.dialect.name != "postgresql":
        return None
    value = conn.exec_driver_sql(
        "SELECT extversion FROM pg_extension WHERE extname = 'citus'").scalar()
    return None if value is None else str(value)


def _present(conn: Connection) -> list[str]:
    """convotree's tables that exist in this database, in ``_tables()`` order (one query)."""
    names = [t.name for t in _tables()]
    found = set(conn.execute(text(
        "SELECT n FROM unnest(CAST(:names AS text[])) AS n WHERE to_regclass(n) IS NOT NULL"),
        {"names": names}).scalars())
    return [name for name in names if name in found]


def _placement(conn: Connection) -> dict[str, tuple[str, str | None, int]]:
    """convotree's tables that Citus knows: name -> (method, column, co-location)."""
    rows = conn.execute(text(
        "SELECT c.relname, p.partmethod, "
        "       CASE WHEN p.partkey IS NOT NULL "
        "            THEN column_to_column_name(p.logicalrelid, p.partkey) END, "
        "       p.colocationid "
        "  FROM pg_dist_partition p JOIN pg_class c ON c.oid = p.logicalrelid "
        " WHERE c.oid = ANY (CAST(:oids AS regclass[]))"),
        {"oids": _present(conn) or [ANCHOR]}).all()
    return {str(name): (str(method), column, int(group)) for name, method, column, group in rows}


def is_distributed(conn: Connection) -> bool:
    """Whether this database's convotree tables are distributed by Citus.

    What the migrations ask before they create a table or a view: on a distributed
    database they distribute a new table and create the views' distributed form."""
    if citus_version(conn) is None or ANCHOR not in _present(conn):
        return False
    return ANCHOR in _placement(conn)


def _check_placement(placement: dict[str, tuple[str, str | None, int]]) -> None:
    """Refuse tables that Citus holds in another way than convotree needs."""
    anchor_group = placement[ANCHOR][2] if ANCHOR in placement else None
    for table in _tables():
        if table.name not in placement:
            continue
        method, column, group = placement[table.name]
        wanted = distribution_column(table)
        if method != "h" or column != wanted:
            kind = {"n": "a reference table or a Citus local table",
                    "h": f"distributed by {column}"}.get(method, f"partitioned ({method})")
            raise ConfigurationError(
                f"{table.name} is {kind}; convotree needs it hash-distributed by {wanted} "
                "(undistribute it with undistribute_table() and run distribute again)")
        if anchor_group is None:
            raise ConfigurationError(
                f"{table.name} is already distributed but {ANCHOR} is not, so it cannot "
                "be co-located with it: undistribute it (undistribute_table()) and run "
                "distribute again")
        if group != anchor_group:
            raise ConfigurationError(
                f"{table.name} is not co-located with {ANCHOR}; convotree needs every "
                "table of a conversation on one shard (alter_distributed_table(..., "
                f"colocate_with => '{ANCHOR}'))")


@dataclass(frozen=True, slots=True)
class _ForeignKey:
    table: str
    name: str
    definition: str


def _blocking_keys(conn: Connection, table: str, distributed: Sequence[str]
                   ) -> list[_ForeignKey]:
    """The table's foreign keys to other tables that are not distributed yet."""
    rows = conn.execute(text(
        "SELECT k.conname, pg_get_constraintdef(k.oid), t.relname FROM pg_constraint k "
        "  JOIN pg_class t ON t.oid = k.confrelid "
        " WHERE k.contype = 'f' AND k.conrelid = CAST(:table AS regclass) "
        "   AND k.confrelid <> k.conrelid ORDER BY k.conname"), {"table": table}).all()
    return [_ForeignKey(table, str(name), str(definition))
            for name, definition, target in rows if target not in distributed]


def _refuse_foreign_keys_from_elsewhere(conn: Connection, local: Sequence[str]) -> None:
    """An application's local table with a foreign key to a convotree table that is about
    to be distributed: Citus would fail late (when the local copy is truncated); say
    what to do before anything runs."""
    if not local:
        return
    rows = conn.execute(text(
        "SELECT s.relname, t.relname, k.conname FROM pg_constraint k "
        "  JOIN pg_class s ON s.oid = k.conrelid JOIN pg_class t ON t.oid = k.confrelid "
        " WHERE k.contype = 'f' AND k.confrelid = ANY (CAST(:targets AS regclass[])) "
        "   AND NOT (k.conrelid = ANY (CAST(:ours AS regclass[]))) ORDER BY 1, 3"),
        {"targets": list(local),
         "ours": _present(conn)}).all()
    if rows:
        keys = ", ".join(f"{source}.{name} -> {target}" for source, target, name in rows)
        raise ConfigurationError(
            f"tables outside convotree have foreign keys to its tables ({keys}): Citus "
            "cannot keep a local table's key to a distributed one. Drop those keys, run "
            "distribute, distribute your tables co-located "
            f"(create_distributed_table(..., colocate_with => '{ANCHOR}')) and add the "
            "keys back; nothing was changed")


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def distribute_tables(conn: Connection, *, shard_count: int | None = None) -> list[str]:
    """Distribute whichever convotree tables exist and are not distributed yet.

    Runs inside the caller's transaction (``distribute``, or a migration on a
    distributed database). Returns the tables it distributed, in order."""
    placement = _placement(conn)
    _check_placement(placement)
    present = _present(conn)
    done = [t.name for t in _tables() if t.name in placement]
    todo = [t for t in _tables() if t.name not in placement and t.name in present]
    if not todo:
        return []
    _refuse_foreign_keys_from_elsewhere(conn, [t.name for t in todo])
    dropped: list[_ForeignKey] = []
    for table in todo:
        # Citus refuses a distributed table whose foreign key points at a local table:
        # drop those keys now (the other side is distributed below) and restore them.
        for key in _blocking_keys(conn, table.name, [*done, table.name]):
            conn.exec_driver_sql(
                f"ALTER TABLE {_quote(conn, key.table)} DROP CONSTRAINT {_quote(conn, key.name)}")
            dropped.append(key)
        if table.name == ANCHOR:
            # A co-location group of convotree's own: never the application's tables'
            # (a rebalance or a tenant isolation would otherwise move those along).
            count = "" if shard_count is None else f", shard_count => {int(shard_count)}"
            options = f"{count}, colocate_with => 'none'"
        else:
            options = f", colocate_with => '{ANCHOR}'"
        conn.exec_driver_sql(
            f"SELECT create_distributed_table('{table.name}', "
            f"'{distribution_column(table)}'{options})")
        done.append(table.name)
    for key in dropped:
        conn.exec_driver_sql(f"ALTER TABLE {_quote(conn, key.table)} ADD CONSTRAINT "
                             f"{_quote(conn, key.name)} {key.definition}")
    # create_distributed_table copies existing rows to the shards and leaves the local
    # copy on the coordinator's disk, invisible; remove it (referencing tables first).
    for table in reversed(todo):
        conn.exec_driver_sql(
            f"SELECT truncate_local_data_after_distributing_table('{table.name}')")
    return [t.name for t in todo]


def follow_distribution(conn: Connection) -> list[str]:
    """In a migration that creates tables: distribute them if the database's convotree
    tables are distributed (co-located with the conversations); elsewhere nothing."""
    return distribute_tables(conn) if is_distributed(conn) else []


def _views_migration() -> ModuleType:
    """The migration that defines the reporting views (their SQL lives there only)."""
    from ._migrate import migrations_dir

    for path in sorted((migrations_dir() / "versions").glob("*.py"), reverse=True):
        if "def create_views(" in path.read_text(encoding="utf-8"):
            spec = importlib.util.spec_from_file_location(f"_convotree_{path.stem}", path)
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return module
    raise ConfigurationError("convotree's migration scripts define no reporting views")


def _shard_count(conn: Connection) -> int:
    return int(conn.execute(text(
        "SELECT count(*) FROM pg_dist_shard WHERE logicalrelid = CAST(:t AS regclass)"),
        {"t": ANCHOR}).scalar_one())


def _refuse_without_citus(conn: Connection) -> str:
    version = citus_version(conn)
    if version is not None:
        nodes = conn.exec_driver_sql("SELECT count(*) FROM pg_dist_node").scalar()
        if nodes and not conn.exec_driver_sql("SELECT citus_is_coordinator()").scalar():
            raise ConfigurationError(
                "this is a Citus worker: run distribute against the coordinator")
        holders = conn.exec_driver_sql(
            "SELECT count(*) FROM pg_dist_node WHERE isactive AND noderole = 'primary' "
            "AND shouldhaveshards").scalar()
        if not holders:
            raise ConfigurationError(
                "this Citus database has no worker to hold the shards: on the "
                "coordinator, run SELECT citus_set_coordinator_host('<its host>', <port>) "
                "and SELECT citus_add_node('<worker host>', <port>) for each worker (in "
                "this database, with the citus extension created on every node); "
                "nothing was changed")
        return version
    available = conn.exec_driver_sql(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'citus'").scalar()
    if available is None:
        raise ConfigurationError(
            "this PostgreSQL server has no citus extension: distribute needs a Citus "
            "coordinator (nothing was changed; on a single server convotree needs no "
            "distribution)")
    preloaded = conn.exec_driver_sql("SELECT current_setting('shared_preload_libraries')").scalar()
    if "citus" not in str(preloaded or ""):
        raise ConfigurationError(
            "the citus extension is installed on this server but not loaded: add citus "
            "to shared_preload_libraries, restart, run CREATE EXTENSION citus here and on "
            "every worker and add the workers (citus_add_node); nothing was changed")
    raise ConfigurationError(
        "the citus extension is installed on this server but not created in this "
        "database: run CREATE EXTENSION citus here and on every worker, add the "
        "workers (citus_add_node), then distribute again (nothing was changed)")


def _refuse_stale_schema(conn: Connection) -> None:
    revision = conn.exec_driver_sql(f"SELECT max(version_num) FROM {VERSION_TABLE}").scalar()
    if revision != SCHEMA_REVISION:
        raise SchemaOutOfDate(
            f"the schema changed to revision {revision!r} while distribute waited; run "
            "`convotree db upgrade --url URL`, then distribute again")


def _refuse_row_level_security(conn: Connection) -> None:
    secured = conn.execute(text(
        "SELECT count(*) FROM pg_class WHERE relrowsecurity "
        "AND oid = ANY (CAST(:names AS regclass[]))"),
        {"names": _present(conn)}).scalar()
    if secured:
        raise ConfigurationError(
            "row-level security is on for convotree's tables (convotree db enable-rls), "
            "and Citus supports no policy that reads another table, as convotree's node "
            "policy does: run `convotree db disable-rls [--url URL]` before distributing "
            "(docs/scale-out.md); nothing was changed")


def distribute(url_or_engine: str | Engine, *, shard_count: int | None = None
               ) -> Distribution:
    """Distribute convotree's tables on a Citus coordinator, co-located by conversation.

    Run it once after ``convotree.migrate`` on a database whose citus extension has its
    workers added; it is idempotent (a second call changes nothing and says so in
    ``Distribution.already``). Everything happens in one transaction, serialized with
    migrations: the mutual foreign key of conversations and nodes is dropped, the
    tables distributed (``shard_count`` shards, default Citus's
    ``citus.shard_count``), the key restored, existing rows moved to the shards, and
    the reporting views re-created in their distributed form. A failure leaves the
    database as it was.

    Raises ``ConfigurationError`` on SQLite, on PostgreSQL without the citus
    extension (nothing is changed), on a worker, or for a convotree table that Citus
    already holds another way; ``SchemaOutOfDate`` unless the schema is current.
    """
    from ._engine import _parsed
    from ._migrate import _engine_for, check

    backend = (_parsed(url_or_engine).get_backend_name() if isinstance(url_or_engine, str)
               else url_or_engine.dialect.name)
    if backend != "postgresql":
        raise ConfigurationError(
            f"cannot distribute a {backend} database: Citus is a PostgreSQL extension")
    if shard_count is not None and (not isinstance(shard_count, int)
                                    or isinstance(shard_count, bool)
                                    or not 1 <= shard_count <= MAX_SHARDS):
        raise InvalidArgument(
            f"shard_count must be an integer from 1 to {MAX_SHARDS:,}, not {shard_count!r}")
    with _engine_for(url_or_engine) as engine:
        try:
            with engine.connect() as conn:
                _refuse_without_citus(conn)   # before the schema: say what is missing first
            check(engine)
            # A real transaction even on an engine made with AUTOCOMMIT: all or nothing.
            with engine.connect().execution_options(
                    isolation_level="READ COMMITTED") as conn, conn.begin():
                version = _refuse_without_citus(conn)
                lock_schema(conn)
                _refuse_stale_schema(conn)   # again, now that migrations wait for us
                _refuse_row_level_security(conn)
                before = _placement(conn)
                _check_placement(before)
                if ANCHOR in before and shard_count is not None \
                        and shard_count != _shard_count(conn):
                    raise ConfigurationError(
                        f"the tables are already distributed with {_shard_count(conn)} "
                        f"shards, not {shard_count}: change that with Citus's "
                        f"alter_distributed_table('{ANCHOR}', shard_count => "
                        f"{shard_count}, cascade_to_colocated => true)")
                distributed = distribute_tables(conn, shard_count=shard_count)
                # Every run: views left in the single-server form (tables distributed by
                # hand, or an interrupted older run) get their distributed form.
                _views_migration().create_views(conn, replace=True)
                already = tuple(t.name for t in _tables() if t.name in before)
                return Distribution(tuple(distributed), already, _shard_count(conn), version)
        except ConvotreeError:
            raise
        except DBAPIError as exc:
            raise _dberrors.translate(
                exc, "distributing the tables (nothing was changed)") from exc

