"""Assembling a context over a ``Connection``: read the window, price it, prune, render.

Reads ONE statement (``_queries.context_window``) whose cost follows the budget, not the
path's length; reads again, further, only when prices differ from the stored counts
(nodes counted under another encoding) and the policy needs older rows to decide.

This is the hot path of every chat turn, so the statement is compiled once per dialect
and run on the driver's cursor (``exec_driver_sql``: still audited, still one
transaction); column values are converted with SQLAlchemy's own type processors, and
only where a row needs it (ids only for the rows that are sent).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import Connection

from . import _queries as q
from . import tokens
from ._driver import Compiled, Statement
from ._formats import render
from .context import (
    Context,
    ContextReport,
    DefaultPolicy,
    PruningPolicy,
    Window,
    candidate,
    complement_ranges,
    depth_ranges,
    is_always_kept,
    price,
    ranges_after,
    resolve_budget,
)
from .errors import BudgetExceeded, ContextError, ConversationNotFound, NodeNotFound
from .summaries import SummaryOptions, SummaryRequest, plan_cut

_CONVERSATION_EXISTS = q.conversation_exists()
_DEFAULT_POLICY = DefaultPolicy()


_WINDOW = Statement(q.context_window)


class _WindowRow(NamedTuple):
    """One row of the window statement: a plain tuple, for cheap attribute access."""

    id: Any
    depth: int
    kind: str
    role: str
    content: str | None
    parts: Any
    media: Any
    name: str | None
    tool_calls: Any
    tool_call_id: str | None
    token_count: int
    overhead_tokens: int
    encoding: str
    pinned: Any
    api_items: Any
    compacted: Any
    source: str


assert _WindowRow._fields == (*q.WINDOW_COLUMNS, "source"), "window columns out of sync"


def _by_depth(row: Any) -> int:
    return row.depth  # type: ignore[no-any-return]


def _estimate_notes(rows: Sequence[Any], tools: object, fmt: str,
                    estimated_media: bool, compaction: bool = False) -> tuple[str, ...]:
    notes = []
    if compaction:
        notes.append("compaction item: its size is the API's (the answer's text is counted)")
    if any(row.tool_calls is not None for row in rows):
        notes.append("tool calls in messages: estimated (8 + name + arguments per call)")
    if tools:
        notes.append("tool definitions: OpenAI Cookbook rule; nested parameters estimated")
    if estimated_media:
        notes.append("images of unknown size priced at the worst case; audio and files "
                     "estimated from their size")
    if fmt == "responses":
        notes.append("responses format: counted by the Chat Completions rule")
    return tuple(notes)


@dataclass(frozen=True, slots=True)
class SummaryPlan:
    """A summary the assembler wants made: what to fold, and where it will hang."""

    conversation_id: uuid.UUID
    cut_id: uuid.UUID
    base_id: uuid.UUID | None
    request: SummaryRequest


#: Walk limit when a summarizer may run: up to the deepest summary (or the root), so the
#: messages a new summary must fold in are all at hand.
_UNBOUNDED = 2**31 - 1   # the largest 32-bit integer: token sums are INTEGER in SQL


def assemble(
    conn: Connection,
    *,
    tenant: str,
    conversation_id: uuid.UUID,
    node_id: uuid.UUID,
    model: str,
    budget: int | None,
    reserve_output: int,
    tools: Sequence[Mapping[str, Any]] | None,
    fmt: str,
    policy: PruningPolicy | None,
    summary_options: SummaryOptions | None = None,
) -> tuple[Context, SummaryPlan | None]:
    """Build the context for ``node_id`` (see ``Store.context``).

    With ``summary_options`` (a summarizer is available), also return a plan for a new
    summary when the messages after the deepest summary no longer fit.
    """
    if fmt not in ("chat", "responses"):
        raise ContextError(f"format must be 'chat' or 'responses', not {fmt!r}")
    prompt_budget = resolve_budget(model, budget, reserve_output)
    spec = tokens.model_spec(model)
    encoding = spec.encoding if spec else tokens.encoding_for_model(model)
    tools_cost = tokens.tools_tokens(tools, encoding)
    fixed = tools_cost + tokens.REPLY_PRIMING_TOKENS
    available = prompt_budget - fixed
    if available < 0:
        raise BudgetExceeded(f"tool definitions and reply priming need {fixed} tokens; the "
                             f"budget is {prompt_budget}", needed=fixed, budget=prompt_budget)
    chosen_policy = policy or _DEFAULT_POLICY
    params = {"tenant_id": tenant, "conversation_id": conversation_id, "node_id": node_id,
              # Only the Responses API can read a compaction item: Chat Completions
              # contexts walk on up the branch's readable history instead.
              "at_compaction": fmt == "responses"}
    compiled = _WINDOW.compiled(conn.dialect)
    limit, queries = (available if summary_options is None else _UNBOUNDED), 0
    # Prices that took tokenizing (a node counted under another encoding), kept across
    # re-reads; keyed by what would change with the node's text, so a re-read made in
    # another snapshot (autocommit on PostgreSQL) never reuses a stale one.
    recounted: dict[tuple[Any, int, str], tuple[int, bool, bool]] = {}
    while True:
        result = conn.exec_driver_sql(
            compiled.sql, compiled.params({**params, "token_limit": limit}))
        rows = list(map(_WindowRow._make, result.fetchall()))
        queries += 1
        walk = sorted((r for r in rows if r.source == "walk"), key=_by_depth)
        if not walk:
            if conn.execute(_CONVERSATION_EXISTS, params).first() is None:
                raise ConversationNotFound(f"no conversation {conversation_id}",
                                           conversation_id=conversation_id)
            raise NodeNotFound(f"no node {node_id} in conversation {conversation_id}",
                               conversation_id=conversation_id, node_id=node_id)
        leaf = walk[-1]
        if leaf.kind != "message":
            raise ContextError("a context is assembled from a message node, not a summary",
                               conversation_id=conversation_id, node_id=node_id)
        summary_row = next((r for r in rows if r.source == "summary"), None)
        if summary_row is not None:
            covered = walk[0].depth          # the walk stopped at the summarized node
            walk = walk[1:]
        # The walk stops at (and includes) an answer the API compacted: its compaction
        # item stands for everything above it (Responses requests only).
        compaction = walk[0] if (fmt == "responses" and walk[0].compacted
                                 and summary_row is None) else None
        top = walk[0].depth
        above = sorted((r for r in rows if r.source == "kept" and r.depth < top
                        and is_always_kept(r)), key=_by_depth)
        by_depth = {r.depth: r for r in (*above, *walk)}
        candidates = []
        priced: dict[int, tuple[int, bool, bool]] = {}
        for row in (*above, *walk):   # priced and made candidates in one pass
            if row.media is None and row.encoding == encoding:
                cost = (row.token_count + row.overhead_tokens, False, False)
            else:
                key = (row.id, row.token_count, row.encoding)
                cost = recounted.get(key) or recounted.setdefault(
                    key, price(row, encoding, spec))
            priced[row.depth] = cost
            candidates.append(candidate(row, cost[0]))
        summary_price = price(summary_row, encoding, spec) if summary_row else None
        window = Window(
            suffix=candidates[len(above):],
            kept_above=candidates[:len(above)],
            reaches_root=top == 0 or summary_row is not None or compaction is not None,
            summary=(candidate(summary_row, summary_price[0])
                     if summary_row is not None and summary_price else None),
        )
        selection = chosen_policy.select(window, available)
        if selection.reason != "window" or window.reaches_root:
            break
        limit = limit * 2 + 1   # stored counts were off (another encoding): read further

    depths = sorted(selection.depths)
    chosen: list[Any] = [by_depth[d] for d in depths]
    message_tokens = sum(priced[d][0] for d in depths)
    if selection.summary and summary_row is not None and summary_price is not None:
        position = next((i for i, d in enumerate(depths) if d > covered), len(depths))
        chosen.insert(position, summary_row)
        message_tokens += summary_price[0]
    kept = depth_ranges(depths)
    dropped = complement_ranges(kept, leaf.depth)
    summary_sent = selection.summary and summary_row is not None
    compaction_sent = compaction is not None and compaction.depth in selection.depths
    # Represented without being sent: root..covered by a summary, or everything above
    # a compaction item that is sent.
    represented_to = (compaction.depth if compaction_sent and compaction is not None
                      else covered if summary_sent else -1)
    report = ContextReport(
        path_length=leaf.depth + 1,
        kept=kept,
        dropped=dropped,
        # What neither a sent message nor the sent summary or compaction stands for.
        gap=ranges_after(dropped, represented_to),
        compaction_id=(compiled.node_id(compaction.id) if compaction_sent
                       and compaction is not None else None),
        always_kept=sum(1 for d in depths if is_always_kept(by_depth[d])),
        stopped="budget" if selection.reason == "window" else selection.reason,
        message_tokens=message_tokens,
        tools_tokens=tools_cost,
        priming_tokens=tokens.REPLY_PRIMING_TOKENS,
        summary_id=(compiled.node_id(summary_row.id)
                    if selection.summary and summary_row is not None else None),
        recounted=tuple(compiled.node_id(row.id) for row in chosen
                        if row.kind == "message" and priced[row.depth][1]),
        estimates=_estimate_notes(chosen, tools, fmt, any(priced[d][2] for d in depths),
                                  compaction_sent),
        rows_read=len(rows),
        queries=queries,
    )
    context = Context(
        messages=render(chosen, fmt),
        tokens=fixed + message_tokens,
        budget=prompt_budget,
        model=model,
        format=fmt,
        report=report,
        raw_ids=tuple(row.id for row in chosen),
        id_reader=compiled.node_id,
    )
    plan = None
    if summary_options is not None and selection.reason == "budget":
        plan = _plan_summary(window, by_depth, summary_row, available, summary_options,
                             encoding, conversation_id, compiled)
    return context, plan


def _plan_summary(window: Window, by_depth: Mapping[int, Any], summary_row: Any,
                  available: int, options: SummaryOptions, encoding: str,
                  conversation_id: uuid.UUID, compiled: Compiled) -> SummaryPlan | None:
    """Where a new summary should cut, and the messages it must fold in."""
    kept_cost = sum(n.tokens for n in window.kept_above)
    kept_cost += sum(n.tokens for n in window.suffix if n.always_kept)
    cap = options.summary_cap(available)
    cut = plan_cut(window.suffix, max(available - kept_cost - cap, 0), options.keep_recent)
    if cut is None:
        return None
    span = [by_depth[n.depth] for n in window.suffix
            if n.depth <= cut and not n.always_kept]
    if not span:
        return None
    return SummaryPlan(
        conversation_id=conversation_id,
        cut_id=compiled.node_id(by_depth[cut].id),
        base_id=compiled.node_id(summary_row.id) if summary_row is not None else None,
        request=SummaryRequest(
            previous=summary_row.content if summary_row is not None else None,
            messages=render(span, "chat"), max_tokens=cap, encoding=encoding),
    )
