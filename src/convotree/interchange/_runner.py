"""The import loop shared by every format: build, write, count, report progress.

Each conversation is validated completely (``_build``) before its own write
transaction opens, so a broken conversation costs no lock and writes nothing, and
the next conversation of the file still imports.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from .. import _bulk
from ..errors import ConfigurationError, ConvotreeError
from ._build import build
from ._draft import DraftConversation
from ._result import ImportFailure, ImportResult

if TYPE_CHECKING:
    from ..store import Store

#: What a reader yields: a conversation to write, a broken record, or a documented skip.
Item = DraftConversation | ImportFailure


class Skip:
    """A record a reader deliberately does not import (counted in ``skipped``)."""

    def __init__(self, progress: int) -> None:
        self.progress = progress


def run(store: Store, items: Iterable[Item | Skip], fmt: str,
        on_progress: Callable[[int], None] | None, *, replace: bool = False) -> ImportResult:
    imported = skipped = replaced = nodes = 0
    ids: list[uuid.UUID] = []
    failures: list[ImportFailure] = []
    done = 0
    for item in items:
        if isinstance(item, ImportFailure):
            failures.append(item)
            done += 1
        elif isinstance(item, Skip):
            skipped += 1
            done = max(done + 1, item.progress)
        else:
            done = max(done + 1, item.progress)
            try:
                rows = build(item, tenant=store.tenant, fmt=fmt, encoding=store.encoding,
                             max_message_bytes=store.max_message_bytes)
                with store._transaction(write=True) as conn:
                    outcome = _bulk.insert_conversation(
                        conn, tenant=store.tenant, conversation=rows.conversation,
                        node_rows=rows.nodes, current_node_id=rows.current_node_id,
                        aliases=rows.aliases, replace=replace)
            except ConfigurationError:
                raise  # the machine's problem (an encoding that cannot load), not the file's
            except ConvotreeError as exc:
                failures.append(ImportFailure(item.label, f"{type(exc).__name__}: {exc}"))
            except (ValueError, TypeError, KeyError) as exc:
                # A value no check foresaw (an unknown tiktoken encoding in a native
                # file, say) fails this conversation, not the whole file.
                failures.append(ImportFailure(
                    item.label, f"InvalidImport: {type(exc).__name__}: {exc}"))
            else:
                if outcome == "skipped":
                    skipped += 1
                else:
                    imported += 1
                    replaced += outcome == "replaced"
                    nodes += len(rows.nodes)
                    ids.append(rows.conversation["id"])
        if on_progress is not None:
            on_progress(done)
    return ImportResult(imported=imported, skipped=skipped, failed=len(failures), nodes=nodes,
                        conversation_ids=ids, failures=failures, replaced=replaced)


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
