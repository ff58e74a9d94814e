"""What PostgreSQL row-level security costs a store: ``python -m benchmarks.rls_bench``.

Four databases with the same data, read and written by the same non-superuser
application role (the way row-level security is meant to be used):

- ``no RLS``: policies off (enabled once for the grants, then disabled); the store keeps
  its autocommit single-statement fast path.
- ``RLS``: ``enable_row_level_security`` as shipped: every call is a
  transaction that starts with ``set_config('convotree.tenant', ..., true)``, and the
  node policy probes the conversation's primary key once per node read.
- ``RLS, EXISTS policy``: the same with the node policy written as ``EXISTS (SELECT 1
  FROM convotree_conversations ...)``, the textbook form, which PostgreSQL may plan as
  a hashed subplan reading every conversation of the tenant per statement (why it is
  not the shipped one).
- ``RLS, tenant on nodes``: a hypothetical schema where each node carries its
  conversation's ``tenant_id`` (a column this benchmark adds), so the node policy is a
  plain comparison with no probe of the conversation: what a migration would buy.

Reads run twice: on freshly vacuumed tables, and after the appends. Each append updates
the conversation's row (``updated_at``, an indexed column, so not a HOT update): until
VACUUM the row has one dead version per append, and every probe of it by primary key
visits them all. Without row-level security a read probes the conversation once; under
the shipped policy once per node read, which is where the second set of rows differs.

The tenant owns a chain of 1,000 messages (real OASST2 texts) and 2,000 other
conversations; another tenant owns the same again. Operations: ``append`` (one message
under the leaf), ``context`` (gpt-4o, 16k budget, from the leaf at depth 1,000),
``path`` (all 1,001 nodes) and ``list_conversations`` (a page of 50). Medians of runs
taken round-robin so machine noise hits the four alike. Writes the table to
``benchmarks/results/rls.md``. PostgreSQL from ``CONVOTREE_BENCH_POSTGRES_URL``
(default: the local test server); its databases and role are dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

_SHARED = Path(__file__).resolve().parents[2] / "shared" / "tiktoken"
if "TIKTOKEN_CACHE_DIR" not in os.environ and _SHARED.is_dir():
    os.environ["TIKTOKEN_CACHE_DIR"] = str(_SHARED)

import convotree  # noqa: E402
from convotree import _rls  # noqa: E402
from convotree._ids import uuid7  # noqa: E402
from convotree._schema import conversations  # noqa: E402

from ._data import Pool, load_tree  # noqa: E402
from ._timing import publish, table  # noqa: E402

PG_URL = os.environ.get("CONVOTREE_BENCH_POSTGRES_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RESULTS = Path(__file__).resolve().parent / "results" / "rls.md"
CONTENDERS = ("no RLS", "RLS", "RLS, EXISTS policy", "RLS, tenant on nodes")
EXISTS_POLICY = (f"EXISTS (SELECT 1 FROM convotree_conversations o WHERE o.id = "
                 f"convotree_nodes.conversation_id AND o.tenant_id = {_rls.TENANT_EXPRESSION})")


def round_robin_ms(runs: list[Callable[[], object]], *, repeat: int,
                   max_seconds: float = 20.0) -> list[float]:
    """Median milliseconds of each run, the runs taken in turn."""
    for run in runs:
        run()
    times: list[list[float]] = [[] for _ in runs]
    started = time.perf_counter()
    while len(times[0]) < repeat:
        for run, seen in zip(runs, times, strict=True):
            begin = time.perf_counter()
            run()
            seen.append((time.perf_counter() - begin) * 1000)
        if len(times[0]) >= 5 and time.perf_counter() - started > max_seconds:
            break
    return [statistics.median(seen) for seen in times]


def _fill(url: str, pool: Pool, depth: int, others: int) -> convotree.Node:
    """As the superuser: the measured tenant's chain and conversations, and another
    tenant's copy of both."""
    leaf = None
    for tenant in ("bench", "other"):
        with convotree.Store(url, tenant=tenant) as store:
            found, _ = load_tree(store, pool, spine=depth)
            leaf = found if tenant == "bench" else leaf
            now = datetime.now(UTC)
            with store.engine.begin() as conn:
                conn.execute(conversations.insert(), [
                    {"id": uuid7(), "tenant_id": tenant, "title": None, "metadata": None,
                     "current_node_id": None, "created_at": now, "updated_at": now}
                    for _ in range(others)])
    with sa.create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))
    assert leaf is not None
    return leaf


def _variant(url: str, index: int, role: str) -> None:
    """Make database ``index`` the contender ``CONTENDERS[index]`` (as the superuser)."""
    _rls.enable_row_level_security(url, role=role)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        if index == 0:
            _rls.disable_row_level_security(conn.engine)   # the grants stay
        elif index == 2:
            conn.execute(sa.text(f"ALTER POLICY {_rls.POLICY} ON convotree_nodes "
                                 f"USING ({EXISTS_POLICY}) WITH CHECK ({EXISTS_POLICY})"))
        elif index == 3:
            # The hypothetical schema: each node carries its conversation's tenant
            # (filled here from the setting, as an insert would write it).
            probe = _rls.policies()["convotree_nodes"]
            conn.execute(sa.text(
                "ALTER TABLE convotree_nodes ADD COLUMN tenant_id text; "
                "UPDATE convotree_nodes n SET tenant_id = c.tenant_id "
                "FROM convotree_conversations c WHERE c.id = n.conversation_id; "
                "ALTER TABLE convotree_nodes ALTER COLUMN tenant_id SET NOT NULL, "
                f"ALTER COLUMN tenant_id SET DEFAULT {_rls.TENANT_EXPRESSION}; "
                f"ALTER POLICY {_rls.POLICY} ON convotree_nodes "
                f"USING (tenant_id = {_rls.TENANT_EXPRESSION}) "
                f"WITH CHECK (tenant_id = {_rls.TENANT_EXPRESSION} AND {probe})"))
    engine.dispose()
    _vacuum(url)


def _vacuum(url: str) -> None:
    with sa.create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(sa.text("VACUUM ANALYZE"))


def run(args: argparse.Namespace) -> str:
    admin_url = make_url(PG_URL)
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    tag = uuid.uuid4().hex[:8]
    role = f"convotree_bench_app_{tag}"
    names = [f"convotree_bench_rls_{tag}_{i}" for i in range(len(CONTENDERS))]
    urls = [admin_url.set(database=name).render_as_string(False) for name in names]
    pool = Pool.build()
    stores: list[convotree.Store] = []
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
            for name in names:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        leaves = []
        for index, (name, url) in enumerate(zip(names, urls, strict=True)):
            convotree.migrate(url)
            leaves.append(_fill(url, pool, args.depth, args.others))
            _variant(url, index, role)
            app = admin_url.set(username=role, password=None, database=name)
            stores.append(convotree.Store(app.render_as_string(False), tenant="bench"))
        print(f"loaded {len(names)} databases", file=sys.stderr)

        Operation = Callable[[convotree.Store, convotree.Node], object]
        reads: list[tuple[str, Operation]] = [
            (f"context 16k at depth {args.depth:,}", lambda s, leaf: s.context(
                leaf, model="gpt-4o", budget=16_000)),
            (f"path of {args.depth + 1:,} nodes", lambda s, leaf: s.path(leaf)),
            ("list_conversations (50)", lambda s, leaf: s.list_conversations(limit=50)),
        ]
        append: Operation = lambda s, leaf: s.append(  # noqa: E731
            leaf.conversation_id, parent=leaf, role="user", content="one more question",
            set_current=False)
        # Reads on vacuumed tables, then the appends (each leaves a dead version of the
        # conversation's row until VACUUM), then the same reads again.
        phases = [("", reads), ("", [("append (one message)", append)]),
                  (f", after {args.repeat:,} appends", reads)]
        rows = []
        for suffix, operations in phases:
            for label, operation in operations:
                runs: list[Callable[[], object]] = [
                    (lambda s=s, leaf=leaf, operation=operation: operation(s, leaf))
                    for s, leaf in zip(stores, leaves, strict=True)]
                plain, rls, exists, column = round_robin_ms(runs, repeat=args.repeat)
                rows.append([label + suffix, f"{plain:.2f}", f"{rls:.2f}",
                             f"{rls - plain:+.2f}", f"{rls / plain:.2f}x", f"{exists:.2f}",
                             f"{column:.2f}"])
                print("  " + " | ".join(rows[-1]), file=sys.stderr)
        contexts = [s.context(leaf, model="gpt-4o", budget=16_000)
                    for s, leaf in zip(stores, leaves, strict=True)]
        # The same answer everywhere (the ids differ: each database made its own).
        assert len({(len(c.node_ids), c.tokens) for c in contexts}) == 1
        server = stores[0].engine.dialect.server_version_info
    finally:
        for store in stores:
            store.close()
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()
    return "\n".join([
        f"# Row-level security: what it costs ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, PostgreSQL {'.'.join(map(str, server or ()))} on "
        f"localhost, psycopg 3, one non-superuser application role. The tenant holds a "
        f"chain of {args.depth:,} messages and {args.others:,} other conversations "
        f"(another tenant the same); the 16k context holds {len(contexts[0].node_ids)} "
        f"messages. Milliseconds, medians of up to {args.repeat} round-robin runs. "
        "Columns: see the module docstring (`python -m benchmarks.rls_bench`).",
        "",
        table(["operation", "no RLS", "RLS", "RLS - no RLS", "ratio",
               "RLS, EXISTS policy", "RLS, tenant on nodes"], rows),
        "",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rls_bench",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=1_000)
    parser.add_argument("--others", type=int, default=2_000,
                        help="extra conversations per tenant")
    parser.add_argument("--repeat", type=int, default=200)
    parser.add_argument("--quick", action="store_true", help="20 runs, nothing written")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat = 20
    publish(run(args), None if args.quick else RESULTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
