"""Random sequences of appends, forks and deletes keep every tree invariant."""

from __future__ import annotations

import itertools
import uuid
from dataclasses import dataclass, field

import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convotree
from convotree import tokens
from convotree._schema import nodes as nodes_table
from tests import sql_audit
from tests.conftest import examples

#: Every test below on Store and on AsyncStore (tests/twins.py).
TWINS = True

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=40)
ROLE = st.sampled_from(["system", "developer", "user", "assistant"])

OPERATION = st.one_of(
    st.tuples(st.just("append"), st.integers(0, 1), st.integers(0, 10_000), ROLE, TEXT,
              st.booleans()),
    st.tuples(st.just("root"), st.integers(0, 1), ROLE, TEXT),
    st.tuples(st.just("edit"), st.integers(0, 10_000), TEXT),
    st.tuples(st.just("delete"), st.integers(0, 10_000)),
)


@dataclass
class Model:
    """What the trees should hold, kept in plain Python."""

    parent: dict[uuid.UUID, uuid.UUID | None] = field(default_factory=dict)
    conversation: dict[uuid.UUID, uuid.UUID] = field(default_factory=dict)
    kept: dict[uuid.UUID, bool] = field(default_factory=dict)

    def subtree(self, root: uuid.UUID) -> set[uuid.UUID]:
        out, frontier = {root}, [root]
        while frontier:
            current = frontier.pop()
            children = [n for n, p in self.parent.items() if p == current]
            out.update(children)
            frontier.extend(children)
        return out


@settings(max_examples=examples(25), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=st.lists(OPERATION, min_size=1, max_size=25))
def test_random_operations_keep_invariants(db_url: str, operations: list[tuple]) -> None:  # type: ignore[type-arg]
    with convotree.Store(db_url) as store:
        convs = [store.create_conversation(), store.create_conversation()]
        model = Model()
        nodes: list[convotree.Node] = []
        for op in operations:
            alive = [n for n in nodes if n.id in model.parent]
            if op[0] == "append" and alive:
                _, _, pick, role, text, pinned = op
                parent = alive[pick % len(alive)]
                node = store.append(parent.conversation_id, parent=parent, role=role,
                                    content=text, pinned=pinned)
            elif op[0] in ("append", "root"):
                conv = convs[op[1]]
                role, text = (op[3], op[4]) if op[0] == "append" else (op[2], op[3])
                node = store.append(conv, role=role, content=text)
            elif op[0] == "edit" and alive:
                node = store.edit(alive[op[1] % len(alive)], op[2])
            elif op[0] == "delete" and alive:
                target = alive[op[1] % len(alive)]
                gone = model.subtree(target.id)
                assert store.delete_subtree(target) == len(gone)
                for node_id in gone:
                    del model.parent[node_id]
                continue
            else:
                continue
            nodes.append(node)
            model.parent[node.id] = node.parent_id
            model.conversation[node.id] = node.conversation_id
            model.kept[node.id] = node.pinned or node.role in ("system", "developer")

        stored = {n.id: n for conv in convs for n in store.tree(conv)}
        assert set(stored) == set(model.parent)
        for node in stored.values():
            assert node.conversation_id == model.conversation[node.id]
            assert node.parent_id == model.parent[node.id]
            if node.parent_id is None:
                assert node.depth == 0
            else:
                parent = stored[node.parent_id]
                assert parent.conversation_id == node.conversation_id   # no cross edges
                assert node.depth == parent.depth + 1
            assert node.token_count == tokens.count_text(node.content or "", node.encoding)
            path = store.path(node)
            assert path[0].parent_id is None and path[-1].id == node.id
            assert [p.depth for p in path] == list(range(len(path)))
            for upper, lower in itertools.pairwise(path):
                assert lower.parent_id == upper.id
        for conv in convs:
            current = store.get_conversation(conv).current_node_id
            assert current is None or current in stored

        # The pointer to the nearest kept-always ancestor matches a walk up the tree.
        with sql_audit.unaudited(), store.engine.connect() as conn:
            pointers = dict(conn.execute(
                sa.select(nodes_table.c.id, nodes_table.c.pinned_ancestor_id).where(
                    nodes_table.c.conversation_id.in_([c.id for c in convs]))).all())
        for node_id in stored:
            expected, up = None, model.parent[node_id]
            while up is not None:
                if model.kept[up]:
                    expected = up
                    break
                up = model.parent[up]
            assert pointers[node_id] == expected
