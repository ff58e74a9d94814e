"""The audit that keeps every node statement confined to one conversation can fail."""

from __future__ import annotations

import pytest

import convotree
from tests import sql_audit


def test_accepts_confined_statements() -> None:
    good = [
        "SELECT n.id FROM convotree_nodes AS n WHERE n.conversation_id = ? AND n.id = ?",
        "DELETE FROM convotree_nodes WHERE convotree_nodes.conversation_id = %(c)s",
        "INSERT INTO convotree_nodes (conversation_id, id) VALUES (?, ?)",
        "WITH RECURSIVE p(id) AS (SELECT convotree_nodes.id FROM convotree_nodes WHERE "
        "convotree_nodes.conversation_id = ? UNION ALL SELECT up.id FROM convotree_nodes AS up "
        "JOIN p ON up.id = p.parent_id WHERE up.conversation_id = ?) SELECT id FROM p",
        "SELECT 1 FROM convotree_conversations WHERE id = ?",
    ]
    assert [sql_audit.violations(s) for s in good] == [[]] * len(good)


def test_rejects_unconfined_statements() -> None:
    bad = [
        "SELECT count(*) FROM convotree_nodes",
        "SELECT n.id FROM convotree_nodes AS n WHERE n.id = ?",
        # the recursive member does not filter: Citus refuses this
        "WITH RECURSIVE p(id) AS (SELECT convotree_nodes.id FROM convotree_nodes WHERE "
        "convotree_nodes.conversation_id = ? UNION ALL SELECT up.id FROM convotree_nodes AS up "
        "JOIN p ON up.id = p.parent_id) SELECT id FROM p",
        "UPDATE convotree_nodes SET pinned = 1 WHERE id = ?",
        "INSERT INTO convotree_nodes (id, parent_id) VALUES (?, ?)",
        # a filter against another column is not a filter on one conversation
        "SELECT a.id FROM convotree_nodes a JOIN convotree_nodes b "
        "ON a.conversation_id = b.conversation_id WHERE b.conversation_id = ?",
    ]
    for statement in bad:
        assert sql_audit.violations(statement), statement


def test_the_store_is_audited(store: convotree.Store) -> None:
    """The listener really sees the store's statements (the audit is not vacuous)."""
    with sql_audit.capture() as log:
        conv = store.create_conversation()
        node = store.append(conv, role="user", content="x")
        store.path(node)
    node_statements = [s for s in log if "convotree_nodes" in s]
    assert len(node_statements) >= 2
    assert any("RECURSIVE" in s.upper() for s in node_statements)


# --- the Citus shape: no correlated subquery beside a subquery or CTE in FROM -----------

#: What a real Citus 13 cluster refused: the page of conversations as a subquery in FROM,
#: and an EXISTS correlated with it ("correlated subqueries are not supported when the
#: FROM clause contains a CTE or subquery").
REFUSED = (
    "SELECT c.id, c.title, c.updated_at, n.id AS node_id, n.role, "
    "EXISTS (SELECT 1 FROM convotree_nodes k WHERE k.conversation_id = c.id "
    "AND k.parent_id = n.id) AS has_children "
    "FROM (SELECT convotree_conversations.id AS id, convotree_conversations.title AS title, "
    "convotree_conversations.updated_at AS updated_at, "
    "convotree_conversations.current_node_id AS current_node_id FROM convotree_conversations "
    "WHERE convotree_conversations.tenant_id = %(tenant_id)s "
    "ORDER BY convotree_conversations.updated_at DESC, convotree_conversations.id DESC "
    "LIMIT 20) AS c "
    "JOIN convotree_nodes n ON n.conversation_id = c.id AND n.id = c.current_node_id"
)
#: What it accepted: plain tables in FROM, the page as an uncorrelated IN in WHERE.
ACCEPTED = (
    "SELECT c.id, c.title, c.updated_at, n.id AS node_id, n.role, "
    "EXISTS (SELECT 1 FROM convotree_nodes k WHERE k.conversation_id = c.id "
    "AND k.parent_id = n.id) AS has_children "
    "FROM convotree_conversations c "
    "JOIN convotree_nodes n ON n.conversation_id = c.id AND n.id = c.current_node_id "
    "WHERE c.id IN (SELECT convotree_conversations.id FROM convotree_conversations "
    "WHERE convotree_conversations.tenant_id = %(tenant_id)s "
    "ORDER BY convotree_conversations.updated_at DESC, convotree_conversations.id DESC "
    "LIMIT 20)"
)
CITUS_MESSAGE = "correlated subqueries are not supported when the FROM clause contains"


def test_the_refused_real_statement_is_flagged() -> None:
    (reason,) = sql_audit.citus_refusals(REFUSED)
    assert CITUS_MESSAGE in reason
    assert "EXISTS" in reason and "a subquery AS c" in reason
    assert reason in sql_audit.violations(REFUSED)


def test_the_accepted_rewrite_is_not_flagged() -> None:
    # it does span conversations, so the check did look at it
    assert not sql_audit.single_conversation(ACCEPTED)
    assert sql_audit.citus_refusals(ACCEPTED) == []


def test_a_pinned_statement_may_correlate_beside_a_cte() -> None:
    """A router query (one conversation) runs on one shard, where Citus takes any shape."""
    pinned = (
        "WITH RECURSIVE p(id, parent_id) AS (SELECT n.id, n.parent_id FROM convotree_nodes n "
        "WHERE n.conversation_id = ? AND n.id = ? UNION ALL SELECT up.id, up.parent_id "
        "FROM convotree_nodes AS up JOIN p ON up.id = p.parent_id WHERE up.conversation_id = ?) "
        "SELECT p.id, EXISTS (SELECT 1 FROM convotree_nodes k WHERE k.conversation_id = ? "
        "AND k.parent_id = p.id) AS has_children FROM p"
    )
    assert sql_audit.single_conversation(pinned)
    assert sql_audit.violations(pinned) == []
    # the same shape with one reference left unpinned spans conversations: refused
    unpinned = pinned.replace("k.conversation_id = ? AND ", "")
    assert not sql_audit.single_conversation(unpinned)
    assert sql_audit.citus_refusals(unpinned)


def test_a_cte_in_from_with_a_correlated_exists_is_flagged() -> None:
    statement = (
        "WITH page AS (SELECT id, updated_at FROM convotree_conversations WHERE tenant_id = ? "
        "ORDER BY updated_at DESC LIMIT 20) "
        "SELECT page.id FROM page WHERE EXISTS (SELECT 1 FROM convotree_nodes k "
        "WHERE k.conversation_id = page.id AND k.kind = 'summary')"
    )
    (reason,) = sql_audit.citus_refusals(statement)
    assert CITUS_MESSAGE in reason and "CTE page" in reason
    # the CTE defined but not in FROM: the FROM clause holds a plain table
    plain = statement.replace("FROM page WHERE", "FROM convotree_conversations page WHERE")
    assert sql_audit.citus_refusals(plain) == []


def test_an_uncorrelated_subquery_beside_a_subquery_in_from_is_not_flagged() -> None:
    statement = (
        "SELECT c.id, (SELECT count(*) FROM convotree_nodes WHERE kind = 'summary') AS summaries "
        "FROM (SELECT id FROM convotree_conversations WHERE tenant_id = ? LIMIT 20) AS c"
    )
    assert not sql_audit.single_conversation(statement)
    assert sql_audit.citus_refusals(statement) == []
    correlated = statement.replace("WHERE kind", "WHERE convotree_nodes.conversation_id = c.id "
                                   "AND kind")
    assert sql_audit.citus_refusals(correlated)


def test_a_correlated_subquery_over_plain_tables_is_not_flagged() -> None:
    statement = (
        "SELECT c.id, EXISTS (SELECT 1 FROM convotree_nodes k WHERE k.conversation_id = c.id) "
        "FROM convotree_conversations c JOIN convotree_pydantic_ai_records r "
        "ON r.conversation_id = c.id WHERE c.tenant_id = ?"
    )
    assert not sql_audit.single_conversation(statement)
    assert sql_audit.citus_refusals(statement) == []
    derived = statement.replace("convotree_pydantic_ai_records r",
                                "(SELECT * FROM convotree_pydantic_ai_records LIMIT 5) r")
    assert sql_audit.citus_refusals(derived)


def test_violations_include_the_citus_shape() -> None:
    """A statement the one-conversation rule says nothing about (no convotree_nodes)."""
    statement = (
        "SELECT c.id, EXISTS (SELECT 1 FROM convotree_pydantic_ai_records r "
        "WHERE r.conversation_id = c.id) FROM (SELECT id FROM convotree_conversations "
        "WHERE tenant_id = ? ORDER BY updated_at DESC LIMIT 20) AS c"
    )
    assert sql_audit.violations(statement) == sql_audit.citus_refusals(statement) != []


def test_the_shape_is_found_through_the_spelling() -> None:
    """Quoted identifiers, lower case and newlines, comments and string literals with
    parentheses, LATERAL, nested parentheses, other subquery forms."""
    page = "(select id from convotree_conversations where tenant_id = $1 limit 20)"
    refused = [
        f'SELECT "c"."id", EXISTS (SELECT 1 FROM "convotree_nodes" AS "k" '
        f'WHERE "k"."conversation_id" = "c"."id") FROM {page} AS "c"',
        f"select c.id,\n  -- a comment (with a parenthesis\n  (select count(*)\n"
        f"     from convotree_nodes k\n    where k.conversation_id = c.id\n"
        f"      and k.content <> ')')\n  from {page} c",
        "SELECT x.id FROM convotree_conversations x CROSS JOIN LATERAL (SELECT * FROM "
        "convotree_nodes y WHERE y.conversation_id = x.id LIMIT 1) AS l WHERE l.id IN "
        "(SELECT z.id FROM convotree_nodes z WHERE z.parent_id = l.id)",
        f"SELECT c.id FROM (({page})) AS c WHERE NOT (EXISTS (SELECT 1 FROM convotree_nodes k "
        "WHERE k.conversation_id = c.id))",
        f"SELECT c.id FROM (convotree_nodes n JOIN {page} c ON n.conversation_id = c.id) "
        "WHERE c.id = ANY (SELECT k.conversation_id FROM convotree_nodes k "
        "WHERE k.parent_id = n.id)",
        f"WITH page AS MATERIALIZED {page} SELECT p.id FROM page AS p "
        "WHERE p.id IN (SELECT k.conversation_id FROM convotree_nodes k WHERE k.id = p.id)",
    ]
    for statement in refused:
        assert sql_audit.citus_refusals(statement), statement
    accepted = [
        # the subquery is inside a string literal, not in the statement
        f"SELECT c.id, 'EXISTS (SELECT 1 FROM convotree_nodes k WHERE k.conversation_id "
        f"= c.id)' FROM {page} AS c",
        f"SELECT $$ ( $$, c.id FROM {page} c WHERE c.id IN (SELECT k.conversation_id "
        "FROM convotree_nodes k WHERE k.kind = $2)",
        # the inner c is the subquery's own alias: not correlated
        f"SELECT c.id FROM {page} c WHERE c.id IN (SELECT c.conversation_id "
        "FROM convotree_nodes c WHERE c.kind = ?)",
        # IS DISTINCT FROM is no FROM clause
        "SELECT c.id, c.title IS DISTINCT FROM c.id FROM convotree_conversations c "
        "WHERE EXISTS (SELECT 1 FROM convotree_nodes k WHERE k.conversation_id = c.id)",
    ]
    for statement in accepted:
        assert not sql_audit.single_conversation(statement), statement
        assert sql_audit.citus_refusals(statement) == [], statement


def test_single_conversation_follows_the_distribution_columns() -> None:
    single = [
        "SELECT 1 FROM convotree_conversations WHERE id = ?",
        "SELECT n.id FROM convotree_conversations c JOIN convotree_nodes n "
        "ON n.conversation_id = c.id WHERE c.id = %(c)s::UUID",   # pinned through c
        "UPDATE convotree_conversations SET title = ? WHERE convotree_conversations.id = :c",
        "INSERT INTO convotree_nodes (conversation_id, id) VALUES (?, ?)",
        "SELECT m.message FROM convotree_pydantic_ai_messages m WHERE $1 = m.conversation_id",
        "SELECT version_num FROM convotree_alembic_version",       # not distributed
        "SELECT 1",
    ]
    spanning = [
        "SELECT id FROM convotree_conversations WHERE tenant_id = ? LIMIT 20",
        "SELECT id FROM convotree_conversations WHERE id IN (?, ?)",
        "SELECT n.id FROM convotree_nodes n WHERE n.id = ?",        # id is not the column
        "SELECT * FROM convotree_usage_daily WHERE tenant_id = ?",  # a view across all
        # pinned in the subquery only: the outer reference is not
        "SELECT n.id FROM convotree_nodes n WHERE n.id IN (SELECT k.id FROM "
        "convotree_nodes k WHERE k.conversation_id = ?)",
    ]
    assert [sql_audit.single_conversation(s) for s in single] == [True] * len(single)
    assert [sql_audit.single_conversation(s) for s in spanning] == [False] * len(spanning)


def test_cross_conversation_statements_keep_the_citus_check(
        monkeypatch: pytest.MonkeyPatch) -> None:
    spanning = "SELECT count(*) FROM convotree_nodes"
    # only this test's capture sees the statements recorded here (not the audit fixture)
    monkeypatch.setattr(sql_audit._state, "logs", ())
    with sql_audit.capture() as log, sql_audit.cross_conversation():
        sql_audit.record(spanning)
        sql_audit.record(REFUSED)
        with sql_audit.unaudited():
            sql_audit.record(REFUSED)
    assert log == [spanning, REFUSED]
    assert sql_audit.violations(log[0]) == []
    assert sql_audit.violations(log[1]) == sql_audit.citus_refusals(REFUSED) != []
    # outside, the one-conversation rule still holds
    with sql_audit.capture() as log:
        sql_audit.record(spanning)
    assert sql_audit.violations(log[0])


def test_the_stores_statements_are_single_conversation(store: convotree.Store) -> None:
    """The helper does recognise the store's own statements (LATERAL steps, recursive
    CTEs, the one-statement append) as confined to one conversation."""
    with sql_audit.capture() as log:
        conv = store.create_conversation()
        root = store.append(conv, role="user", content="(x")
        answer = store.append(conv, parent=root, role="assistant", content="y)")
        store.path(answer)
        store.children(root)
        store.tree(conv)
        store.leaves(conv)
        store.tail(answer, 5)
        store.context(answer, model="gpt-4o", budget=100)
        store.edit(answer, "z")
        store.delete_subtree(answer)
    node_statements = [s for s in log if "convotree_nodes" in s]
    assert len(node_statements) >= 4
    assert [s for s in node_statements if not sql_audit.single_conversation(s)] == []
