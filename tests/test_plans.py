"""Plans that cannot degrade: every statement the store sends, EXPLAINed over misleading
statistics, uses the tree's indexes the way a walk needs them.

The trap (seen on a long-lived store): statistics taken while the table held two tiny
conversations make PostgreSQL believe a conversation has one row. A plan made from
them, custom or generic (psycopg prepares a statement after five executions and the
server may then keep a generic plan), then reads a whole conversation per step of a
walk: a path of 10,000 took minutes. So each statement is captured as the store sends
it, with its parameters, and EXPLAINed on PostgreSQL under
``plan_cache_mode = force_generic_plan`` and ``force_custom_plan`` on such a
database; on SQLite ``EXPLAIN QUERY PLAN`` says the same about its plans. Rules, per
scan of a convotree table: never a sequential scan; on the nodes table the index
condition pins ``conversation_id`` and, for every operation that is not a whole-tree
listing, also a node (``id`` or ``parent_id``), so each step is a probe.

PostgreSQL's own foreign-key checks run statements convotree does not write; their
shapes are EXPLAINed too, and a bulk import on such a database is shown to read a
number of rows linear in what it writes (the server's per-transaction counters).
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event

import convotree
from convotree._ids import uuid7
from convotree._schema import conversations
from convotree.interchange import import_file
from tests import sql_audit

#: Operations that list a whole conversation: a scan pinned to the conversation is right.
WHOLE_TREE = {"tree", "roots", "leaves", "pai_delete"}
#: Operations whose cost may follow the conversation's size (read it once, never once per
#: node): removing a subtree or the summaries below a node.
ONCE_PER_CONVERSATION = {"delete", "redact"}

_TABLES = ("convotree_nodes", "convotree_conversations")


def _chatgpt_chain(path: Path, size: int, key: str = "big") -> Path:
    """A ChatGPT export holding one conversation: a chain of ``size`` messages."""
    mapping = {
        f"m{i}": {"id": f"m{i}", "parent": f"m{i - 1}" if i else None,
                  "children": [f"m{i + 1}"] if i + 1 < size else [],
                  "message": {"id": f"m{i}",
                              "author": {"role": "user" if i % 2 == 0 else "assistant"},
                              "create_time": 1_700_000_000 + i,
                              "content": {"content_type": "text",
                                          "parts": [f"message {i} of the import"]}}}
        for i in range(size)}
    path.write_text(json.dumps([{"id": key, "title": key, "create_time": 1_700_000_000,
                                 "mapping": mapping, "current_node": f"m{size - 1}"}]))
    return path


def _misled_store(url: str) -> convotree.Store:
    """A store whose PostgreSQL statistics describe two tiny conversations (six rows)."""
    store = convotree.Store(url, create=True)
    for _ in range(2):
        conv = store.create_conversation()
        store.append_chain(store.append(conv, role="system", content="Be brief."),
                           [{"role": "user", "content": "hi"},
                            {"role": "assistant", "content": "hello"}])
    if store.engine.dialect.name == "postgresql":
        with store.engine.connect() as conn:
            conn.execute(sa.text("ANALYZE"))
            conn.commit()
    return store


def _grow(store: convotree.Store) -> dict[str, Any]:
    """The conversation every operation runs on: a pinned system root, a tool round, a
    summary, forks and a long chain (about 250 nodes); beside it, written after the
    statistics too, a conversation of 6,000 messages and 3,000 conversations of another
    tenant, so that both tables are far too large for a sequential scan while the
    statistics still describe six rows and two conversations."""
    with tempfile.TemporaryDirectory() as folder, store.engine.connect() as conn:
        # Bound to a transaction of ours: the importer then runs no ANALYZE of its own.
        import_file(store.bind(conn), _chatgpt_chain(Path(folder) / "export.json", 6_000),
                    "chatgpt")
        conn.commit()
    now = datetime.now(UTC)
    with store.engine.begin() as conn:   # and 3,000 more conversations, empty
        conn.execute(conversations.insert(), [
            {"id": uuid7(), "tenant_id": "filler", "title": None, "metadata": None,
             "current_node_id": None, "created_at": now, "updated_at": now}
            for _ in range(3_000)])
    conv = store.create_conversation(title="big")
    root = store.append(conv, role="system", content="You answer briefly.", pinned=True)
    leaf = root
    for start in range(0, 200, 50):
        leaf = store.append_chain(leaf, [
            {"role": "user" if i % 2 == 0 else "assistant",
             "content": f"message {start + i}: a sentence of about ten words"}
            for i in range(50)])[-1]
    middle = store.path(leaf)[100]
    side = store.append(conv, parent=middle, role="user", content="a fork", set_current=False)
    calls = [{"id": "c1", "type": "function",
              "function": {"name": "lookup", "arguments": "{}"}},
             {"id": "c2", "type": "function",
              "function": {"name": "lookup", "arguments": "{}"}}]
    asked = store.append(conv, parent=leaf, role="assistant", tool_calls=calls)
    first = store.append(conv, parent=asked, role="tool", tool_call_id="c1", content="one")
    return {"conv": conv, "root": root, "leaf": leaf, "middle": middle, "side": side,
            "first_result": first}


def _operations(store: convotree.Store, made: dict[str, Any]
                ) -> list[tuple[str, Callable[[], object]]]:
    conv, leaf, middle = made["conv"], made["leaf"], made["middle"]
    return [
        ("path", lambda: store.path(leaf)),
        ("tail", lambda: store.tail(leaf, 20)),
        ("tail_of_current", lambda: store.tail(conv, 20)),
        ("context", lambda: store.context(leaf, model="gpt-4o", budget=800)),
        ("context_responses", lambda: store.context(leaf, model="gpt-4o", budget=800,
                                                    format="responses")),
        ("node", lambda: store.node(conv, middle.id)),
        ("current", lambda: store.current(conv)),
        ("children", lambda: store.children(middle)),
        ("append", lambda: store.append(conv, parent=leaf, role="user", content="more")),
        ("fork", lambda: store.append(conv, parent=middle, role="user", content="again")),
        ("tool_result", lambda: store.append(conv, parent=made["first_result"], role="tool",
                                             tool_call_id="c2", content="two")),
        ("summary", lambda: store.add_summary(middle, "What was said up to the middle.")),
        ("context_with_summary", lambda: store.context(leaf, model="gpt-4o", budget=800)),
        ("redact", lambda: store.redact(store.path(leaf)[50])),
        ("set_current", lambda: store.set_current(conv, made["side"])),
        ("delete", lambda: store.delete_subtree(made["side"])),
        ("tree", lambda: store.tree(conv)),
        ("roots", lambda: store.roots(conv)),
        ("leaves", lambda: store.leaves(conv)),
        *_pydantic_ai_operations(store),
    ]


def _pydantic_ai_operations(store: convotree.Store) -> list[tuple[str, Callable[[], object]]]:
    """The pydantic-ai adapter's statements, through pydantic-ai's own helpers on the
    sync store: save, load, fork, an entry read by id alone, delete with its garbage
    collection (a whole-tree walk)."""
    import asyncio

    from pydantic_ai.conversation import Conversation
    from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

    from convotree.adapters.pydantic_ai import ConvotreeConversationStore

    adapter = ConvotreeConversationStore(store)
    name = f"plans-{uuid.uuid4().hex[:8]}"
    messages = [m for i in range(30) for m in (
        ModelRequest(parts=[UserPromptPart(content=f"question {i}")]),
        ModelResponse(parts=[TextPart(content=f"answer {i}")], model_name="gpt-4o"))]
    heads: dict[str, str] = {}

    def save() -> None:
        asyncio.run(adapter.save(Conversation(conversation_id=name, messages=messages)))

    def load() -> None:
        record = asyncio.run(adapter.read_record(name))
        assert record is not None and record.head_id is not None
        heads["head"] = record.head_id
        assert asyncio.run(adapter.load(name, limit=10)) is not None

    def fork() -> None:
        asyncio.run(adapter.fork(name, at=20, new_conversation_id=name + "-fork"))

    def entry_by_id() -> None:   # a store object that never saw the id
        asyncio.run(ConvotreeConversationStore(store).read_entry(heads["head"]))

    def delete() -> None:
        asyncio.run(adapter.delete(name + "-fork"))

    return [("pai_save", save), ("pai_load", load), ("pai_fork", fork),
            ("pai_entry_by_id", entry_by_id), ("pai_delete", delete)]


@pytest.fixture
def captured(empty_db_url: str) -> Iterator[tuple[convotree.Store, dict[str, list[Any]]]]:
    """Every statement (with its parameters) each operation sends, by operation."""
    with sql_audit.unaudited():
        store = _misled_store(empty_db_url)
        made = _grow(store)
    by_operation: dict[str, list[Any]] = {}
    current: list[Any] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        if not executemany:
            current.append((statement, parameters))

    event.listen(store.engine, "before_cursor_execute", record)
    try:
        for name, operation in _operations(store, made):
            current.clear()
            operation()
            by_operation[name] = [s for s in current if _is_plannable(s[0])]
        yield store, by_operation
    finally:
        event.remove(store.engine, "before_cursor_execute", record)
        store.close()


def _is_plannable(statement: str) -> bool:
    head = statement.lstrip().split(None, 1)[0].upper()
    return head in ("SELECT", "WITH", "UPDATE", "DELETE", "INSERT") and any(
        table in statement for table in _TABLES)


# --- PostgreSQL ---------------------------------------------------------------------------


def _prepared(statement: str) -> tuple[str, list[str]]:
    """psycopg's ``%(name)s`` placeholders as ``$n``, and the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, statement).replace("%%", "%"), names


def _explain(conn: sa.Connection, statement: str, parameters: dict[str, Any], mode: str
             ) -> dict[str, Any]:
    from psycopg import sql

    text, names = _prepared(statement)
    raw = conn.connection.driver_connection
    values = ", ".join(sql.Literal(_plain(parameters[name])).as_string(raw) for name in names)
    conn.exec_driver_sql(f"SET plan_cache_mode = {mode}")
    conn.exec_driver_sql(f"PREPARE probe AS {text}")
    try:
        explained = conn.exec_driver_sql(
            f"EXPLAIN (FORMAT JSON) EXECUTE probe{f'({values})' if values else ''}").scalar()
    finally:
        conn.exec_driver_sql("DEALLOCATE probe")
        conn.exec_driver_sql("RESET plan_cache_mode")
    plan = explained if isinstance(explained, list) else json.loads(explained)
    return plan[0]["Plan"]  # type: ignore[no-any-return]


def _plain(value: Any) -> Any:
    """A parameter as psycopg adapts it for a literal (JSON values as text)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return value


def _scans(plan: dict[str, Any], repeated: bool = False
           ) -> Iterator[tuple[dict[str, Any], bool]]:
    """Every plan node, with whether it runs once per row of something else: the inner
    side of a nested loop, the recursive term of a recursive union, a correlated
    subplan."""
    yield plan, repeated
    kind = plan["Node Type"]
    children = plan.get("Plans", ())
    # A nested loop under one conversation row (found by its primary key) runs once.
    once = kind == "Nested Loop" and children and children[0].get(
        "Index Name") == "pk_convotree_conversations"
    for index, child in enumerate(children):
        again = repeated or child.get("Parent Relationship") == "SubPlan" or (
            index == 1 and (kind == "Recursive Union" or (kind == "Nested Loop" and not once)))
        yield from _scans(child, again)


def plan_problems(plan: dict[str, Any], *, whole_tree: bool, once: bool = False
                  ) -> list[str]:
    """What is wrong with a PostgreSQL plan by the module's rules (empty: nothing).

    ``whole_tree``: the operation lists a conversation; ``once``: it may read one
    conversation once. Neither may read one per row of anything.
    """
    problems = []
    for node, repeated in _scans(plan):
        table = node.get("Relation Name")
        if table not in _TABLES or node.get("Operation") in ("Insert", "Update", "Delete"):
            continue
        kind = node["Node Type"]
        if kind == "Seq Scan":
            problems.append(f"sequential scan of {table}")
            continue
        condition = node.get("Index Cond") or node.get("Recheck Cond") or ""
        if table == "convotree_conversations":
            if "id =" not in condition:
                problems.append(f"{kind} of {table} not by id: {condition!r}")
            continue
        if "conversation_id =" not in condition:
            problems.append(f"{kind} on {node.get('Index Name')} without the conversation: "
                            f"{condition!r}")
        elif not re.search(r"\b(parent_id|id) = ", condition.replace("conversation_id =", "")):
            if repeated:
                problems.append(f"{kind} on {node.get('Index Name')} reads a whole "
                                f"conversation per row: {condition!r}")
            elif not (whole_tree or once):
                problems.append(f"{kind} on {node.get('Index Name')} reads a whole "
                                f"conversation: {condition!r}")
    return problems


def _explainer(store: convotree.Store) -> sa.Engine:
    """A connection of its own, where psycopg prepares nothing behind ``PREPARE probe``."""
    return convotree.create_engine(store.engine.url.render_as_string(hide_password=False),
                                   connect_args={"prepare_threshold": None})


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
@pytest.mark.parametrize("mode", ["force_generic_plan", "force_custom_plan"])
def test_every_statement_keeps_index_probes_on_postgresql(
        captured: tuple[convotree.Store, dict[str, list[Any]]], mode: str) -> None:
    store, by_operation = captured
    problems: dict[str, list[str]] = {}
    explained = 0
    engine = _explainer(store)
    with sql_audit.unaudited(), engine.connect() as conn:
        for name, statements in by_operation.items():
            for statement, parameters in statements:
                if statement.lstrip().upper().startswith("INSERT") and "SELECT" not in \
                        statement.upper():
                    continue   # INSERT ... VALUES: no scan to plan
                plan = _explain(conn, statement, parameters, mode)
                explained += 1
                found = plan_problems(plan, whole_tree=name in WHOLE_TREE,
                                      once=name in ONCE_PER_CONVERSATION)
                if found:
                    problems.setdefault(name, []).extend(found)
        conn.rollback()
    engine.dispose()
    assert set(by_operation) >= {"path", "context", "append", "children", "leaves", "tree",
                                 "delete", "summary", "tool_result"}
    assert explained >= 20      # the capture really saw the store's statements
    assert problems == {}


#: PostgreSQL's referential-integrity checks, as ri_triggers.c writes them for the
#: schema's foreign keys: run per inserted, updated or deleted row.
FOREIGN_KEY_CHECKS = {
    "parent exists": "SELECT 1 FROM ONLY convotree_nodes x WHERE conversation_id = $1 "
                     "AND id = $2 FOR KEY SHARE OF x",
    "no child left": "SELECT 1 FROM ONLY convotree_nodes x WHERE conversation_id = $1 "
                     "AND parent_id = $2 FOR KEY SHARE OF x",
    "conversation exists": "SELECT 1 FROM ONLY convotree_conversations x WHERE id = $1 "
                           "FOR KEY SHARE OF x",
    "no current node left": "SELECT 1 FROM ONLY convotree_conversations x WHERE id = $1 "
                            "AND current_node_id = $2 FOR KEY SHARE OF x",
}


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_foreign_key_checks_can_only_probe(
        captured: tuple[convotree.Store, dict[str, list[Any]]]) -> None:
    """The node lookup of a foreign-key check has one index to use: the primary key. (With
    a children index that also began with ``conversation_id`` PostgreSQL picked it over
    misleading statistics and read the whole conversation per inserted row.)"""
    store, _ = captured
    engine = _explainer(store)
    with sql_audit.unaudited(), engine.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        for name, check in FOREIGN_KEY_CHECKS.items():
            conn.exec_driver_sql(f"PREPARE fk AS {check}")
            arguments = ", ".join(f"'{uuid.uuid4()}'" for _ in range(check.count("$")))
            plan = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) EXECUTE fk({arguments})"
                                        ).scalar()
            conn.exec_driver_sql("DEALLOCATE fk")
            root = (plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]
            assert plan_problems(root, whole_tree=False) == [], name
            if check.startswith("SELECT 1 FROM ONLY convotree_nodes") and "AND id" in check:
                index = next(n.get("Index Name") for n, _ in _scans(root) if "Index Name" in n)
                assert index == "pk_convotree_nodes", name
        conn.rollback()
    engine.dispose()


def test_the_rules_catch_the_plan_that_degraded() -> None:
    """The plan PostgreSQL chose for the path walk over misleading statistics (recorded
    before the fix): the rules must reject it, or they prove nothing."""
    degraded = {
        "Node Type": "Nested Loop", "Plans": [
            {"Node Type": "Index Scan", "Relation Name": "convotree_nodes",
             "Index Name": "pk_convotree_nodes", "Index Cond": "(conversation_id = $1)"},
            {"Node Type": "WorkTable Scan"}]}
    assert plan_problems(degraded, whole_tree=False)
    walk = {"Node Type": "Recursive Union", "Plans": [
        {"Node Type": "Result"},
        {"Node Type": "Nested Loop", "Plans": [
            {"Node Type": "WorkTable Scan"},
            {"Node Type": "Index Scan", "Relation Name": "convotree_nodes",
             "Index Name": "ix_convotree_nodes_conversation_id_parent_id",
             "Index Cond": "(conversation_id = $1)", "Filter": "(id = walk.parent_id)"}]}]}
    assert "per row" in plan_problems(walk, whole_tree=True, once=True)[0]
    scan = {"Node Type": "Seq Scan", "Relation Name": "convotree_nodes"}
    assert plan_problems(scan, whole_tree=True) == ["sequential scan of convotree_nodes"]
    probe = {"Node Type": "Index Scan", "Relation Name": "convotree_nodes",
             "Index Name": "pk_convotree_nodes",
             "Index Cond": "((conversation_id = $1) AND (id = up.parent_id))"}
    assert plan_problems(probe, whole_tree=False) == []


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_bulk_import_reads_linearly_over_misleading_statistics(
        empty_db_url: str, tmp_path: Path) -> None:
    """Import one 1,500-message conversation on a table last analysed when it held six
    rows, inside one transaction, and count the rows the server read meanwhile
    (``pg_stat_get_xact_tuples_returned``: this transaction, this backend, foreign-key
    checks included). A seq-scan plan for the foreign-key check reads about a million."""
    size = 1_500
    path = _chatgpt_chain(tmp_path / "conversations.json", size)
    with sql_audit.unaudited():
        store = _misled_store(empty_db_url)
        try:
            with store.engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")    # the plans of this backend start here
                result = import_file(store.bind(conn), path, "chatgpt")
                read = conn.exec_driver_sql(
                    "SELECT pg_stat_get_xact_tuples_returned('convotree_nodes'::regclass) + "
                    "pg_stat_get_xact_tuples_fetched('convotree_nodes'::regclass)").scalar()
                conn.commit()
        finally:
            store.close()
    assert result.nodes == size
    assert read is not None and 0 < read < 20 * size, read


# --- SQLite ---------------------------------------------------------------------------------


def _sqlite_plan(conn: sa.Connection, statement: str, parameters: Any) -> list[str]:
    rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
    return [str(row[-1]) for row in rows]


def sqlite_problems(details: list[str], *, whole_tree: bool) -> list[str]:
    """What is wrong with SQLite's ``EXPLAIN QUERY PLAN`` lines by the module's rules:
    a ``SCAN`` of anything but a CTE is a full table scan; a ``SEARCH`` of the nodes by
    the conversation alone reads a whole conversation (whole-tree listings only)."""
    ctes = {line.split()[-1] for line in details
            if line.startswith(("MATERIALIZE ", "CO-ROUTINE "))}
    problems = []
    for line in details:
        words = line.split()
        table_scan = words[0] == "SCAN" and words[1] not in ctes and line != "SCAN CONSTANT ROW"
        by_node = re.search(r"\b(id|parent_id)=\?", line.replace("conversation_id=?", ""))
        # Only the nodes grow with a conversation: a search of the adapters' per-head or
        # per-node tables by their key prefix (a foreign-key check) reads a few rows.
        whole = (words[0] == "SEARCH" and "conversation_id=?" in line and not by_node
                 and "convotree_nodes" in line)
        if table_scan or (whole and not whole_tree):
            problems.append(line)
    return problems


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_every_statement_searches_an_index_on_sqlite(
        captured: tuple[convotree.Store, dict[str, list[Any]]]) -> None:
    store, by_operation = captured
    problems: dict[str, list[str]] = {}
    with sql_audit.unaudited(), store.engine.connect() as conn:
        for name, statements in by_operation.items():
            for statement, parameters in statements:
                if statement.lstrip().upper().startswith("INSERT") and "SELECT" not in \
                        statement.upper():
                    continue
                details = _sqlite_plan(conn, statement, parameters)
                found = sqlite_problems(details, whole_tree=name in WHOLE_TREE)
                if found:
                    problems.setdefault(name, []).extend(found)
        conn.rollback()
    assert problems == {}
    assert sqlite_problems(["SCAN convotree_nodes"], whole_tree=True)   # the rules bite
    assert sqlite_problems(["SEARCH up USING INDEX sqlite_autoindex_convotree_nodes_1 "
                            "(conversation_id=?)"], whole_tree=False)
