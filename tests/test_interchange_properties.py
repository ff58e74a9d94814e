"""Random trees survive export and re-import unchanged (native into a fresh tenant's
database is covered in test_interchange; here every id-keeping text format)."""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convotree
from convotree.interchange import export_conversation, import_file
from tests.conftest import examples
from tests.test_interchange import shape

TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
               max_size=30)
#: Each node: (index of its parent among the earlier nodes, or None for a root; role; text).
TREE = st.lists(st.tuples(st.integers(0, 1_000), st.booleans(), st.sampled_from(
    ["user", "assistant"]), TEXT), min_size=1, max_size=25)


@settings(max_examples=examples(15), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=TREE, current=st.integers(0, 1_000),
       fmt=st.sampled_from(["chatgpt", "librechat", "openwebui"]))
def test_random_trees_round_trip(store: convotree.Store, tree: list[tuple[int, bool, str, str]],
                                 current: int, fmt: str) -> None:
    mine = convotree.Store(store.engine, tenant=f"p-{uuid.uuid4().hex[:8]}")
    conv = mine.create_conversation(title="random")
    made: list[convotree.Node] = []
    for parent_index, is_root, role, text in tree:
        parent = None if is_root or not made else made[parent_index % len(made)]
        made.append(mine.append(conv, parent=parent, role=role, content=text))
    mine.set_current(conv, made[current % len(made)])
    before = shape(mine, conv.id)
    if fmt == "librechat":  # LibreChat has no current node: the latest leaf on import
        before["current"] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "export.json"
        path.write_text(json.dumps(export_conversation(mine, conv, fmt)))
        other = convotree.Store(store.engine, tenant=f"q-{uuid.uuid4().hex[:8]}")
        result = import_file(other, path, fmt)
    assert result.failed == 0, result.failures
    after = shape(other, result.conversation_ids[0])
    if fmt == "librechat":
        after["current"] = []
    assert after == before
