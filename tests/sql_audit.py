"""The Citus audit: every statement on ``convotree_nodes`` must pin one conversation.

A listener on every SQLAlchemy engine records each statement the code under test sends;
the ``audit_sql`` fixture (autouse, in conftest) fails a test whose statements read or
write ``convotree_nodes`` without ``<alias>.conversation_id = <parameter>`` for every
reference to the table. Test helpers that deliberately look at whole tables wrap
themselves in ``unaudited()``.

Statements that do span conversations (Citus runs them on every shard) must still have
a shape Citus plans: ``citus_refusals`` reports the ones it refuses, and ``violations``
includes its reasons. ``cross_conversation()`` lets statements past the one-conversation
rule while keeping that check.

The state is the process's, not a thread's: the async twins run their statements on
the event loop's thread (``tests/twins.py``), and a test's worker threads run theirs
elsewhere; all of them are the test's statements and all are audited.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field


class _State:
    paused = 0
    cross = 0
    logs: tuple[list[str], ...] = ()


_state = _State()
_lock = threading.Lock()

_REFERENCE = re.compile(
    r"\b(FROM|JOIN|INTO|UPDATE)\s+\"?convotree_nodes\"?"
    r"(?:\s+(?:AS\s+)?(?!(?:WHERE|JOIN|ON|SET|LEFT|INNER|ORDER|GROUP|LIMIT|VALUES|RETURNING|"
    r"USING|CROSS|UNION)\b)([A-Za-z_]\w*))?",
    re.IGNORECASE,
)
_PARAM = r"(?:\?|%\(\w+\)s|:\w+|\$\d+)"
_DML = re.compile(r"^\s*(SELECT|INSERT|UPDATE|DELETE|WITH)\b", re.IGNORECASE)


class _CrossConversation(str):
    """A statement sent inside ``cross_conversation()``: exempt from the pin rule only."""

    __slots__ = ()


def violations(statement: str) -> list[str]:
    """Why ``statement`` is not confined to one conversation, or is a multi-shard statement
    Citus refuses (empty when neither)."""
    pins = [] if isinstance(statement, _CrossConversation) else _unpinned_nodes(statement)
    return pins + citus_refusals(statement)


def _unpinned_nodes(statement: str) -> list[str]:
    if not _DML.match(statement) or "convotree_nodes" not in statement:
        return []
    problems = []
    for match in _REFERENCE.finditer(statement):
        keyword, alias = match.group(1).upper(), match.group(2) or "convotree_nodes"
        if keyword == "INTO":
            columns = statement[match.end(): statement.find(")", match.end()) + 1]
            if "conversation_id" not in columns:
                problems.append("INSERT INTO convotree_nodes without conversation_id")
            continue
        if keyword == "UPDATE":
            alias = "convotree_nodes"
        pinned = re.search(
            rf"(?<![\w.]){re.escape(alias)}\.conversation_id\s*=\s*{_PARAM}", statement
        )
        if not pinned:
            problems.append(f"{alias!r} (convotree_nodes) has no conversation_id = <param>")
    return problems


# --- the Citus shape check ---------------------------------------------------------------
#
# Citus refuses a multi-shard query level whose FROM clause holds a subquery or reads a
# CTE (both become intermediate results) while the level also has a subquery correlated
# with it: "correlated subqueries are not supported when the FROM clause contains a CTE
# or subquery". A router query (every convotree table pinned to one conversation) is
# planned on one shard, where anything goes, so the check only looks at the others.
#
# The scanner: one regular expression splits the statement into tokens (comments dropped,
# string literals and parameters made single tokens, quoted identifiers unquoted, lower
# case), parentheses nest the tokens into groups, and a small recursive reader finds each
# query level's FROM items (tables, views, CTEs, subqueries, functions), its expressions,
# and the subqueries inside those expressions.

_LEXEME = re.compile(
    r"""
      (?P<skip>\s+|--[^\n]*|/\*.*?(?:\*/|\Z))
    | (?P<literal>(?<![\w$])[eE]'(?:[^'\\]|\\.|'')*(?:'|\Z)
        | '(?:[^']|'')*(?:'|\Z)
        | \$\$.*?(?:\$\$|\Z)
        | \$(?P<tag>[A-Za-z_]\w*)\$.*?(?:\$(?P=tag)\$|\Z))
    | (?P<quoted>"(?:[^"]|"")*(?:"|\Z)|`[^`]*(?:`|\Z))
    | (?P<param>%\(\w+\)s|%s|\$\d+|\?\d*|(?<!:):[A-Za-z_]\w*)
    | (?P<word>[A-Za-z_][\w$]*)
    | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
    | (?P<op>::|<=|>=|<>|!=|==|\|\||->>|->|\#>>|\#>|\S)
    """,
    re.S | re.X,
)

#: Words the reader acts on; a quoted identifier spelled like one keeps its quote mark.
_KEYWORDS = frozenset({
    "select", "with", "recursive", "as", "not", "materialized", "values", "insert", "replace",
    "into", "update", "delete", "from", "where", "group", "by", "having", "window", "order",
    "limit", "offset", "fetch", "for", "returning", "set", "using", "on", "join", "left", "right",
    "full", "inner", "cross", "natural", "outer", "lateral", "only", "union", "intersect",
    "except", "all", "distinct", "conflict", "do", "default", "tablesample", "ordinality",
    "within", "exists", "in", "any", "some", "array", "or", "and", "is", "null", "case", "when",
    "then", "else", "end",
})
_JOINS = frozenset({",", "join", "left", "right", "full", "inner", "cross", "natural",
                    "outer"})
_QUERY_START = frozenset({"select", "with", "values"})
_SET_OPERATIONS = frozenset({"union", "intersect", "except"})
_SUBLINK_KIND = {"exists": "EXISTS", "in": "IN", "any": "ANY", "some": "ANY", "all": "ALL",
                 "array": "ARRAY"}
#: FROM items with the rows of an intermediate result on Citus.
_RECURRING = frozenset({"subquery", "cte", "values"})
_LITERAL, _PARAMETER = "'", "?"
#: convotree tables Citus does not distribute (the migrations' bookkeeping).
_LOCAL = frozenset({"convotree_alembic_version"})


class _Group:
    """A parenthesized run of tokens."""

    __slots__ = ("items",)

    def __init__(self, items: list[_Item]) -> None:
        self.items = items


_Item = str | _Group


@dataclass
class _Source:
    """One FROM item (or the target of an INSERT, UPDATE or DELETE)."""

    kind: str                        # relation | cte | subquery | values | function | target
    name: str | None
    alias: str | None = None
    body: _Query | None = None       # subquery or VALUES in FROM
    pinned: bool = False             # filtered to one conversation by a parameter


@dataclass
class _Level:
    """One query level: a SELECT (one branch of a UNION), or an INSERT/UPDATE/DELETE."""

    sources: list[_Source] = field(default_factory=list)
    expressions: list[list[_Item]] = field(default_factory=list)
    sublinks: list[tuple[str, _Query]] = field(default_factory=list)
    nested: list[_Query] = field(default_factory=list)    # INSERT's SELECT


@dataclass
class _Query:
    levels: list[_Level] = field(default_factory=list)
    ctes: list[_Query] = field(default_factory=list)
    cte_names: set[str] = field(default_factory=set)


def _tokens(statement: str) -> list[str]:
    tokens = []
    for match in _LEXEME.finditer(statement):
        kind, text = match.lastgroup, match.group()
        if kind == "skip":
            continue
        if kind == "literal":
            tokens.append(_LITERAL)
        elif kind == "param":
            tokens.append(_PARAMETER)
        elif kind == "quoted":
            name = re.sub(r"\W", "_", text[1:-1].replace('""', '"').lower()) or "_"
            tokens.append('"' + name if name in _KEYWORDS else name)
        elif kind == "number":
            tokens.append("0")
        else:
            tokens.append("=" if text == "==" else text.lower())
    return tokens


def _nest(tokens: list[str]) -> list[_Item]:
    stack: list[list[_Item]] = [[]]
    for token in tokens:
        if token == "(":
            stack.append([])
        elif token == ")":
            if len(stack) > 1:
                items = stack.pop()
                stack[-1].append(_Group(items))
        else:
            stack[-1].append(token)
    while len(stack) > 1:     # unbalanced: close what is open
        items = stack.pop()
        stack[-1].append(_Group(items))
    return stack[0]


def _is_name(item: _Item | None) -> bool:
    return (isinstance(item, str) and item not in _KEYWORDS
            and (item[0] == '"' or item[0] == "_" or item[0].isalpha()))


def _is_query(items: list[_Item]) -> bool:
    if not items:
        return False
    first = items[0]
    if isinstance(first, _Group):
        return _is_query(first.items)
    return first in _QUERY_START


def _at(items: list[_Item], index: int) -> _Item | None:
    return items[index] if 0 <= index < len(items) else None


def _parse_query(items: list[_Item], ctes: frozenset[str]) -> _Query:
    query = _Query()
    i = 0
    if _at(items, 0) == "with":
        i = 1
        if _at(items, i) == "recursive":
            i += 1
        while i < len(items):
            name = items[i]
            i += 1
            if isinstance(_at(items, i), _Group) and _at(items, i + 1) == "as":
                i += 1                                   # the column list
            if _at(items, i) == "as":
                i += 1
            while _at(items, i) in ("not", "materialized"):
                i += 1
            body = _at(items, i)
            if isinstance(name, str) and isinstance(body, _Group):
                query.cte_names.add(name)
                query.ctes.append(_parse_query(body.items, ctes | query.cte_names))
                i += 1
            while i < len(items) and items[i] != "," and not (
                    items[i] in _QUERY_START or items[i] in ("insert", "update", "delete")
                    or isinstance(items[i], _Group)):
                i += 1                                   # SEARCH / CYCLE
            if _at(items, i) != ",":
                break
            i += 1
        ctes = ctes | query.cte_names
    rest = items[i:]
    head = _at(rest, 0)
    if not (head in ("select", "values") or isinstance(head, _Group)):
        query.levels.append(_parse_level(rest, ctes))
        return query
    part: list[_Item] = []
    for item in [*rest, "union"]:
        if item in _SET_OPERATIONS:
            if len(part) == 1 and isinstance(part[0], _Group) and _is_query(part[0].items):
                inner = _parse_query(part[0].items, ctes)
                query.levels.extend(inner.levels)
                query.ctes.extend(inner.ctes)
                query.cte_names |= inner.cte_names
            elif part:
                query.levels.append(_parse_level(part, ctes))
            part = []
        elif not (item in ("all", "distinct") and not part):
            part.append(item)
    return query


def _clauses(items: list[_Item], keywords: frozenset[str]) -> dict[str, list[_Item]]:
    """Split a statement at its clause keywords (each clause once; ``IS DISTINCT FROM``,
    ``WITHIN GROUP`` and ``JOIN ... USING`` are not clauses)."""
    clauses: dict[str, list[_Item]] = {"": []}
    current = clauses[""]
    for index, item in enumerate(items):
        before, after = _at(items, index - 1), _at(items, index + 1)
        starts = (isinstance(item, str) and item in keywords and item not in clauses
                  and not (item == "from" and before == "distinct")
                  and not (item in ("group", "order") and after != "by")
                  and not (item == "for" and after not in ("update", "share", "no", "key")))
        if starts:
            current = clauses.setdefault(str(item), [])
        else:
            current.append(item)
    return clauses


_SELECT_CLAUSES = frozenset({"from", "where", "group", "having", "window", "order", "limit",
                             "offset", "fetch", "for"})


def _parse_level(items: list[_Item], ctes: frozenset[str]) -> _Level:
    level = _Level()
    head = _at(items, 0)
    if head == "select":
        clauses = _clauses(items[1:], _SELECT_CLAUSES)
        sources, on = _parse_from(clauses.pop("from", []), ctes)
        level.sources, level.expressions = sources, [*clauses.values(), *on]
    elif head in ("insert", "replace"):
        _parse_insert(items, ctes, level)
    elif head == "update":
        i = 1
        if _at(items, i) == "or":
            i += 2
        clauses = _clauses(items[i:], frozenset({"set", "from", "where", "returning"}))
        targets, _ = _parse_from(clauses.pop(""), ctes)
        sources, on = _parse_from(clauses.pop("from", []), ctes)
        for target in targets:
            target.kind = "target" if target.kind == "relation" else target.kind
        level.sources, level.expressions = [*targets, *sources], [*clauses.values(), *on]
    elif head == "delete":
        i = 2 if _at(items, 1) == "from" else 1
        clauses = _clauses(items[i:], frozenset({"using", "where", "returning", "order",
                                                 "limit"}))
        targets, _ = _parse_from(clauses.pop(""), ctes)
        sources, on = _parse_from(clauses.pop("using", []), ctes)
        for target in targets:
            target.kind = "target" if target.kind == "relation" else target.kind
        level.sources, level.expressions = [*targets, *sources], [*clauses.values(), *on]
    else:                                                # VALUES, or something unknown
        level.expressions = [items]
    level.sublinks = _sublinks(level.expressions, ctes)
    return level


def _parse_insert(items: list[_Item], ctes: frozenset[str], level: _Level) -> None:
    i = 1
    while i < len(items) and items[i] != "into":
        i += 1                                           # OR REPLACE / OR IGNORE
    i += 1
    name = _at(items, i)
    i += 1
    while _at(items, i) == "." and _is_name(_at(items, i + 1)):
        name = items[i + 1]
        i += 2
    target = _Source("target", name if isinstance(name, str) else None)
    if _at(items, i) == "as" and _is_name(_at(items, i + 1)):
        target.alias = str(items[i + 1])
        i += 2
    columns: set[str] = set()
    group = _at(items, i)
    if isinstance(group, _Group) and not _is_query(group.items):
        columns = {item for item in group.items if isinstance(item, str)}
        i += 1
    target.alias = target.alias or target.name
    rest = items[i:]
    end = len(rest)
    for index, item in enumerate(rest):
        if item == "returning" or (item == "on" and _at(rest, index + 1) == "conflict"):
            end = index
            break
    source, tail = rest[:end], rest[end:]
    if source and source[0] != "default":
        level.nested.append(_parse_query(source, ctes))
    level.sources = [target]
    level.expressions = [tail]
    if target.name is not None:
        target.pinned = _pin_column(target.name) in columns


def _parse_from(items: list[_Item], ctes: frozenset[str]
                ) -> tuple[list[_Source], list[list[_Item]]]:
    """The FROM items of a FROM (or USING, or UPDATE target) list, and its expressions
    (ON conditions, function arguments)."""
    sources: list[_Source] = []
    expressions: list[list[_Item]] = []
    i = 0
    while i < len(items):
        item = items[i]
        if item in _JOINS or item in ("lateral", "only"):
            i += 1
            continue
        if item == "on":
            j = i + 1
            while j < len(items) and items[j] not in _JOINS:
                j += 1
            expressions.append(items[i + 1:j])
            i = j
            continue
        if item == "using":
            i += 2 if isinstance(_at(items, i + 1), _Group) else 1
            continue
        source: _Source | None
        if isinstance(item, _Group):
            i += 1
            if _is_query(item.items):
                first = item.items[0]
                kind = "values" if first == "values" else "subquery"
                source = _Source(kind, None, body=_parse_query(item.items, ctes))
            else:                                        # a parenthesized join
                inner, conditions = _parse_from(item.items, ctes)
                sources.extend(inner)
                expressions.extend(conditions)
                source = None
        elif _is_name(item):
            name = str(item)
            i += 1
            while _at(items, i) == "." and _is_name(_at(items, i + 1)):
                name = str(items[i + 1])
                i += 2
            arguments = _at(items, i)
            if isinstance(arguments, _Group):            # a function in FROM
                expressions.append([arguments])
                i += 1
                if _at(items, i) == "with" and _at(items, i + 1) == "ordinality":
                    i += 2
                source = _Source("function", name, alias=name)
            else:
                source = _Source("cte" if name in ctes else "relation", name, alias=name)
        else:
            i += 1
            continue
        if _at(items, i) == "as":
            i += 1
        alias = _at(items, i)
        if _is_name(alias):
            i += 1
            if source is not None:
                source.alias = str(alias)
            if isinstance(_at(items, i), _Group):
                i += 1                                   # column aliases
        if source is not None:
            sources.append(source)
    return sources, expressions


def _sublinks(expressions: list[list[_Item]], ctes: frozenset[str]
              ) -> list[tuple[str, _Query]]:
    found: list[tuple[str, _Query]] = []

    def walk(items: list[_Item]) -> None:
        for index, item in enumerate(items):
            if not isinstance(item, _Group):
                continue
            if _is_query(item.items):
                before = _at(items, index - 1)
                kind = _SUBLINK_KIND.get(before, "scalar") if isinstance(before, str) else "scalar"
                found.append((kind, _parse_query(item.items, ctes)))
            else:
                walk(item.items)

    for expression in expressions:
        walk(expression)
    return found


def _pin_column(relation: str) -> str:
    """The distribution column: conversations by ``id``, everything else by
    ``conversation_id`` (docs/architecture.md, "Shardable by conversation")."""
    return "id" if relation == "convotree_conversations" else "conversation_id"


def _is_pin(items: list[_Item], after: int, before: int, anchors: dict[str, str]) -> bool:
    """Whether the reference ending at ``after - 1`` and starting at ``before + 1`` is
    compared with a parameter, or with the distribution column of an alias already pinned
    (``anchors``: alias -> its column): ``= ?``, ``= CAST(? AS ...)``, ``IN (?)``,
    ``= x.id``; or the other way round, ``? = ``, ``?::UUID = ``, ``x.id = ``."""
    operator, value = _at(items, after), _at(items, after + 1)
    if operator == "in" and isinstance(value, _Group) and value.items == [_PARAMETER]:
        return True
    if operator == "=":
        argument = _at(items, after + 2)
        if value == _PARAMETER or (value == "cast" and isinstance(argument, _Group)
                                   and argument.items[:1] == [_PARAMETER]):
            return True
        if (isinstance(value, str) and argument == "." and _at(items, after + 3) is not None
                and anchors.get(value) == _at(items, after + 3)
                and _at(items, after + 4) != "."):
            return True
    if _at(items, before) != "=":
        return False
    j = before - 1
    while _at(items, j - 1) == "::":
        j -= 2
    value = _at(items, j)
    if value == _PARAMETER:
        return True
    qualifier = _at(items, j - 2)
    return (_at(items, j - 1) == "." and isinstance(qualifier, str)
            and anchors.get(qualifier) == value and _at(items, j - 3) != ".")


def _pinned(items: list[_Item], alias: str, column: str, alone: bool,
            anchors: dict[str, str]) -> bool:
    """``<alias>.<column>`` compared with a parameter or a pinned alias in these
    expressions, outside their subqueries (``<column>`` alone for the only FROM item)."""
    for index, item in enumerate(items):
        if isinstance(item, _Group):
            if not _is_query(item.items) and _pinned(item.items, alias, column, alone,
                                                     anchors):
                return True
            continue
        if item != column or _at(items, index + 1) == ".":
            continue
        qualified = _at(items, index - 1) == "." and _at(items, index - 2) == alias \
            and _at(items, index - 3) != "."
        bare = alone and _at(items, index - 1) != "."
        if (qualified or bare) and _is_pin(items, index + 1, index - 3 if qualified
                                           else index - 1, anchors):
            return True
    return False


def _pin_level(level: _Level, outer: dict[str, _Source]) -> None:
    """Mark the convotree relations of this level that are confined to one conversation,
    directly or through an equality with an alias pinned before (here or around)."""
    alone = len(level.sources) == 1
    scope = {**outer, **{source.alias: source for source in level.sources if source.alias}}
    relations = [source for source in level.sources
                 if source.kind in ("relation", "target") and source.name and source.alias]
    changed = True
    while changed:
        changed = False
        anchors = {alias: _pin_column(source.name) for alias, source in scope.items()
                   if source.pinned and source.name}
        for source in relations:
            if not source.pinned and any(
                    _pinned(expression, str(source.alias), _pin_column(str(source.name)),
                            alone, anchors) for expression in level.expressions):
                source.pinned = changed = True


def _pin_query(query: _Query, outer: dict[str, _Source]) -> None:
    for cte in query.ctes:
        _pin_query(cte, outer)
    for level in query.levels:
        _pin_level(level, outer)
        scope = {**outer, **{source.alias: source for source in level.sources if source.alias}}
        inner = [*(source.body for source in level.sources if source.body is not None),
                 *(sublink for _, sublink in level.sublinks), *level.nested]
        for sub in inner:
            _pin_query(sub, scope)


def _walk(query: _Query) -> Iterator[_Level]:
    """Every level of the query, its CTEs, subqueries and sublinks included."""
    for cte in query.ctes:
        yield from _walk(cte)
    for level in query.levels:
        yield level
        for source in level.sources:
            if source.body is not None:
                yield from _walk(source.body)
        for _, sublink in level.sublinks:
            yield from _walk(sublink)
        for nested in level.nested:
            yield from _walk(nested)


def _qualifiers(items: list[_Item]) -> Iterator[str]:
    """The ``x`` of every ``x.column`` in these expressions, outside their subqueries."""
    for index, item in enumerate(items):
        if isinstance(item, _Group):
            if not _is_query(item.items):
                yield from _qualifiers(item.items)
        elif (item == "." and _is_name(_at(items, index - 1))
              and (_is_name(_at(items, index + 1)) or _at(items, index + 1) == "*")
              and not isinstance(_at(items, index + 2), _Group)    # schema.function(...)
              and _at(items, index + 2) != "."):                  # schema.table.column
            yield str(items[index - 1])


def _queries(query: _Query) -> Iterator[_Query]:
    """The query and every query inside it."""
    yield query
    for cte in query.ctes:
        yield from _queries(cte)
    for level in query.levels:
        inner = [*(source.body for source in level.sources if source.body is not None),
                 *(sublink for _, sublink in level.sublinks), *level.nested]
        for sub in inner:
            yield from _queries(sub)


def _outer_references(query: _Query) -> set[str]:
    """The qualifiers a (sub)query uses that it does not define itself."""
    used: set[str] = set()
    defined: set[str] = set()
    for sub in _queries(query):
        defined.update(sub.cte_names)
    for level in _walk(query):
        for expression in level.expressions:
            used.update(_qualifiers(expression))
        defined.update(source.alias for source in level.sources if source.alias)
    return used - defined


def _describe(source: _Source) -> str:
    if source.kind == "cte":
        return f"CTE {source.name}"
    what = "VALUES" if source.kind == "values" else "a subquery"
    return f"{what} AS {source.alias}" if source.alias else what


def _refusals(query: _Query, visible: frozenset[str]) -> Iterator[str]:
    for cte in query.ctes:
        yield from _refusals(cte, visible)
    for level in query.levels:
        seen = visible | {source.alias for source in level.sources if source.alias}
        recurring = [source for source in level.sources if source.kind in _RECURRING]
        for kind, sublink in level.sublinks if recurring else []:
            outer = _outer_references(sublink) & seen
            if outer:
                yield (f"Citus refuses this multi-shard statement (correlated subqueries are "
                       f"not supported when the FROM clause contains a CTE or subquery): "
                       f"a correlated {kind} subquery uses {', '.join(sorted(outer))} while "
                       f"the FROM clause holds {', '.join(map(_describe, recurring))}")
        for source in level.sources:
            if source.body is not None:
                yield from _refusals(source.body, seen)
        for _, sublink in level.sublinks:
            yield from _refusals(sublink, seen)
        for nested in level.nested:
            yield from _refusals(nested, seen)


def _parse(statement: str) -> _Query | None:
    items = _nest(_tokens(statement))
    head = _at(items, 0)
    if not (head in ("select", "with", "values", "insert", "replace", "update", "delete")
            or (isinstance(head, _Group) and _is_query(head.items))):
        return None
    query = _parse_query(items, frozenset())
    _pin_query(query, {})
    return query


def _convotree_sources(query: _Query) -> list[_Source]:
    return [source for level in _walk(query) for source in level.sources
            if source.kind in ("relation", "target") and source.name
            and source.name.startswith("convotree_") and source.name not in _LOCAL]


def single_conversation(statement: str) -> bool:
    """Whether every reference to a convotree table or view is pinned to one conversation
    by a parameter (``<alias>.id = <param>`` for ``convotree_conversations``,
    ``<alias>.conversation_id = <param>`` for the others, in the reference's own query
    level; an INSERT's column list naming that column): a router query on Citus.
    Vacuously true for a statement that reads none."""
    query = _parse(statement)
    return query is None or all(source.pinned for source in _convotree_sources(query))


def citus_refusals(statement: str) -> list[str]:
    """Why Citus refuses ``statement`` as a multi-shard query (empty when it does not, or
    when the statement is confined to one conversation: see ``single_conversation``).

    The shape: a query level whose FROM clause holds a subquery (``(SELECT ...) AS x``,
    ``LATERAL (...)``, ``(VALUES ...)``) or reads a CTE, with a subquery in its other
    clauses (select list, WHERE, ON, HAVING, ...: ``EXISTS (...)``, ``IN (...)``, a
    scalar ``(SELECT ...)``) that refers to an alias of that level or of a level around
    it. Only qualified references (``x.column``) are seen as correlation."""
    return list(_citus_refusals(str(statement)))


@functools.lru_cache(maxsize=4096)
def _citus_refusals(statement: str) -> tuple[str, ...]:
    query = _parse(statement)
    if query is None:
        return ()
    sources = _convotree_sources(query)
    if not sources or all(source.pinned for source in sources):
        return ()
    return tuple(dict.fromkeys(_refusals(query, frozenset())))


def record(statement: str) -> None:
    with _lock:
        if _state.paused:
            return
        if _state.cross:
            statement = _CrossConversation(statement)
        for log in _state.logs:
            log.append(statement)


@contextlib.contextmanager
def unaudited() -> Iterator[None]:
    """Statements run inside are the test's own, not the store's: do not audit them."""
    with _lock:
        _state.paused += 1
    try:
        yield
    finally:
        with _lock:
            _state.paused -= 1


@contextlib.contextmanager
def cross_conversation() -> Iterator[None]:
    """Statements run inside span conversations on purpose (the reports): exempt them
    from the one-conversation rule, but still fail the shapes Citus refuses."""
    with _lock:
        _state.cross += 1
    try:
        yield
    finally:
        with _lock:
            _state.cross -= 1


@contextlib.contextmanager
def capture() -> Iterator[list[str]]:
    """Collect the statements sent inside; nested captures all see them."""
    log: list[str] = []
    with _lock:
        _state.logs = (*_state.logs, log)
    try:
        yield log
    finally:
        with _lock:
            _state.logs = tuple(other for other in _state.logs if other is not log)
