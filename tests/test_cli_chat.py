"""``convotree chat``: the interactive chat, driven in-process over the local fake server."""

from __future__ import annotations

import io

import pytest

import convotree
from convotree.cli import main
from convotree.testing import FakeOpenAI


def run_chat(monkeypatch: pytest.MonkeyPatch, lines: list[str], *args: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO("".join(line + "\n" for line in lines)))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    return main(["chat", *args])


def test_chat_sends_regenerates_edits_and_forks(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        db_url: str) -> None:
    with FakeOpenAI() as server:
        status = run_chat(monkeypatch, [
            "Plan a trip to Lisbon", "Make it three days", "/regen",
            "/edit Make it five days", "/branches", "/tree", "/nonsense"],
            "--url", db_url, "--base-url", server.base_url, "--system", "Be brief.")
        bodies = server.bodies
    out, err = capsys.readouterr()
    assert status == 0
    assert "ai> Notes: Plan a trip to Lisbon" in out
    assert out.count("ai> Notes: Make it three days") == 2        # answer and regenerated
    assert "ai> Notes: Make it five days" in out
    assert "unknown command /nonsense" in err
    assert [b["stream"] for b in bodies] == [True] * 4
    assert bodies[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    # The edit's request carries the edited prompt and not the one it replaced.
    sent = [m["content"] for m in bodies[-1]["messages"]]
    assert sent[-1] == "Make it five days" and "Make it three days" not in sent

    with convotree.Store(db_url) as store:
        conversation = store.list_conversations(limit=1)[0]
        leaves = store.leaves(conversation)
        current = store.current(conversation)
    assert len(leaves) == 3 and current is not None
    assert current.content == "Notes: Make it five days"


def test_chat_fork_moves_the_next_message(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        db_url: str) -> None:
    with convotree.Store(db_url) as store:
        conv = store.create_conversation(title="resume me")
        first = store.append(conv, role="user", content="first")
        store.append(conv, parent=first, role="assistant", content="one")
    with FakeOpenAI() as server:
        status = run_chat(monkeypatch, [f"/fork {first.id}", "/regen"],
                          str(conv.id), "--url", db_url, "--base-url", server.base_url)
        bodies = server.bodies
    out, _ = capsys.readouterr()
    assert status == 0 and "now at" in out
    assert bodies[-1]["messages"] == [{"role": "user", "content": "first"}]


def test_chat_without_a_key_says_what_it_needs(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    status = run_chat(monkeypatch, ["hello"], "--url", "sqlite://")
    _, err = capsys.readouterr()
    assert status == 1
    assert "OPENAI_API_KEY" in err and "Traceback" not in err
