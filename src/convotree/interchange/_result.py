"""What an import reports: counts, the ids written, and one failure per broken record.

Frozen dataclasses, so the command line (and any caller) can print or serialise them
without worrying that the importer still holds a reference and changes them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class ImportFailure:
    """One record that was not imported: where it is in the file, and why."""

    source: str
    """The record, e.g. ``"conversation 3 (id abc)"`` or ``"line 17"``."""
    reason: str
    """Human readable: which message and what is wrong with it."""


@dataclass(frozen=True)
class ImportResult:
    """The outcome of ``import_file``.

    ``skipped`` counts conversations already present for this tenant (a re-import of
    the same file, or of an export of a conversation the tenant has, writes nothing) and
    documented duplicates inside the file. With ``replace=True``, conversations already
    present are written again instead: ``replaced`` counts them (they are also counted
    in ``imported``).
    """

    imported: int
    skipped: int
    failed: int
    nodes: int
    conversation_ids: list[uuid.UUID] = field(default_factory=list)
    failures: list[ImportFailure] = field(default_factory=list)
    replaced: int = 0
