"""Encodings by model and the chat counting rule."""

from __future__ import annotations

import pytest
import tiktoken

from convotree import tokens


@pytest.mark.parametrize(("model", "encoding"), [
    ("gpt-4o", "o200k_base"), ("gpt-4o-mini", "o200k_base"), ("gpt-4.1-nano", "o200k_base"),
    ("o3-mini", "o200k_base"), ("gpt-5", "o200k_base"), ("gpt-4", "cl100k_base"),
    ("gpt-4-turbo", "cl100k_base"), ("gpt-3.5-turbo", "cl100k_base"),
    ("ft:gpt-3.5-turbo:acme::abc", "cl100k_base"), ("ft:gpt-4o-mini:acme::x", "o200k_base"),
    (None, "o200k_base"), ("some-future-model", "o200k_base"),
])
def test_encoding_for_model(model: str | None, encoding: str) -> None:
    assert tokens.encoding_for_model(model) == encoding


def test_count_matches_tiktoken_and_treats_special_tokens_as_text() -> None:
    text = "Olá, 世界! <|endoftext|> done"
    for name in ("o200k_base", "cl100k_base"):
        expected = len(tiktoken.get_encoding(name).encode(text, disallowed_special=()))
        assert tokens.count_text(text, name) == expected
    assert tokens.count_text("", "o200k_base") == 0


def test_message_overhead_follows_the_published_rule() -> None:
    enc = tiktoken.get_encoding("o200k_base")
    plain = tokens.message_overhead(role="user", name=None, tool_calls=None, tool_call_id=None,
                                    encoding="o200k_base")
    assert plain == 3 + len(enc.encode("user"))
    named = tokens.message_overhead(role="user", name="alice", tool_calls=None,
                                    tool_call_id=None, encoding="o200k_base")
    assert named == plain + 1 + len(enc.encode("alice"))
    call = [{"id": "c", "type": "function", "function": {"name": "get", "arguments": "{}"}}]
    with_call = tokens.message_overhead(role="assistant", name=None, tool_calls=call,
                                        tool_call_id=None, encoding="o200k_base")
    assert with_call == 3 + 1 + tokens.TOKENS_PER_TOOL_CALL + len(enc.encode("get")) + len(
        enc.encode("{}"))


def test_count_texts_matches_count_text() -> None:
    texts = [f"message number {i}: " + "word " * (i % 37) for i in range(100)]
    for encoding in ("o200k_base", "cl100k_base"):
        assert tokens.count_texts(texts, encoding) == [
            tokens.count_text(text, encoding) for text in texts]
        assert tokens.count_texts(texts[:3], encoding) == [
            tokens.count_text(text, encoding) for text in texts[:3]]


def test_count_texts_works_in_a_forked_child() -> None:
    """The counting pool is per process: a child forked after the parent used it (gunicorn
    --preload, multiprocessing) starts its own instead of waiting forever."""
    import os
    import signal

    texts = [f"text {i} " * 10 for i in range(64)]
    expected = tokens.count_texts(texts, "o200k_base")
    pid = os.fork()
    if pid == 0:   # the child: exit 0 only if counting returns the same numbers
        signal.alarm(20)
        ok = tokens.count_texts(texts, "o200k_base") == expected
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
