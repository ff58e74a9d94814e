"""Assembling a context over a ``Connection``: read the window, price it, prune, render.

Reads ONE statement (``_queries.context_window``) whose cost follows the budget, not the
path's length; reads again, further, only when prices differ from the stored counts
(nodes counted under another encoding) and the policy needs older rows to decide.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from . import _queries as q
from . import tokens
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
    price,
    resolve_budget,
)
from .errors import BudgetExceeded, ContextError, ConversationNotFound, NodeNotFound

_WINDOW = q.context_window()
_CONVERSATION_EXISTS = q.conversation_exists()
_DEFAULT_POLICY = DefaultPolicy()


def _estimate_notes(rows: Sequence[Mapping[Any, Any]], tools: object, fmt: str,
                    estimated_media: bool) -> tuple[str, ...]:
    notes = []
    if any(row["tool_calls"] for row in rows):
        notes.append("tool calls in messages: estimated (3 + name + arguments per call)")
    if tools:
        notes.append("tool definitions: OpenAI Cookbook rule; nested parameters estimated")
    if estimated_media:
        notes.append("images of unknown size priced at the worst case; audio and files "
                     "estimated from their size")
    if fmt == "responses":
        notes.append("responses format: counted by the Chat Completions rule")
    return tuple(notes)


def assemble(
    conn: Connection,
    *,
    tenant: str,
    conversation_id: uuid.UUID,
    node_id: uuid.UUID,
    model: str,
    budget: int | None,
    reserve_output: int,
    tools: Sequence[Mapping[Any, Any]] | None,
    fmt: str,
    policy: PruningPolicy | None,
) -> Context:
    """Build the context for ``node_id`` (see ``Store.context``)."""
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
    params = {"tenant_id": tenant, "conversation_id": conversation_id, "node_id": node_id}
    limit, queries = max(available, 0), 0
    priced: dict[int, tuple[int, bool, bool]] = {}
    while True:
        rows = conn.execute(_WINDOW, {**params, "token_limit": limit}).mappings().all()
        queries += 1
        walk = sorted((r for r in rows if r["source"] == "walk"), key=lambda r: r["depth"])
        if not walk:
            if conn.execute(_CONVERSATION_EXISTS, params).first() is None:
                raise ConversationNotFound(f"no conversation {conversation_id}",
                                           conversation_id=conversation_id)
            raise NodeNotFound(f"no node {node_id} in conversation {conversation_id}",
                               conversation_id=conversation_id, node_id=node_id)
        leaf = walk[-1]
        if leaf["kind"] != "message":
            raise ContextError("a context is assembled from a message node, not a summary",
                               conversation_id=conversation_id, node_id=node_id)
        top = walk[0]["depth"]
        above = sorted(
            (r for r in rows if r["source"] == "kept" and r["depth"] < top
             and (r["pinned"] or r["role"] in ("system", "developer"))),
            key=lambda r: r["depth"])
        by_depth = {r["depth"]: r for r in (*above, *walk)}
        for depth, row in by_depth.items():
            if depth not in priced:
                priced[depth] = price(row, encoding, spec)
        window = Window(
            suffix=[candidate(r, priced[r["depth"]][0]) for r in walk],
            kept_above=[candidate(r, priced[r["depth"]][0]) for r in above],
            reaches_root=walk[0]["parent_id"] is None,
        )
        selection = chosen_policy.select(window, available)
        if selection.reason != "window" or window.reaches_root:
            break
        limit = limit * 2 + 1   # stored counts were off (another encoding): read further

    chosen = [by_depth[d] for d in sorted(selection.depths)]
    message_tokens = sum(priced[row["depth"]][0] for row in chosen)
    kept = depth_ranges([row["depth"] for row in chosen])
    report = ContextReport(
        path_length=leaf["depth"] + 1,
        kept=kept,
        dropped=complement_ranges(kept, leaf["depth"]),
        always_kept=sum(1 for r in chosen if r["pinned"] or r["role"] in ("system", "developer")),
        stopped="budget" if selection.reason == "window" else selection.reason,
        message_tokens=message_tokens,
        tools_tokens=tools_cost,
        priming_tokens=tokens.REPLY_PRIMING_TOKENS,
        recounted=tuple(row["id"] for row in chosen if priced[row["depth"]][1]),
        estimates=_estimate_notes(chosen, tools, fmt,
                                  any(priced[row["depth"]][2] for row in chosen)),
        rows_read=len(rows),
        queries=queries,
    )
    return Context(
        messages=render(chosen, fmt),
        tokens=fixed + message_tokens,
        budget=prompt_budget,
        model=model,
        format=fmt,
        report=report,
        node_ids=tuple(row["id"] for row in chosen),
    )
