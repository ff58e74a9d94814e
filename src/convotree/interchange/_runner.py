"""The import loop shared by every format: build, write in batches, count, report.

Each conversation is validated completely (``_build``) before anything is written, so
a broken conversation costs no lock and writes nothing, and the next one of the file
still imports. Valid conversations are written in batches (``_bulk.insert_conversations``:
a few statements and one commit per batch instead of per conversation; a file of small
trees, like OASST's, would otherwise spend its time committing). Each conversation
stays all or nothing: if the database refuses a batch, it is written again one
conversation per savepoint, so only the one at fault fails.

On PostgreSQL the loop also keeps plans honest while a table grows under it: see
:class:`_Statistics`.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from .. import _bulk
from ..errors import ConfigurationError, ConvotreeError, StoreUnavailable
from ._build import Rows, build
from ._draft import DraftConversation
from ._result import ImportFailure, ImportResult

if TYPE_CHECKING:
    from ..store import Store

#: What a reader yields: a conversation to write, a broken record, or a documented skip.
Item = DraftConversation | ImportFailure

#: A batch is written once it holds this many nodes, or this many conversations.
BATCH_NODES = 2_000
BATCH_CONVERSATIONS = 200


class Skip:
    """A record a reader deliberately does not import (counted in ``skipped``)."""

    def __init__(self, progress: int) -> None:
        self.progress = progress


@dataclass
class _Tally:
    imported: int = 0
    skipped: int = 0
    replaced: int = 0
    nodes: int = 0
    ids: list[uuid.UUID] = field(default_factory=list)
    failures: list[ImportFailure] = field(default_factory=list)

    def record(self, label: str, rows: Rows, outcome: str | ConvotreeError) -> None:
        if isinstance(outcome, ConvotreeError):
            self.failures.append(ImportFailure(label, f"{type(outcome).__name__}: {outcome}"))
        elif outcome == "skipped":
            self.skipped += 1
        else:
            self.imported += 1
            self.replaced += outcome == "replaced"
            self.nodes += len(rows.nodes)
            self.ids.append(rows.conversation["id"])


class _Statistics:
    """PostgreSQL plans while an import grows the tables (nothing to do on SQLite).

    PostgreSQL checks the parent of every inserted node with a query it plans itself
    and caches per connection. Planned while the table is a few pages, that plan is a
    sequential scan, and it stays one as the table grows: each insert then reads the
    whole table. So, while the table started small, the import's transactions plan
    afresh each time (``plan_cache_mode = force_custom_plan``, for the transaction
    only); and whenever the import has written as many nodes as the table held at the
    last count (it doubled), and once at the end, it runs ``ANALYZE`` on convotree's
    tables in a transaction of its own: fresh statistics for every later query, and
    cached plans on every connection are made again. Not inside a caller's transaction
    (``store.bind``): ANALYZE would hold its lock until the caller commits.
    """

    #: Below this many pages a sequential scan may win a plan that then outlives it.
    SMALL_PAGES = 64
    #: Write at least this many nodes before an ANALYZE is worth its sample.
    MIN_ROWS = 1_000

    def __init__(self, store: Store) -> None:
        self.store = store
        self.active = store.engine.dialect.name == "postgresql"
        self.small: bool | None = None
        self.counted = 0.0
        self.written = 0

    def _measure(self, conn: Connection) -> None:
        pages, tuples = conn.execute(text(
            "SELECT pg_relation_size(c.oid) / current_setting('block_size')::int, "
            "greatest(c.reltuples, 0) FROM pg_class c "
            "WHERE c.oid = to_regclass('convotree_nodes')")).one()
        self.small, self.counted = pages < self.SMALL_PAGES, float(tuples)

    @contextlib.contextmanager
    def planning(self, conn: Connection) -> Iterator[None]:
        """Around a batch's writes, in its transaction."""
        if not self.active:
            yield
            return
        if self.small is None:
            self._measure(conn)
        if not self.small:
            yield
            return
        before = conn.execute(text("SELECT current_setting('plan_cache_mode')")).scalar()
        conn.execute(text("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)"))
        yield
        conn.execute(text("SELECT set_config('plan_cache_mode', :mode, true)"),
                     {"mode": before})

    def wrote(self, nodes: int) -> None:
        """After a batch committed."""
        if not self.active:
            return
        self.written += nodes
        if self.written >= max(self.MIN_ROWS, self.counted):
            self.analyze()

    def finish(self) -> None:
        if self.active and self.written >= max(self.MIN_ROWS, 0.1 * self.counted):
            self.analyze()

    def analyze(self) -> None:
        if self.store._bound is not None:
            return
        try:
            with self.store.engine.connect() as conn:
                # Best effort: a role that does not own the tables gets a warning only.
                conn.execute(text("ANALYZE convotree_conversations, convotree_nodes"))
                self._measure(conn)
                conn.commit()
        except DBAPIError:
            return   # statistics are an optimisation, never a reason to fail an import
        self.written = 0


class _Writer:
    """Collects built conversations and writes them a batch at a time."""

    def __init__(self, store: Store, replace: bool, tally: _Tally,
                 statistics: _Statistics) -> None:
        self.store, self.replace, self.tally = store, replace, tally
        self.statistics = statistics
        self.pending: list[tuple[str, Rows]] = []
        self.pending_ids: set[uuid.UUID] = set()
        self.pending_nodes = 0

    def add(self, label: str, rows: Rows) -> bool:
        """Queue a conversation; returns whether that wrote a batch."""
        ids = {rows.conversation["id"], *rows.aliases}
        flushed = False
        if ids & self.pending_ids:   # the same conversation twice in one file
            flushed = self.flush()
        self.pending.append((label, rows))
        self.pending_ids |= ids
        self.pending_nodes += len(rows.nodes)
        if self.pending_nodes >= BATCH_NODES or len(self.pending) >= BATCH_CONVERSATIONS:
            flushed = self.flush() or flushed
        return flushed

    def flush(self) -> bool:
        batch, self.pending = self.pending, []
        self.pending_ids, self.pending_nodes = set(), 0
        if not batch:
            return False
        outcomes: list[Any]
        try:
            with self.store._transaction(write=True) as conn, self.statistics.planning(conn):
                outcomes = _bulk.insert_conversations(
                    conn, tenant=self.store.tenant, batch=[rows for _, rows in batch],
                    replace=self.replace)
        except ConfigurationError:
            raise
        except ConvotreeError as exc:
            outcomes = [exc] if len(batch) == 1 else self._one_by_one(batch)
        for (label, rows), outcome in zip(batch, outcomes, strict=True):
            self.tally.record(label, rows, outcome)
        self.statistics.wrote(sum(len(rows.nodes) for _, rows in batch))
        return True

    def _one_by_one(self, batch: list[tuple[str, Rows]]) -> list[Any]:
        """The batch again, one savepoint per conversation: only the one at fault fails."""
        outcomes: list[Any] = []
        with self._savepoints() as store:
            for _, rows in batch:
                try:
                    with store._transaction(write=True) as conn:
                        outcomes += _bulk.insert_conversations(
                            conn, tenant=store.tenant, batch=[rows], replace=self.replace)
                except ConfigurationError:
                    raise
                except ConvotreeError as exc:
                    if isinstance(exc, StoreUnavailable) or (
                            store._bound is not None and store._bound.invalidated):
                        # Not this record's fault: the transaction itself is gone (the
                        # connection was lost, or SQLite rolled it all back on a full
                        # disk). Stop; what earlier batches committed stays, and running
                        # the import again skips it.
                        raise
                    outcomes.append(exc)
        return outcomes

    @contextlib.contextmanager
    def _savepoints(self) -> Iterator[Store]:
        """A store whose every call is a savepoint of one transaction."""
        if self.store._bound is not None:
            yield self.store              # already inside the caller's transaction
            return
        with self.store.transaction() as tx:
            yield tx


def run(store: Store, items: Iterable[Item | Skip], fmt: str,
        on_progress: Callable[[int], None] | None, *, replace: bool = False) -> ImportResult:
    tally = _Tally()
    statistics = _Statistics(store)
    writer = _Writer(store, replace, tally, statistics)
    done = reported = 0

    def report() -> None:
        nonlocal reported
        if on_progress is not None and done != reported:
            on_progress(done)
            reported = done

    for item in items:
        if isinstance(item, ImportFailure):
            tally.failures.append(item)
            done += 1
        elif isinstance(item, Skip):
            tally.skipped += 1
            done = max(done + 1, item.progress)
        else:
            done = max(done + 1, item.progress)
            try:
                rows = build(item, tenant=store.tenant, fmt=fmt, encoding=store.encoding,
                             max_message_bytes=store.max_message_bytes)
            except ConfigurationError:
                raise  # the machine's problem (an encoding that cannot load), not the file's
            except ConvotreeError as exc:
                tally.failures.append(ImportFailure(item.label, f"{type(exc).__name__}: {exc}"))
            except (ValueError, TypeError, KeyError) as exc:
                # A value no check foresaw (an unknown tiktoken encoding in a native
                # file, say) fails this conversation, not the whole file.
                tally.failures.append(ImportFailure(
                    item.label, f"InvalidImport: {type(exc).__name__}: {exc}"))
            else:
                if writer.add(item.label, rows) or not writer.pending:
                    report()
                continue
        if not writer.pending:
            report()   # progress counts what is written: a queued batch reports later
    writer.flush()
    report()
    statistics.finish()
    return ImportResult(imported=tally.imported, skipped=tally.skipped,
                        failed=len(tally.failures), nodes=tally.nodes,
                        conversation_ids=tally.ids, failures=tally.failures,
                        replaced=tally.replaced)


def attempt(label: str, parse: Callable[[], DraftConversation]) -> Item:
    """Run a reader's parse of one record; a broken record becomes its failure report.

    Shapes a reader did not foresee (a list where an object belongs) are reported the
    same way instead of aborting the whole file.
    """
    try:
        return parse()
    except ConvotreeError as exc:
        return ImportFailure(label, f"{type(exc).__name__}: {exc}")
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        return ImportFailure(label, f"InvalidImport: unexpected shape ({type(exc).__name__}: "
                                    f"{exc})")
