"""Drawing conversations for people: the tree, a branch as a transcript, the ls table.

Message text always goes through ``rich.text.Text`` (never markup), so a message that
contains ``[bold]`` is printed as written.

The tree is drawn the way branching chats are read: a chain of single replies stays in
one column, and only a fork indents, so a 1,000-turn conversation with three edits is
three columns wide, not 1,000. It is built without recursion for the same reason.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime

from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..models import Node
from ..reporting import ConversationStats
from ._resolve import short

__all__ = ["TREE_HEADER", "conversation_table", "transcript", "tree_lines", "when"]

ROLE_STYLES = {
    "system": "magenta",
    "developer": "magenta",
    "user": "cyan",
    "assistant": "green",
    "tool": "yellow",
    "summary": "blue",
}
CURRENT_MARK = " ◀ current"
#: Column heading for ``tree_lines``.
TREE_HEADER = "id       tokens  role and text; the current branch in bold"


def when(value: datetime) -> str:
    """UTC time to the minute: what a listing needs."""
    return value.strftime("%Y-%m-%d %H:%M")


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


def _label(node: Node) -> str:
    return "summary" if node.kind == "summary" else node.role


def tree_lines(nodes: Sequence[Node], current: uuid.UUID | None, width: int) -> list[Text]:
    """One line per node: short id, tokens, the branch drawing, role, shortened text.

    ``nodes`` must list parents before children (``Store.tree`` does). Nodes on the
    current branch are bold, the others dim; the current node is marked.
    """
    children: dict[uuid.UUID | None, list[Node]] = {}
    by_id = {node.id: node for node in nodes}
    for node in nodes:
        children.setdefault(node.parent_id, []).append(node)
    on_branch: set[uuid.UUID] = set()
    cursor = by_id.get(current) if current else None
    while cursor is not None:
        on_branch.add(cursor.id)
        cursor = by_id.get(cursor.parent_id) if cursor.parent_id else None

    lines: list[Text] = []
    # (node, graph before its label, graph for the lines below it)
    stack: list[tuple[Node, str, str]] = []

    def push(kids: list[Node], rest: str) -> None:
        if len(kids) == 1:
            stack.append((kids[0], rest, rest))
            return
        for index in range(len(kids) - 1, -1, -1):
            last = index == len(kids) - 1
            stack.append((kids[index], rest + ("└─ " if last else "├─ "),
                          rest + ("   " if last else "│  ")))

    push(children.get(None, []), "")
    while stack:
        node, first, rest = stack.pop()
        lines.append(_tree_line(node, first, node.id in on_branch, node.id == current, width))
        push(children.get(node.id, []), rest)
    return lines


def _fit(text: str, room: int) -> str:
    """``text`` cut to ``room`` terminal cells (wide CJK characters take two)."""
    if room < 1:
        return ""
    if cell_len(text) <= room:
        return text
    return set_cell_size(text, room - 1).rstrip() + "…"


def _fold_graph(graph: str, width: int) -> str:
    """Deep forks would push the text off the line: past a third of the width, the
    outer levels fold into ``┆+N`` (N levels hidden), keeping the innermost ones."""
    limit = max(width // 3, 12)
    if len(graph) <= limit:
        return graph
    levels = len(graph) // 3
    keep = max((limit - 6) // 3, 1)
    return f"┆+{levels - keep:<3} " + graph[-3 * keep:]


def _tree_line(node: Node, graph: str, on_branch: bool, is_current: bool, width: int) -> Text:
    graph = _fold_graph(graph, width)
    label = _label(node)
    head = f"{short(node.id)} {node.token_count:>6}  {graph}"
    mark = CURRENT_MARK if is_current else ""
    label = f"{label:<9}"
    room = width - cell_len(head) - len(label) - 2 - cell_len(mark)
    text = _fit(_one_line(node.content), room)
    line = Text(no_wrap=True, overflow="ellipsis")
    line.append(head[:9], style="dim")
    line.append(head[9:])
    line.append(label, style=ROLE_STYLES.get(label.strip(), ""))
    line.append("  " + text)
    if mark:
        line.append(mark, style="bold yellow")
    if on_branch:
        line.stylize("bold", 9)
    else:
        line.stylize("dim", 9)
    return line


def transcript(console: Console, path: Iterable[Node], current: uuid.UUID | None = None
               ) -> None:
    """A branch as a conversation: a heading per message, then its text."""
    for node in path:
        label = _label(node)
        head = Text()
        head.append(f"[{node.depth}] ", style="dim")
        head.append(label, style=f"bold {ROLE_STYLES.get(label, '')}")
        details = [f"{node.token_count} tokens", short(node.id)]
        if node.model:
            details.append(node.model)
        if node.tool_calls:
            details.append(f"{len(node.tool_calls)} tool call(s)")
        head.append("  " + " · ".join(details), style="dim")
        if node.id == current:
            head.append(CURRENT_MARK, style="bold yellow")
        console.print(head)
        body = node.content or ""
        for call in node.tool_calls or ():
            function = call.get("function", {})
            body += f"\n→ {function.get('name', '?')}({function.get('arguments', '')})"
        console.print(Text(body.strip() or "(no text)"), soft_wrap=not console.is_terminal)
        console.print()


#: Longest title ``ls`` shows: a long one must not push the counts off the screen.
_TITLE_WIDTH = 60


def _title_cell(title: str | None, width: int) -> Text:
    return Text(_fit(_one_line(title) if title else "(untitled)", width))


def conversation_table(rows: Sequence[ConversationStats], width: int = 200) -> Table:
    """The ``ls`` table, newest activity first. Short ids (the last 8 hex digits, which
    every command accepts); ``ls --json`` has the full ones."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    # Every column but the title keeps its full width; the title is cut to what is left
    # of the terminal (rich would otherwise crop the counts off the right edge).
    counts = [[str(row.messages), str(row.branches), str(row.summaries), f"{row.tokens:,}"]
              for row in rows]
    names = ("msgs", "branches", "summ.", "tokens")
    widths = [max([len(name), *(len(cells[i]) for cells in counts)])
              for i, name in enumerate(names)]
    # Two cells of slack: rich releases before 15 lay the columns out wider and
    # would crop the last column to make room.
    fixed = 8 + 16 + sum(widths) + 2 * (len(names) + 2) + 2
    title_width = max(8, min(_TITLE_WIDTH, width - fixed))
    table.add_column("id", style="dim", no_wrap=True, min_width=8)
    table.add_column("updated (UTC)", no_wrap=True, min_width=16)
    table.add_column("title", no_wrap=True, overflow="ellipsis", max_width=title_width)
    for name, column_width in zip(names, widths, strict=True):
        table.add_column(name, justify="right", no_wrap=True, min_width=column_width)
    for row, cells in zip(rows, counts, strict=True):
        table.add_row(short(row.id), when(row.updated_at), _title_cell(row.title, title_width),
                      *cells)
    return table
