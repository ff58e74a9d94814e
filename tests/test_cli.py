"""The ``convotree`` command line, in-process, on both backends.

Each test works in a tenant of its own on the shared migrated database, so the
numbers it checks are exactly the data it wrote.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import convotree
from convotree import cli
from convotree._schema import SCHEMA_REVISION
from convotree.cli._resolve import short
from tests.helpers import gap_branch
from tests.test_cli_support import build_lisbon, exempt_reporting, run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "interchange"


@pytest.fixture(autouse=True)
def _reporting(monkeypatch: pytest.MonkeyPatch) -> None:
    exempt_reporting(monkeypatch)


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never touch the real default database; a fixed width for the drawings."""
    monkeypatch.delenv("CONVOTREE_URL", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("COLUMNS", "80")


@pytest.fixture
def tenant() -> str:
    return f"cli-{uuid.uuid4().hex}"


@pytest.fixture
def db(db_url: str, tenant: str) -> list[str]:
    """The options that point a command at this test's data."""
    return ["--url", db_url, "--tenant", tenant]


@pytest.fixture
def lisbon(db_url: str, tenant: str) -> Iterator[dict[str, Any]]:
    with convotree.Store(db_url, tenant=tenant) as store:
        data = build_lisbon(store)
        data["store"] = store
        yield data


# --- the parser ------------------------------------------------------------------------


def parsers() -> list[list[str]]:
    commands = [[name] for name in ("demo", "ls", "show", "path", "context", "import",
                                    "export", "report", "db")]
    return [[], *commands, *(["db", action] for action in
                             ("upgrade", "downgrade", "current", "check", "enable-rls",
                              "disable-rls"))]


@pytest.mark.parametrize("argv", parsers(), ids=lambda a: " ".join(a) or "convotree")
def test_help_everywhere(argv: list[str]) -> None:
    result = run_cli(*argv, "--help")
    assert result.code == 0
    assert result.out.startswith(f"usage: {' '.join(['convotree', *argv])}")


@pytest.mark.parametrize("argv", [
    [], ["nope"], ["show"], ["context", "abcd"], ["import", "x.json", "--format", "csv"],
    ["context", "abcd", "-m", "gpt-4o", "--budget", "0"], ["report", "--days", "0"],
    ["demo", "--db", "x.db", "--url", "sqlite://"],
], ids=lambda a: " ".join(a) or "nothing")
def test_usage_errors_exit_2(argv: list[str]) -> None:
    result = run_cli(*argv)
    assert result.code == 2
    assert "usage: convotree" in result.err and "Traceback" not in result.err


def test_version() -> None:
    result = run_cli("--version")
    assert (result.code, result.out.strip()) == (0, f"convotree {convotree.__version__}")


def test_commands_register_themselves_and_a_missing_one_is_skipped() -> None:
    # `chat` is listed for the lead's module; until it exists the others still work.
    assert "chat" in cli.COMMANDS
    parser = cli.build_parser()
    assert parser.parse_args(["ls"]).handler.__module__ == "convotree.cli.browse"


def test_import_formats_match_the_library() -> None:
    from convotree import interchange
    from convotree.cli import interchange as cli_interchange

    assert cli_interchange.FORMATS == interchange.FORMATS


# --- ls --------------------------------------------------------------------------------------


def test_ls_table(db: list[str], lisbon: dict[str, Any]) -> None:
    result = run_cli("ls", *db)
    assert result.code == 0, result.err
    header, first, second = result.lines
    assert header.split() == ["id", "updated", "(UTC)", "title", "msgs", "branches", "summ.",
                              "tokens"]
    # Newest activity first: "Other" was written last.
    assert first.startswith(short(lisbon["other"].id)) and "Other" in first
    tokens = sum(n.token_count for n in lisbon["store"].tree(lisbon["conv"]))
    assert second.startswith(short(lisbon["conv"].id))
    assert "Lisbon [plan]" in second  # printed as written, not as rich markup
    assert second.split()[-4:] == ["6", "2", "0", f"{tokens:,}"]
    assert "\x1b" not in result.out


def test_ls_json_and_limit(db: list[str], lisbon: dict[str, Any]) -> None:
    rows = json.loads(run_cli("ls", "--json", *db).out)
    assert [r["title"] for r in rows] == ["Other", "Lisbon [plan]"]
    assert rows[1]["id"] == str(lisbon["conv"].id)
    assert (rows[1]["messages"], rows[1]["branches"], rows[1]["summaries"]) == (6, 2, 0)
    assert len(json.loads(run_cli("ls", "--json", "-n", "1", *db).out)) == 1


def test_ls_empty(db: list[str]) -> None:
    result = run_cli("ls", *db)
    assert result.code == 0 and "No conversations" in result.out


# --- show and path ----------------------------------------------------------------------------


def test_show_tree(db: list[str], lisbon: dict[str, Any]) -> None:
    result = run_cli("show", short(lisbon["conv"].id), "--tree", *db)
    assert result.code == 0, result.err
    lines = result.lines
    assert lines[0] == "Lisbon [plan]"
    assert lines[1].startswith(str(lisbon["conv"].id))
    assert lines[2] == "6 nodes, 2 branches"
    body = lines[5:]
    by_id = {line[:8]: line for line in body}
    assert list(by_id) == [short(lisbon[k].id) for k in
                           ("root", "ask", "long", "more", "short", "tangent")]
    assert by_id[short(lisbon["root"].id)].split()[1:3] == [
        str(lisbon["root"].token_count), "system"]
    assert "├─ assistant  Three days" in by_id[short(lisbon["long"].id)]
    assert "│  user       Add a food tour ◀ current" in by_id[short(lisbon["more"].id)]
    assert "└─ assistant  Two days" in by_id[short(lisbon["short"].id)]
    tangent = by_id[short(lisbon["tangent"].id)]
    assert "   user       Tell me everything" in tangent and tangent.endswith("…")
    assert sum("◀ current" in line for line in lines) == 1
    assert max(len(line) for line in lines) <= 80


def test_show_tree_fits_a_narrow_terminal(db: list[str], lisbon: dict[str, Any],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    result = run_cli("show", short(lisbon["conv"].id), "--tree", *db)
    assert max(len(line) for line in result.lines) <= 50
    wide = 200
    monkeypatch.setenv("COLUMNS", str(wide))
    result = run_cli("show", short(lisbon["conv"].id), "--tree", *db)
    assert any(line.endswith("in May.") or "crowded it gets in May" in line
               for line in result.lines)


def test_show_transcript_is_the_current_branch(db: list[str], lisbon: dict[str, Any]) -> None:
    result = run_cli("show", str(lisbon["conv"].id), *db)
    assert result.code == 0
    text = result.out
    assert "current branch, 4 messages" in text
    order = [text.index(s) for s in ("Be brief.", "Plan a trip", "Three days", "Add a food")]
    assert order == sorted(order)
    assert "Two days" not in text
    assert "◀ current" in text and "gpt-4o" in text


def test_show_json(db: list[str], lisbon: dict[str, Any]) -> None:
    nodes = json.loads(run_cli("show", short(lisbon["conv"].id), "--tree", "--json", *db).out)
    assert len(nodes) == 6 and nodes[0]["role"] == "system"
    assert nodes[1]["parent_id"] == str(lisbon["root"].id)


def test_path_by_short_id_prefix(db: list[str], lisbon: dict[str, Any]) -> None:
    tangent = short(lisbon["tangent"].id)
    result = run_cli("path", short(lisbon["conv"].id)[:5], tangent[:6], *db)
    assert result.code == 0, result.err
    assert "Two days" in result.out and "Three days" not in result.out
    assert result.out.index("Plan a trip") < result.out.index("Tell me everything")
    nodes = json.loads(run_cli("path", str(lisbon["conv"].id), str(lisbon["short"].id),
                               "--json", *db).out)
    assert [n["depth"] for n in nodes] == [0, 1, 2]


def test_path_defaults_to_the_current_node(db: list[str], lisbon: dict[str, Any]) -> None:
    nodes = json.loads(run_cli("path", short(lisbon["conv"].id), "--json", *db).out)
    assert nodes[-1]["id"] == str(lisbon["more"].id)


# --- errors --------------------------------------------------------------------------------


def one_line_error(result: Any, *needles: str) -> None:
    assert result.code == 1
    assert result.out == ""
    assert result.err.count("\n") == 1 and result.err.startswith("convotree: error: ")
    for needle in needles:
        assert needle in result.err


def test_unknown_ids(db: list[str], lisbon: dict[str, Any]) -> None:
    one_line_error(run_cli("show", str(uuid.uuid4()), *db), "conversation")
    one_line_error(run_cli("show", "ffff0000", *db), "no conversation matches")
    one_line_error(run_cli("path", short(lisbon["conv"].id), str(uuid.uuid4()), *db), "node")
    one_line_error(run_cli("path", short(lisbon["conv"].id), "zz", *db), "not a node id")
    # Another tenant's conversation is unknown here.
    one_line_error(run_cli("show", str(lisbon["conv"].id), "--url", db[1]),
                   "conversation")


def test_ambiguous_id(db: list[str], db_url: str, tenant: str) -> None:
    with convotree.Store(db_url, tenant=tenant) as store:
        for first in ("1", "2"):
            store.create_conversation(id=uuid.UUID(first * 24 + "abcd1234"))
    one_line_error(run_cli("show", "abcd1234", *db), "matches several", "give more digits")
    assert run_cli("show", "2222abcd", *db).code == 0


def test_bad_urls(tmp_path: Path) -> None:
    one_line_error(run_cli("ls", "--url", "not a url"), "not a database URL")
    one_line_error(run_cli("ls", "--url", f"sqlite:///{tmp_path / 'missing.db'}"),
                   "no database at", "convotree demo")
    assert not (tmp_path / "missing.db").exists()
    one_line_error(run_cli("ls", "--url", "postgresql+psycopg://nobody@127.0.0.1:1/x"),
                   "cannot reach the database")
    one_line_error(run_cli("ls"), "no database at", str(tmp_path / "xdg" / "convotree"))


def test_database_without_schema(empty_db_url: str) -> None:
    if empty_db_url.startswith("sqlite"):
        Path(empty_db_url.removeprefix("sqlite:///")).touch()
    one_line_error(run_cli("ls", "--url", empty_db_url), "convotree db upgrade")


def test_url_from_environment(db_url: str, tenant: str, lisbon: dict[str, Any],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVOTREE_URL", db_url)
    assert "Lisbon [plan]" in run_cli("ls", "--tenant", tenant).out


# --- context ------------------------------------------------------------------------------


def test_context_report(db: list[str], lisbon: dict[str, Any]) -> None:
    conv = short(lisbon["conv"].id)
    result = run_cli("context", conv, "--model", "gpt-4o-mini", "--budget", "30", *db)
    assert result.code == 0, result.err
    lines = result.lines
    assert lines[0].startswith("system     Be brief.")
    assert lines[lines.index("") - 1].startswith("user       Add a food tour")  # last sent
    report = dict(line.split(maxsplit=1) if not line.startswith(("kept", "dropped",
                  "summarizer")) else line.rsplit(maxsplit=1)[::-1][::-1]
                  for line in lines[lines.index("") + 1:])
    assert report["stopped"] == "budget" and report["summary"] == "none"
    full = json.loads(run_cli("context", conv, "-m", "gpt-4o-mini", "-b", "30", "--json",
                              *db).out)
    assert f"tokens           {full['tokens']} of 30 budget (gpt-4o-mini, chat)" in result.out
    assert full["report"]["dropped"] and full["tokens"] <= 30
    assert "kept depths      0, " in result.out


def test_context_json_matches_the_library(db: list[str], lisbon: dict[str, Any]) -> None:
    store = lisbon["store"]
    expected = store.context(lisbon["short"], model="gpt-4o", format="responses")
    data = json.loads(run_cli("context", short(lisbon["conv"].id), short(lisbon["short"].id),
                              "-m", "gpt-4o", "--format", "responses", "--json", *db).out)
    assert data["messages"] == expected.messages
    assert (data["tokens"], data["budget"]) == (expected.tokens, expected.budget)
    assert data["node_ids"] == [str(i) for i in expected.node_ids]
    assert data["report"]["stopped"] == "root"


def test_context_reserve_output(db: list[str], lisbon: dict[str, Any]) -> None:
    data = json.loads(run_cli("context", short(lisbon["conv"].id), "-m", "gpt-4o",
                              "--reserve-output", "1000", "--json", *db).out)
    assert data["budget"] == 128_000 - 1000


def test_context_summarize_makes_then_reuses(db: list[str], lisbon: dict[str, Any]) -> None:
    store, node = lisbon["store"], lisbon["more"]
    for turn in range(10):
        node = store.append(node.conversation_id, parent=node,
                            role="assistant" if turn % 2 == 0 else "user",
                            content=f"Turn {turn}: some detail about the food tour. More.")
    args = ["context", short(lisbon["conv"].id), "-m", "gpt-4o-mini", "-b", "120",
            "--summarize", *db]
    first = run_cli(*args)
    assert first.code == 0, first.err
    assert "summary          made now" in first.out
    assert "summarizer calls 1" in first.out
    second = run_cli(*args)
    assert "summary          reused" in second.out and "summarizer calls 0" in second.out
    listed = {c["title"]: c for c in json.loads(run_cli("ls", "--json", *db).out)}
    assert listed["Lisbon [plan]"]["summaries"] == 1


def test_context_says_what_the_model_does_not_see(db: list[str], db_url: str,
                                                  tenant: str) -> None:
    """A summary of depths 1-5, room for it and depth 8 only: `context` prints the gap
    (6-7) instead of hiding it, and --summarize closes it."""
    with convotree.Store(db_url, tenant=tenant) as store:
        path, _, budget = gap_branch(store)
    conv = store.get_conversation(path[0].conversation_id)
    argv = ["context", short(conv.id), short(path[8].id), "-m", "gpt-4o", "-b", str(budget)]
    shown = run_cli(*argv, *db)
    assert shown.code == 0, shown.err
    line = next(line for line in shown.lines if line.startswith("not represented"))
    assert "6-7" in line and "--summarize" in line
    data = json.loads(run_cli(*argv, "--json", *db).out)
    assert data["report"]["gap"] == [[6, 7]] and data["report"]["dropped"] == [[1, 7]]
    closed = run_cli(*argv, "--summarize", *db)
    line = next(line for line in closed.lines if line.startswith("not represented"))
    assert line.split(maxsplit=2)[2].startswith("none")


def test_context_errors(db: list[str], lisbon: dict[str, Any]) -> None:
    conv = short(lisbon["conv"].id)
    one_line_error(run_cli("context", conv, "-m", "my-model", *db), "budget")
    one_line_error(run_cli("context", conv, "-m", "gpt-4o", "-b", "3", *db), "tokens")


# --- report ---------------------------------------------------------------------------------


def test_report(db: list[str], lisbon: dict[str, Any]) -> None:
    tokens = sum(n.token_count for conv in ("conv", "other")
                 for n in lisbon["store"].tree(lisbon[conv]))
    result = run_cli("report", *db)
    assert result.code == 0, result.err
    lines = result.lines
    numbers = {line.rsplit(maxsplit=1)[0].strip(): line.rsplit(maxsplit=1)[1]
               for line in lines[:8]}
    assert numbers == {"conversations": "2", "messages": "7", "branches (leaves)": "3",
                       "summaries": "0", "content tokens, messages": str(tokens),
                       "content tokens, summaries": "0",
                       "API input tokens": "100", "API output tokens": "21"}
    gpt4o = next(line for line in lines if line.startswith("gpt-4o "))
    assert gpt4o.split()[1:] == ["2", str(lisbon["long"].token_count
                                          + lisbon["short"].token_count), "100", "21"]
    assert any(line.startswith("(none: user, system, tool)") for line in lines)
    today = next(line for line in lines if line[:4].isdigit())
    assert today.split()[1] == "7"


def test_report_json(db: list[str], lisbon: dict[str, Any]) -> None:
    data = json.loads(run_cli("report", "--json", "--days", "30", *db).out)
    assert data["totals"]["messages"] == 7 and data["totals"]["conversations"] == 2
    assert {m["model"] for m in data["by_model"]} == {"gpt-4o", None}
    assert sum(d["messages"] for d in data["by_day"]) == 7


# --- db --------------------------------------------------------------------------------------


def test_db_commands(empty_db_url: str) -> None:
    url = ["--url", empty_db_url]
    if empty_db_url.startswith("sqlite"):
        one_line_error(run_cli("db", "current", *url), "no database at")
        one_line_error(run_cli("db", "check", *url), "no database at")
        result = run_cli("db", "upgrade", *url)
    else:
        assert run_cli("db", "current", *url).out.strip() == "none (no convotree schema)"
        one_line_error(run_cli("db", "check", *url), "no convotree schema",
                       "convotree db upgrade")
        result = run_cli("db", "upgrade", *url)
    assert result.code == 0 and f"schema at {SCHEMA_REVISION}" in result.out
    assert run_cli("db", "current", *url).out.strip() == SCHEMA_REVISION
    check = run_cli("db", "check", *url)
    assert check.code == 0 and f"schema is current ({SCHEMA_REVISION})" in check.out
    assert run_cli("db", "upgrade", *url).code == 0  # idempotent
    down = run_cli("db", "downgrade", "base", *url)
    assert down.code == 0 and "schema at base" in down.out
    one_line_error(run_cli("db", "check", *url), "convotree db upgrade")


def test_db_upgrade_creates_the_default_database(tmp_path: Path) -> None:
    result = run_cli("db", "upgrade")
    assert result.code == 0
    assert (tmp_path / "xdg" / "convotree" / "convotree.db").is_file()
    assert run_cli("ls").code == 0


# --- import / export ------------------------------------------------------------------------


def test_import_then_skip_then_export_round_trip(db: list[str], db_url: str,
                                                 tmp_path: Path) -> None:
    source = FIXTURES / "chatgpt_branching.json"
    first = run_cli("import", str(source), "--format", "chatgpt", *db)
    assert first.code == 0, first.err
    line = first.out.strip()
    assert line.startswith("2 conversations imported, 0 skipped, 0 failed; ")
    nodes = int(line.split("; ")[1].split()[0])
    again = run_cli("import", str(source), "--format", "chatgpt", *db)
    assert again.out.strip() == "0 conversations imported, 2 skipped, 0 failed; 0 messages " \
                                "imported"
    listed = json.loads(run_cli("ls", "--json", *db).out)
    assert sum(c["messages"] for c in listed) == nodes
    conv = max(listed, key=lambda c: c["branches"])
    nodes = conv["messages"]

    exported = run_cli("export", conv["id"][-8:], "--format", "chatgpt", *db)
    assert exported.code == 0
    data = json.loads(exported.out)
    assert data["title"] == conv["title"] and data["mapping"]
    out = tmp_path / "native.json"
    assert run_cli("export", conv["id"], "--format", "native", "-o", str(out), *db).code == 0
    # Into a new SQLite database (native keeps ids, which are unique across tenants).
    other = ["--url", f"sqlite:///{tmp_path / 'copy.db'}", "--tenant", db[3]]
    assert run_cli("db", "upgrade", *other[:2]).code == 0
    copied = run_cli("import", str(out), "--format", "native", "--json", *other)
    assert copied.code == 0, copied.err
    assert json.loads(copied.out)["nodes"] == nodes
    assert json.loads(run_cli("ls", "--json", *other).out)[0]["messages"] == nodes


def test_import_reports_each_failure_and_exits_1(db: list[str], tmp_path: Path) -> None:
    good = json.loads((FIXTURES / "chatgpt_branching.json").read_text())
    broken = [good[0], {"title": "broken", "mapping": {"a": {"message": {"author": {
        "role": "wizard"}, "content": {"content_type": "text", "parts": ["hi"]}},
        "parent": None}}}]
    path = tmp_path / "conversations.json"
    path.write_text(json.dumps(broken))
    result = run_cli("import", str(path), "--format", "chatgpt", *db)
    assert result.code == 1
    assert result.out.startswith("1 conversations imported, 0 skipped, 1 failed; ")
    assert result.err.startswith("failed: conversation 2") and "wizard" in result.err
    assert result.err.count("\n") == 1


def test_import_errors(db: list[str], tmp_path: Path) -> None:
    one_line_error(run_cli("import", str(tmp_path / "none.json"), "-f", "chatgpt", *db),
                   "no such file")
    junk = tmp_path / "junk.json"
    junk.write_text("{not json")
    one_line_error(run_cli("import", str(junk), "-f", "chatgpt", *db), "not valid JSON")


def test_export_unknown_conversation(db: list[str]) -> None:
    one_line_error(run_cli("export", str(uuid.uuid4()), "-f", "native", *db), "conversation")


@pytest.mark.parametrize(("fmt", "fixture"), [
    ("chatgpt", "chatgpt_branching.json"), ("oasst", "oasst_flat.jsonl"),
    ("librechat", "librechat_flat.json"), ("openwebui", "openwebui_branching.json"),
    ("openai", "openai_tools.json")])
def test_cli_export_imports_again(db: list[str], db_url: str, tmp_path: Path, fmt: str,
                                  fixture: str) -> None:
    """What `convotree export -f F` writes, `convotree import -f F` reads back whole."""
    assert run_cli("import", str(FIXTURES / fixture), "-f", fmt, *db).code == 0
    listed = json.loads(run_cli("ls", "--json", *db).out)
    for conv in listed:
        out = tmp_path / f"{conv['id']}.{fmt}"
        assert run_cli("export", conv["id"], "-f", fmt, "-o", str(out), *db).code == 0
        other = ["--url", db_url, "--tenant", db[3] + "-copy"]
        again = run_cli("import", str(out), "-f", fmt, "--json", *other)
        assert again.code == 0, again.err
        result = json.loads(again.out)
        expected = conv["messages"] if fmt != "openai" else len(json.loads(
            run_cli("path", conv["id"], "--json", *db).out))
        assert (result["imported"], result["nodes"]) == (1, expected)


def test_ls_keeps_its_columns_with_a_long_title(db: list[str], db_url: str, tenant: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    with convotree.Store(db_url, tenant=tenant) as store:
        conv = store.create_conversation(title="A very long title about Lisbon " * 8)
        store.append(conv, role="user", content="hi")
    for width in (80, 200):
        monkeypatch.setenv("COLUMNS", str(width))
        lines = run_cli("ls", *db).lines
        assert lines[0].split() == ["id", "updated", "(UTC)", "title", "msgs", "branches",
                                    "summ.", "tokens"]
        assert all(len(line) <= width for line in lines)
        assert lines[1].startswith(str(conv.id)[-8:]) and lines[1].endswith("1")
        assert "…" in lines[1]


def test_tree_of_deep_forks_stays_within_the_width(db: list[str], db_url: str, tenant: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with convotree.Store(db_url, tenant=tenant) as store:
        conv = store.create_conversation(title="deep forks")
        node = store.append(conv, role="user", content="root question")
        for turn in range(30):
            answer = store.append(conv, parent=node, role="assistant", content=f"answer {turn}")
            store.append(conv, parent=node, role="assistant", content=f"alternative {turn}")
            node = store.append(conv, parent=answer, role="user", content=f"follow up {turn}")
    monkeypatch.setenv("COLUMNS", "80")
    lines = run_cli("show", str(conv.id), "--tree", *db).lines
    drawn = [line for line in lines if "follow up" in line or "answer" in line]
    assert len(drawn) == 60 and all(len(line) <= 80 for line in lines)
    assert any("┆+" in line for line in drawn)
    deepest = next(line for line in drawn if "follow up 29" in line)
    assert "user" in deepest and "◀ current" in deepest


def test_tree_with_wide_characters_fits(db: list[str], db_url: str, tenant: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.cells import cell_len

    with convotree.Store(db_url, tenant=tenant) as store:
        conv = store.create_conversation(title="中文")
        ask = store.append(conv, role="user", content="为什么天空是蓝色的" * 8)
        store.append(conv, parent=ask, role="assistant", content="因为瑞利散射。" * 12)
        store.append(conv, parent=ask, role="assistant", content="天空散射蓝光。" * 12)
    monkeypatch.setenv("COLUMNS", "80")
    lines = run_cli("show", str(conv.id), "--tree", *db).lines
    drawn = [line for line in lines if "assistant" in line or "user" in line]
    assert len(drawn) == 3 and all(cell_len(line) <= 80 for line in lines)
    assert all(line.endswith("…") or "◀ current" in line for line in drawn)
