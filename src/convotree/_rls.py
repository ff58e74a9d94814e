"""PostgreSQL row-level security for convotree's tenants: opt-in, outside the migrations.

A ``Store`` already confines every statement to its tenant in SQL. Row-level security is
the second wall, for what that filter cannot cover: raw SQL that people write against
the tables and views, and a bug that forgets the filter. ``enable_row_level_security``
(``convotree db enable-rls``) gives every tenant-owned table a policy that admits only
rows of the tenant named by the ``convotree.tenant`` setting, and makes the reporting
views run with the querying role's rights, so the policies filter them as well.

``Store`` sets that value with ``set_config(..., true)`` (the function form of
``SET LOCAL``) at the start of every transaction it opens or joins, so the value never
outlives the transaction: safe under transaction-pooling proxies such as pgbouncer, and
a raw query on a pooled connection afterwards sees nothing. An unset value (NULL), and
the empty string PostgreSQL leaves behind once a transaction-local value has ended, both
admit no row: the policies fail closed. The empty tenant ``''`` therefore cannot be used
under row-level security; a store of that tenant is refused (``ConfigurationError``)
rather than left to see nothing.

Whether the tables have it is read once per engine and read again after
``RECHECK_SECONDS`` (a cached catalog lookup), so stores on databases without
row-level security keep their single-statement fast path, and running processes
notice a change without a restart. A role that bypasses row-level security (a
superuser, or a role with ``BYPASSRLS``) is not filtered by PostgreSQL: the store
logs a WARNING under ``convotree.rls`` once per engine and treats the policies as
absent for it.

The policies are derived from ``_schema.metadata``: a table with a ``tenant_id`` column
is filtered on it, a table whose single-column key refers to such a table is filtered
through that row (``convotree_nodes`` through its conversation). A table that is
neither is refused, so a table added later cannot be left without a policy.
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    Text,
    bindparam,
    func,
    literal_column,
    select,
    text,
)
from sqlalchemy import true as sql_true
from sqlalchemy.exc import DBAPIError

from . import _dberrors, _driver
from ._citus import is_distributed
from ._log import get_logger, safe_url
from ._revision import OWNER_LOCK_TIMEOUT, VERSION_TABLE, lock_schema
from ._schema import metadata
from .errors import ConfigurationError, ConvotreeError

__all__ = [
    "POLICY",
    "RECHECK_SECONDS",
    "TENANT_SETTING",
    "RowLevelSecurity",
    "connect",
    "disable_row_level_security",
    "enable_row_level_security",
    "forget",
    "known_inactive",
    "policies",
    "set_tenant",
]

#: The setting the policies compare ``tenant_id`` with.
TENANT_SETTING = "convotree.tenant"
#: The name of convotree's policy on each table (dropped and made again by ``enable``).
POLICY = "convotree_tenant_isolation"
#: The tenant the policies admit: NULL when the setting is unset, and also when it is
#: '' (what PostgreSQL leaves in the session once a transaction-local value ended).
TENANT_EXPRESSION = f"nullif(current_setting('{TENANT_SETTING}', true), '')"
#: How long a process trusts what it read about a database's row-level security.
RECHECK_SECONDS = 30.0
#: ``enable``/``disable`` give up rather than queue behind a long transaction.
LOCK_TIMEOUT = OWNER_LOCK_TIMEOUT
#: Every table (and view) convotree creates starts with this (``convotree.alembic``).
PREFIX = "convotree_"
#: Privileges an application role needs on a tenant-owned table. Never TRUNCATE: it
#: is not subject to row-level security.
TABLE_PRIVILEGES = "SELECT, INSERT, UPDATE, DELETE"


# --- which tables, which policy ---------------------------------------------------------


def _through(table: Table, owners: dict[str, Table]) -> str | None:
    """The policy of a table whose rows belong to a row of a tenant-owned table."""
    for key in sorted(table.foreign_key_constraints, key=lambda fk: tuple(fk.column_keys)):
        parent = key.referred_table
        if parent.name not in owners or len(key.elements) != 1:
            continue
        referred = key.elements[0].column
        if list(parent.primary_key.columns) != [referred]:
            continue
        # A scalar subquery, not EXISTS: PostgreSQL may turn an EXISTS in a policy into
        # a hashed subplan that reads every conversation of the tenant per statement;
        # this form is one primary-key probe per row read, whatever the statistics say.
        return (f"(SELECT o.tenant_id FROM {parent.name} o WHERE o.{referred.name} = "
                f"{table.name}.{key.elements[0].parent.name}) = {TENANT_EXPRESSION}")
    return None


def policies() -> dict[str, str]:
    """Every convotree table and its policy expression (both USING and WITH CHECK).

    Raises ``ConfigurationError`` for a table no rule covers (neither ``tenant_id`` nor
    a key to a table that has one): enabling must never leave a table unfiltered.
    """
    owners = {t.name: t for t in metadata.sorted_tables if "tenant_id" in t.c}
    found: dict[str, str] = {}
    for table in metadata.sorted_tables:
        rule = (f"tenant_id = {TENANT_EXPRESSION}" if table.name in owners
                else _through(table, owners))
        if rule is None:
            raise ConfigurationError(
                f"table {table.name} has no tenant_id and no key to a table that has "
                "one: no row-level security policy covers it")
        found[table.name] = rule
    return found


# --- enabling and disabling ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowLevelSecurity:
    """What ``enable_row_level_security`` or ``disable_row_level_security`` did.

    ``tables``: the tables whose policy was made (or dropped); ``views``: convotree's
    views switched to (or back from) ``security_invoker``; ``role``: the role granted.
    """

    enabled: bool
    tables: tuple[str, ...]
    views: tuple[str, ...]
    role: str | None = None


@dataclass(frozen=True, slots=True)
class _View:
    name: str          # as regclass prints it (schema-qualified when off the path)
    relname: str
    invoker: bool      # security_invoker is on
    owner_bypasses: bool


_TRUE_OPTION = ("true", "on", "1", "yes", "t", "y")


def _invoker(options: Sequence[str] | None) -> bool:
    for option in options or ():
        name, _, value = option.partition("=")
        if name == "security_invoker":
            return value.lower() in _TRUE_OPTION
    return False


def _regclasses(names: Sequence[str]) -> str:
    # Our own constant table names (checked: plain identifiers), never user input.
    assert all(re.fullmatch(r"[a-z_][a-z0-9_]*", n) for n in names)
    return ", ".join(f"'{n}'::regclass" for n in names)


def _views(conn: Connection, tables: Sequence[str]) -> list[_View]:
    """Every view that reads the tables, directly or through other views."""
    rows = conn.exec_driver_sql(f"""
        WITH RECURSIVE dependent(oid) AS (
            SELECT c.oid FROM pg_class c WHERE c.oid IN ({_regclasses(tables)})
          UNION
            SELECT r.ev_class FROM dependent d
            JOIN pg_depend p ON p.refclassid = 'pg_class'::regclass
                 AND p.refobjid = d.oid AND p.classid = 'pg_rewrite'::regclass
            JOIN pg_rewrite r ON r.oid = p.objid
            WHERE r.ev_class <> d.oid)
        SELECT c.oid::regclass::text, c.relname, c.reloptions,
               o.rolsuper OR o.rolbypassrls
        FROM dependent d JOIN pg_class c ON c.oid = d.oid
        JOIN pg_roles o ON o.oid = c.relowner
        WHERE c.relkind = 'v' ORDER BY 1""").all()
    return [_View(name, relname, _invoker(options), bool(bypasses))
            for name, relname, options, bypasses in rows]


def _quote(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def _check_caller(conn: Connection, tables: Sequence[str]) -> None:
    """Only the tables' owner (or a superuser) may change their security."""
    missing = conn.exec_driver_sql(
        "SELECT count(*) FROM unnest(ARRAY[" + ", ".join(f"to_regclass('{t}')" for t in tables)
        + "]) AS t(oid) WHERE t.oid IS NULL").scalar()
    if missing:
        raise ConfigurationError("the convotree tables are missing: run `convotree db "
                                 "upgrade --url URL` first")
    foreign = conn.exec_driver_sql(
        f"SELECT string_agg(c.relname || ' (owner ' || pg_get_userbyid(c.relowner) || ')', "
        f"', ') FROM pg_class c WHERE c.oid IN ({_regclasses(tables)}) "
        "AND NOT pg_has_role(current_user, c.relowner, 'USAGE')").scalar()
    if foreign:
        raise ConfigurationError(
            f"connect as the owner of the convotree tables or a superuser to change their "
            f"row-level security; {conn.exec_driver_sql('SELECT current_user').scalar()} "
            f"does not own {foreign}")


def _check_role(conn: Connection, role: str, tables: Sequence[str]) -> None:
    """The application role must be filtered by the policies and unable to lift them."""
    found = conn.execute(text(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :role"),
        {"role": role}).first()
    if found is None:
        raise ConfigurationError(f"no role named {role!r} (create it first: CREATE ROLE "
                                 f"{_quote(conn, role)} LOGIN PASSWORD '...')")
    superuser, bypass = found
    if superuser or bypass:
        raise ConfigurationError(
            f"role {role!r} is a {'superuser' if superuser else 'BYPASSRLS role'}: "
            "PostgreSQL never applies row-level security to it; give the application a "
            "role without SUPERUSER and BYPASSRLS")
    above = conn.execute(text(
        "SELECT string_agg(r.rolname, ', ' ORDER BY r.rolname) FROM pg_roles r "
        "WHERE (r.rolsuper OR r.rolbypassrls) AND r.rolname <> :role "
        "AND pg_has_role(:role, r.oid, 'MEMBER')"), {"role": role}).scalar()
    if above:
        raise ConfigurationError(
            f"role {role!r} is a member of {above}, which bypass row-level security "
            "(SET ROLE would lift the policies): use a role outside them")
    owns = conn.execute(text(
        f"SELECT string_agg(c.relname, ', ' ORDER BY c.relname) FROM pg_class c "
        f"WHERE c.oid IN ({_regclasses(tables)}) "
        "AND pg_has_role(:role, c.relowner, 'MEMBER')"), {"role": role}).scalar()
    if owns:
        raise ConfigurationError(
            f"role {role!r} owns (or is a member of the owner of) {owns}: an owner can "
            "ALTER TABLE ... DISABLE ROW LEVEL SECURITY; use a role that does not own "
            "the tables")


def _grant(conn: Connection, role: str, tables: Sequence[str], views: Sequence[str]) -> None:
    who = _quote(conn, role)
    schema = conn.execute(text(
        "SELECT n.nspname, has_schema_privilege(:role, n.oid, 'USAGE') FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = CAST(:table AS regclass)"),
        {"role": role, "table": tables[0]}).one()
    if not schema[1]:
        conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {_quote(conn, schema[0])} TO {who}")
    conn.exec_driver_sql(f"GRANT {TABLE_PRIVILEGES} ON {', '.join(tables)} TO {who}")
    # The store reads the schema revision when it opens.
    if conn.exec_driver_sql(f"SELECT to_regclass('{VERSION_TABLE}')").scalar() is not None:
        conn.exec_driver_sql(f"GRANT SELECT ON {VERSION_TABLE} TO {who}")
    for view in views:
        conn.exec_driver_sql(f"GRANT SELECT ON {view} TO {who}")
    # convotree's keys are client-made UUIDs; a sequence added later is granted too.
    sequences = conn.execute(text(
        "SELECT CAST(CAST(c.oid AS regclass) AS text) FROM pg_class c "
        "WHERE c.relkind = 'S' AND starts_with(c.relname, :prefix) AND c.relnamespace = "
        "(SELECT relnamespace FROM pg_class WHERE oid = CAST(:table AS regclass))"),
        {"prefix": PREFIX, "table": tables[0]}).scalars().all()
    for sequence in sequences:
        conn.exec_driver_sql(f"GRANT USAGE, SELECT ON SEQUENCE {sequence} TO {who}")


@contextlib.contextmanager
def _owner_transaction(url_or_engine: str | Engine, action: str) -> Iterator[Connection]:
    """One transaction on a PostgreSQL database, serialized with migrations."""
    from ._migrate import _engine_for, check

    if isinstance(url_or_engine, str):
        from ._engine import _parsed

        backend = _parsed(url_or_engine).get_backend_name()
    else:
        backend = url_or_engine.dialect.name
    if backend != "postgresql":
        raise ConfigurationError(
            f"cannot {action} row-level security on {backend}: it is a PostgreSQL "
            "feature (elsewhere the store's own tenant filter is the only isolation)")
    with _engine_for(url_or_engine) as engine:
        check(engine)   # SchemaOutOfDate, with the fixing command, before any change
        try:
            with engine.connect() as conn, conn.begin():
                lock_schema(conn, LOCK_TIMEOUT)
                yield conn
        except ConvotreeError:
            raise
        except DBAPIError as exc:
            raise _dberrors.translate(
                exc, f"{action.removesuffix('e')}ing row-level security (nothing was "
                     "changed)") from exc
        finally:
            forget()


def enable_row_level_security(url_or_engine: str | Engine, *, role: str | None = None
                              ) -> RowLevelSecurity:
    """Turn on PostgreSQL row-level security for convotree's tenants (idempotent).

    In one transaction: every tenant-owned table gets ``ENABLE`` and ``FORCE ROW LEVEL
    SECURITY`` (FORCE: the tables' owner is filtered too) and the policy
    ``convotree_tenant_isolation``, ``USING`` and ``WITH CHECK`` the tenant named by the
    ``convotree.tenant`` setting (unset: no rows); convotree's views over them switch
    to ``security_invoker`` (PostgreSQL 15+), so raw SQL through a view is filtered as
    the querying role. With ``role``, that application role is granted what a store
    needs (``SELECT, INSERT, UPDATE, DELETE`` on the tables, ``SELECT`` on the views and
    the version table, schema usage if missing); it must not be a superuser, have
    ``BYPASSRLS``, belong to such a role, or own the tables (``ConfigurationError``):
    PostgreSQL never filters the first two, and an owner can switch the policies off.

    Run it as the tables' owner (or a superuser), after ``convotree.migrate`` and again
    after every upgrade. Raises ``ConfigurationError`` on SQLite, for a role that would
    bypass the policies, or for another view over the tables that would let rows of
    every tenant through (owned by a role that bypasses them, not ``security_invoker``).
    """
    if role is not None and (not isinstance(role, str) or not role):
        raise ConfigurationError("role must be a non-empty role name")
    rules = policies()
    tables = tuple(rules)
    with _owner_transaction(url_or_engine, "enable") as conn:
        _check_caller(conn, tables)
        if is_distributed(conn):
            raise ConfigurationError(
                "cannot enable row-level security on tables distributed by Citus: Citus "
                "supports no policy that reads another table, and convotree's node policy "
                "reads the conversation's tenant (docs/scale-out.md); nothing was changed")
        if role is not None:
            _check_role(conn, role, tables)
        views = _views(conn, tables)
        ours = [v for v in views if v.relname.startswith(PREFIX)]
        leaking = [v.name for v in views
                   if not v.relname.startswith(PREFIX) and not v.invoker and v.owner_bypasses]
        if leaking:
            raise ConfigurationError(
                f"the views {', '.join(leaking)} read convotree's tables with the rights "
                "of an owner that bypasses row-level security, so they would show every "
                "tenant's rows: ALTER VIEW ... SET (security_invoker = true) (or give "
                "them another owner), then enable again")
        version = conn.dialect.server_version_info or (0,)
        if ours and version < (15,):
            raise ConfigurationError(
                f"the views {', '.join(v.name for v in ours)} need security_invoker "
                "(PostgreSQL 15 or later) to be filtered; this server is "
                f"{'.'.join(map(str, version))}")
        conn.exec_driver_sql(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        for table, rule in rules.items():
            conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
            conn.exec_driver_sql(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
            conn.exec_driver_sql(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
            conn.exec_driver_sql(f"CREATE POLICY {POLICY} ON {table} AS PERMISSIVE FOR ALL "
                                 f"TO PUBLIC USING ({rule}) WITH CHECK ({rule})")
        for view in ours:
            conn.exec_driver_sql(f"ALTER VIEW {view.name} SET (security_invoker = true)")
        if role is not None:
            _grant(conn, role, tables, [v.name for v in ours])
    return RowLevelSecurity(True, tables, tuple(v.name for v in ours), role)


def disable_row_level_security(url_or_engine: str | Engine) -> RowLevelSecurity:
    """Turn convotree's row-level security off again (idempotent, one transaction).

    Drops the policies, ``NO FORCE`` and ``DISABLE ROW LEVEL SECURITY`` on the tables,
    and resets ``security_invoker`` on convotree's views (the migrations' definition).
    Grants stay as they are. PostgreSQL only, as the tables' owner.
    """
    rules = policies()
    tables = tuple(rules)
    with _owner_transaction(url_or_engine, "disable") as conn:
        _check_caller(conn, tables)
        ours = [v for v in _views(conn, tables) if v.relname.startswith(PREFIX)]
        conn.exec_driver_sql(f"LOCK TABLE {', '.join(tables)} IN ACCESS EXCLUSIVE MODE")
        for table in tables:
            conn.exec_driver_sql(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
            conn.exec_driver_sql(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
            conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
        version = conn.dialect.server_version_info or (0,)
        for view in ours:
            if version >= (15,):
                conn.exec_driver_sql(f"ALTER VIEW {view.name} RESET (security_invoker)")
    return RowLevelSecurity(False, tables, tuple(v.name for v in ours))


# --- what a store does at the start of each transaction --------------------------------------


@dataclass(frozen=True, slots=True)
class _State:
    active: bool       # the policies apply to this engine's connections
    checked: float     # time.monotonic() of the catalog read


_tables = tuple(policies())
_IS_ACTIVE = (
    "SELECT coalesce(bool_or(c.relrowsecurity), false), "
    "coalesce(bool_and(c.relrowsecurity), false), "
    "coalesce((SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r "
    "WHERE r.rolname = current_user), false) "
    f"FROM pg_class c WHERE c.oid IN ({', '.join(f'to_regclass({t!r})' for t in _tables)})")

_SET_TENANT = _driver.Statement(lambda postgresql: select(func.set_config(
    literal_column(f"'{TENANT_SETTING}'"), bindparam("tenant", type_=Text()), sql_true())))

_log = get_logger("rls")
_known: weakref.WeakKeyDictionary[Engine, _State] = weakref.WeakKeyDictionary()
_warned: weakref.WeakSet[Engine] = weakref.WeakSet()
_lock = threading.Lock()


def known_inactive(engine: Engine) -> bool:
    """True when row-level security is known (recently) not to apply to this engine's
    connections, so a statement may run in autocommit, with no transaction to scope
    the setting: no policies, or a role that bypasses them, or not PostgreSQL."""
    if engine.dialect.name != "postgresql":
        return True
    state = _known.get(engine)
    return (state is not None and not state.active
            and time.monotonic() - state.checked < RECHECK_SECONDS)


def forget(engine: Engine | None = None) -> None:
    """Read the catalog again at the next transaction of ``engine`` (of every engine
    when None): after enabling or disabling row-level security from elsewhere."""
    with _lock:
        if engine is None:
            _known.clear()
        else:
            _known.pop(engine, None)


def _warn(engine: Engine, message: str) -> None:
    """A WARNING under ``convotree.rls``, once per engine (not once per recheck)."""
    with _lock:
        if engine in _warned:
            return
        _warned.add(engine)
    _log.warning("%s: %s", safe_url(engine.url), message)


def enter(conn: Connection) -> bool:
    """Whether the policies apply to ``conn`` (cached per engine for RECHECK_SECONDS)."""
    engine = conn.engine
    state = _known.get(engine)
    now = time.monotonic()
    if state is None or now - state.checked >= RECHECK_SECONDS:
        some, every, bypasses = conn.exec_driver_sql(_IS_ACTIVE).one()
        if some and not every:
            _warn(engine, "row-level security is on for some of convotree's tables only "
                          "(a table added by an upgrade?): run "
                          "`convotree db enable-rls [--url URL]` again")
        if some and bypasses:
            _warn(engine, "this database connects as a superuser or BYPASSRLS role: "
                          "PostgreSQL does not apply convotree's row-level security to it "
                          "(the store's own tenant filter still applies)")
        state = _State(bool(some) and not bypasses, now)
        with _lock:
            _known[engine] = state
    return state.active


def set_tenant(conn: Connection, tenant: str) -> None:
    """Scope ``conn``'s current transaction to ``tenant`` when the policies apply."""
    if conn.dialect.name != "postgresql" or not enter(conn):
        return
    if not tenant:
        raise ConfigurationError(
            "the tenant '' cannot be used under row-level security (an unset or empty "
            "convotree.tenant admits no rows): give the store a tenant, e.g. "
            "Store(url, tenant='acme')")
    _SET_TENANT.run(conn, {"tenant": tenant})


@contextlib.contextmanager
def connect(engine: Engine, tenant: str) -> Iterator[Connection]:
    """A connection in a transaction scoped to ``tenant``: for code that reads with
    statements of its own outside ``Store._transaction`` (reports, the CLI's lookups)."""
    with engine.connect() as conn, conn.begin():
        set_tenant(conn, tenant)
        yield conn
