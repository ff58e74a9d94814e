"""The context assembler's pure half: pricing, the pruning policy, and the result.

The database half (``_ops.fetch_window``) returns the rows near the leaf plus the
kept-always nodes above them; everything here is plain Python over those rows, so the
policy is unit-tested without a database and shared by every shell (sync, async, CLI).

Token accounting: a message costs its stored ``token_count`` + ``overhead_tokens``
(OpenAI's per-message rule, counted at insert) + its images/audio/files priced for the
model; a request adds the reply priming (3) and its tool definitions. The total
equals :func:`convotree.tokens.count_messages` on the returned messages, exactly.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, NamedTuple, Protocol

from . import tokens
from ._formats import NodeRow, from_json
from .errors import BudgetExceeded, ContextError, IncompleteToolCalls, UnknownModel

__all__ = [
    "Candidate",
    "Context",
    "ContextReport",
    "DefaultPolicy",
    "DepthRange",
    "PruningPolicy",
    "Selection",
    "Window",
    "resolve_budget",
]

Format = Literal["chat", "responses"]


# --- what the policy sees ------------------------------------------------------------


class Candidate(NamedTuple):
    """A node on the path, priced for the target model.

    ``depth`` identifies it on the path (one node per depth, the root at 0).
    ``call_ids`` are the ids of an assistant message's tool calls; ``answers`` the
    call a tool result answers.
    """

    depth: int
    role: str
    tokens: int
    always_kept: bool
    call_ids: tuple[str, ...] = ()
    answers: str | None = None


@dataclass(frozen=True, slots=True)
class Window:
    """The part of the path the assembler read.

    ``suffix``: consecutive nodes ending at the leaf, oldest first. ``kept_above``:
    the system, developer and pinned nodes above the suffix, oldest first.
    ``reaches_root``: the suffix starts at the root, or right below the node a
    ``summary`` covers down to (nothing older needs sending). ``summary``: the
    summary node that stands for everything above the suffix, if there is one.
    """

    suffix: Sequence[Candidate]
    kept_above: Sequence[Candidate]
    reaches_root: bool
    summary: Candidate | None = None


@dataclass(frozen=True, slots=True)
class Selection:
    """What a policy chose: the depths to send and why it stopped.

    ``reason`` is ``"root"`` (everything fitted), ``"summary"`` (everything after the
    summary fitted), ``"budget"`` (the next older message or tool group would not
    fit), or ``"window"`` (the policy needs rows older than the window to decide; the
    assembler then reads further and asks again). ``summary``: send the window's
    summary.
    """

    depths: frozenset[int]
    reason: str
    summary: bool = False


class PruningPolicy(Protocol):
    """Decides which nodes of a window to send within ``budget`` tokens.

    ``budget`` already excludes the request's fixed costs (reply priming, tools).
    Raise ``BudgetExceeded`` when no valid selection exists.
    """

    def select(self, window: Window, budget: int) -> Selection: ...


def _units(suffix: Sequence[Candidate]) -> tuple[list[list[Candidate]], list[Candidate]]:
    """Split a suffix (oldest first) into units, newest first: a tool call with all
    its results is one unit, every other message its own. Also returns tool results at
    the top of the window whose call lies above it (an unfinished unit)."""
    units: list[list[Candidate]] = []
    results: list[Candidate] = []
    for node in reversed(suffix):
        if node.role == "tool":
            results.append(node)
        elif node.call_ids:
            units.append([node, *reversed(results)])
            results = []
        else:
            units.append([node])
    return units, list(reversed(results))


@dataclass(frozen=True, slots=True)
class DefaultPolicy:
    """Keep every system, developer and pinned message, then the longest run of the
    newest messages that fits; a tool call and its results go together or not at all.

    0. A leaf that is a tool call still missing results: ``IncompleteToolCalls``.
    1. Kept-always nodes are sent, in path order, and the summary standing for the
       older messages if there is one (unless it leaves no room for the leaf: then
       the older messages are pruned without it); if the kept-always nodes alone
       exceed the budget, ``BudgetExceeded``.
    2. The leaf (with its tool group) must fit next to them, else ``BudgetExceeded``.
    3. Older units are added newest first while they fit; the first that does not
       ends the run, so the kept suffix has no gap.
    """

    def select(self, window: Window, budget: int) -> Selection:
        units, unfinished = _units(window.suffix)
        leaf = window.suffix[-1]
        if not units:
            # The window ends inside the leaf's own tool group: read up to its call.
            return Selection(frozenset(), "window")
        if leaf.role == "tool" or leaf.call_ids:
            group = units[0]
            calls = group[0].call_ids if group and group[0].call_ids else ()
            answered = {n.answers for n in group if n.role == "tool"}
            if not calls or set(calls) - answered:
                raise IncompleteToolCalls(
                    "the leaf is a tool call whose results are not all stored: append "
                    "every result first", pending=sorted(set(calls) - answered))
        kept_cost = sum(n.tokens for n in window.kept_above)
        kept_cost += sum(n.tokens for n in window.suffix if n.always_kept)
        if window.summary is not None:
            leaf_cost = sum(n.tokens for n in units[0] if not n.always_kept)
            if kept_cost + window.summary.tokens + leaf_cost > budget:
                # A summary is never worth losing the leaf: prune without it.
                return self.select(replace(window, summary=None, reaches_root=False), budget)
            kept_cost += window.summary.tokens
        if kept_cost > budget:
            raise BudgetExceeded(
                f"system, developer and pinned messages need {kept_cost} tokens; the budget "
                f"leaves {budget}", needed=kept_cost, budget=budget)
        chosen = {n.depth for n in window.kept_above}
        chosen |= {n.depth for n in window.suffix if n.always_kept}
        remaining = budget - kept_cost
        summary = window.summary is not None

        for index, unit in enumerate(units):
            cost = sum(n.tokens for n in unit if not n.always_kept)
            if cost > remaining:
                if index == 0:
                    raise BudgetExceeded(
                        f"the leaf needs {cost} tokens next to the kept-always messages; "
                        f"{remaining} remain", needed=cost, budget=remaining)
                return Selection(frozenset(chosen), "budget", summary)
            remaining -= cost
            chosen.update(n.depth for n in unit)
        if unfinished:
            partial = sum(n.tokens for n in unfinished)
            return Selection(frozenset(chosen), "budget" if partial > remaining else "window",
                             summary)
        if not window.reaches_root:
            return Selection(frozenset(chosen), "window", summary)
        return Selection(frozenset(chosen), "summary" if summary else "root", summary)


# --- the result ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DepthRange:
    """Consecutive path positions, ``first`` to ``last`` inclusive (root = depth 0)."""

    first: int
    last: int

    @property
    def count(self) -> int:
        return self.last - self.first + 1


def depth_ranges(depths: Sequence[int]) -> tuple[DepthRange, ...]:
    """Collapse sorted depths into ranges."""
    ranges: list[DepthRange] = []
    for depth in depths:
        if ranges and ranges[-1].last == depth - 1:
            ranges[-1] = DepthRange(ranges[-1].first, depth)
        else:
            ranges.append(DepthRange(depth, depth))
    return tuple(ranges)


def ranges_after(ranges: tuple[DepthRange, ...], depth: int) -> tuple[DepthRange, ...]:
    """The parts of ``ranges`` deeper than ``depth``."""
    return tuple(DepthRange(max(r.first, depth + 1), r.last) for r in ranges
                 if r.last > depth)


def complement_ranges(kept: tuple[DepthRange, ...], last: int) -> tuple[DepthRange, ...]:
    """Depth ranges of ``0..last`` not covered by ``kept`` (sorted, disjoint)."""
    gaps, start = [], 0
    for block in kept:
        if block.first > start:
            gaps.append(DepthRange(start, block.first - 1))
        start = block.last + 1
    if start <= last:
        gaps.append(DepthRange(start, last))
    return tuple(gaps)


@dataclass(frozen=True, slots=True)
class ContextReport:
    """How a context was assembled.

    Kept and dropped nodes are depth ranges on the path (depth 0 is the root), so the
    report stays small however long the conversation is. ``dropped`` is every node not
    sent as itself; ``gap`` is the part of it that no sent summary stands for either:
    what the model does not see in any form. Without summaries the gap is the dropped
    prefix (plain truncation); with a summary it is what lies between the summary and
    the oldest message sent. ``Store.context`` with a summarizer makes a new summary
    whenever it would leave a gap, so there it is empty unless the summarizer failed
    (``summary_error``) or the branch holds nothing a summary could take.
    ``compaction_id``: in a Responses context, the answer the API compacted that the
    context starts at (its compaction item stands for everything above it).
    """

    path_length: int
    kept: tuple[DepthRange, ...]
    dropped: tuple[DepthRange, ...]
    always_kept: int
    stopped: str
    message_tokens: int
    tools_tokens: int
    priming_tokens: int
    summary_id: uuid.UUID | None = None
    gap: tuple[DepthRange, ...] = ()
    compaction_id: uuid.UUID | None = None
    summary_created: bool = False
    summarizer_calls: int = 0
    summary_error: str | None = None
    recounted: tuple[uuid.UUID, ...] = ()
    estimates: tuple[str, ...] = ()
    rows_read: int = 0
    queries: int = 1

    @property
    def kept_count(self) -> int:
        return sum(r.count for r in self.kept)

    @property
    def dropped_count(self) -> int:
        return sum(r.count for r in self.dropped)

    @property
    def gap_count(self) -> int:
        return sum(r.count for r in self.gap)


@dataclass(frozen=True, slots=True)
class Context:
    """What to send: ``messages`` in the requested format, and their exact token total."""

    messages: list[dict[str, Any]]
    tokens: int
    budget: int
    model: str
    format: str
    report: ContextReport
    raw_ids: tuple[Any, ...] = field(default=(), repr=False)
    id_reader: Callable[[Any], uuid.UUID] | None = field(default=None, repr=False)

    @property
    def node_ids(self) -> tuple[uuid.UUID, ...]:
        """Ids of the nodes sent, in message order (converted on first use: most
        callers never need them, and a 128k-token context sends a thousand)."""
        reader = self.id_reader
        return tuple(reader(i) for i in self.raw_ids) if reader else self.raw_ids


# --- budgets -----------------------------------------------------------------------------


def resolve_budget(model: str, budget: int | None, reserve_output: int) -> int:
    """The prompt budget: ``budget`` if given, else the model's window minus the reserve.

    For models with a separate input limit (the gpt-5 family) the budget is also capped
    at that limit.
    """
    if reserve_output < 0:
        raise ContextError("reserve_output must not be negative")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget <= 0:
            raise ContextError(f"budget must be a positive integer, not {budget!r}")
        return budget
    spec = tokens.model_spec(model)
    if spec is None:
        raise UnknownModel(
            f"no context window known for model {model!r} "
            f"({tokens.unknown_model_reason(model)}): pass budget=..., or "
            "convotree.tokens.register_model()", model=model)
    derived = spec.context_window - reserve_output
    if spec.max_input is not None:
        derived = min(derived, spec.max_input)
    if derived <= 0:
        raise ContextError(f"reserve_output {reserve_output} leaves no room in {model!r}")
    return derived


# --- pricing rows ------------------------------------------------------------------------


def _texts(content: str | None, parts: Sequence[Mapping[str, Any]] | None) -> list[str]:
    if parts is None:
        return [content] if content else []
    return [str(p.get("text", p.get("refusal", ""))) for p in parts
            if p.get("type") in ("text", "input_text", "output_text", "refusal")]


def price(row: NodeRow, encoding: str, spec: tokens.ModelSpec | None) -> tuple[int, bool, bool]:
    """(tokens for the model, recounted?, estimated?) of one stored node.

    The stored counts are summed; only a node counted under another encoding than the
    model's is tokenized again (and reported as recounted).
    """
    if row.media is None:
        if row.encoding == encoding:   # nearly every row: the stored counts, summed
            return row.token_count + row.overhead_tokens, False, False
        media, estimated = 0, False
    else:
        media, estimated = tokens.media_tokens(from_json(row.media), spec)
    if row.encoding == encoding:
        return row.token_count + row.overhead_tokens + media, False, estimated
    texts = _texts(row.content, from_json(row.parts))
    text = sum(tokens.count_text(t, encoding) for t in texts)
    overhead = tokens.message_overhead(
        role=row.role, name=row.name, tool_calls=from_json(row.tool_calls),
        tool_call_id=row.tool_call_id, encoding=encoding)
    return text + overhead + media, True, estimated


def is_always_kept(row: NodeRow) -> bool:
    """System, developer and pinned nodes are sent whatever the budget."""
    return bool(row.pinned) or row.role in ("system", "developer")


def candidate(row: NodeRow, cost: int) -> Candidate:
    calls = row.tool_calls
    role = row.role
    # Positional: this runs once per row of every context (a thousand for 128k tokens).
    return Candidate(
        row.depth, role, cost, bool(row.pinned) or role in ("system", "developer"),
        () if calls is None else tuple(str(c["id"]) for c in from_json(calls)),
        row.tool_call_id)
