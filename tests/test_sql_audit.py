"""The audit that keeps every node statement confined to one conversation can fail."""

from __future__ import annotations

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
