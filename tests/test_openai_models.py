"""Every model id the installed ``openai`` package knows is known here too, or refused
with a reason; ids the table does not name resolve by the documented rule.

The ids come from the SDK's own literals (``openai.types.shared.ChatModel`` and
``ResponsesModel``), so the next openai release that adds a model fails this file until
``convotree/_openai_models.py`` learns it. The announced shutdown dates are checked
against the deprecation notes the SDK ships with those literals.
"""

from __future__ import annotations

import inspect
import re
import typing
from datetime import date

import pytest

import convotree
from convotree import errors, tokens
from convotree._openai_models import (
    MODELS,
    SHUTDOWN,
    ModelSpec,
    excluded_reason,
)
from convotree.context import resolve_budget


def _literals(alias: object) -> set[str]:
    found: set[str] = set()
    for arg in typing.get_args(alias):
        if isinstance(arg, str):
            found.add(arg)
        else:
            found |= _literals(arg)
    return found


def sdk_model_ids() -> list[str]:
    from openai.types import shared

    ids = _literals(shared.ChatModel)
    for name in ("ResponsesModel", "AllModels"):   # absent from older releases
        alias = getattr(shared, name, None)
        if alias is not None:
            ids |= _literals(alias)
    return sorted(ids)


SDK_IDS = sdk_model_ids()


def test_the_sdk_lists_models() -> None:
    assert len(SDK_IDS) > 30 and "gpt-4o" in SDK_IDS


@pytest.mark.parametrize("model", SDK_IDS)
def test_every_sdk_model_resolves_or_is_excluded_with_a_reason(model: str) -> None:
    spec = tokens.model_spec(model)
    reason = excluded_reason(model)
    if spec is None:
        assert reason is not None, f"{model}: add it to convotree/_openai_models.py"
        assert len(reason) > 20
        with pytest.raises(errors.UnknownModel, match=re.escape(reason)):
            resolve_budget(model, None, 0)
        return
    assert reason is None
    assert spec.context_window >= 8_192 or model.startswith("computer-use")
    assert spec.encoding in ("o200k_base", "cl100k_base")
    assert spec.max_input is None or spec.max_input < spec.context_window
    assert spec.max_output is None or spec.max_output < spec.context_window
    assert spec.image_rule[0] in ("tile", "patch")
    budget = resolve_budget(model, None, 0)
    assert budget == min(spec.context_window, spec.max_input or spec.context_window)


def test_a_context_without_a_budget_works_for_every_current_model(
        store: convotree.Store) -> None:
    conv = store.create_conversation()
    leaf = store.append(conv, role="user", content="Hello")
    for model in SDK_IDS:
        if excluded_reason(model) is not None:
            continue
        ctx = store.context(leaf, model=model)
        spec = tokens.model_spec(model)
        assert spec is not None and ctx.budget == resolve_budget(model, None, 0), model
        assert ctx.messages == [{"role": "user", "content": "Hello"}]


def _sdk_shutdowns() -> dict[str, date]:
    """The SDK's "Deprecated values" notes: each id with its announced shutdown date."""
    from openai.types.shared import chat_model

    source = inspect.getsource(chat_model)
    notes = source.split('"""Deprecated values:', 1)
    found: dict[str, date] = {}
    if len(notes) < 2:
        return found   # an older openai release ships no notes
    for bullet in re.split(r"\n- ", notes[1].split('"""', 1)[0]):
        when = re.search(r"shutdown date:\s+(\d{4}-\d{2}-\d{2})", bullet.replace("\n", " "))
        if when:
            for model in re.findall(r'"([^"]+)"', bullet):
                found[model] = date.fromisoformat(when.group(1))
    return found


def test_announced_shutdowns_match_the_sdk() -> None:
    sdk = _sdk_shutdowns()
    for model, when in sdk.items():
        assert SHUTDOWN.get(model) == when, model
        spec = tokens.model_spec(model)
        assert spec is None or spec.shutdown == when, model


@pytest.mark.parametrize(("model", "source", "window", "max_input"), [
    # exact ids
    ("gpt-5.5", None, 1_050_000, 922_000),
    ("gpt-4.1-mini", None, 1_047_576, None),
    ("gpt-5-chat-latest", None, 128_000, None),
    ("gpt-4o-2024-05-13", None, 128_000, None),
    # dated snapshots, old and new style
    ("gpt-5.1-2025-11-13", "gpt-5.1", 400_000, 272_000),
    ("gpt-5.5-pro-2026-04-23", "gpt-5.5-pro", 1_050_000, 922_000),
    ("o4-mini-deep-research-2025-06-26", "o4-mini-deep-research", 200_000, None),
    ("gpt-4-0613", "gpt-4", 8_192, None),
    ("gpt-3.5-turbo-16k-0613", "gpt-3.5-turbo-16k", 16_385, None),
    # fine-tunes, by their base (and the base's snapshot)
    ("ft:gpt-4o-mini-2024-07-18:acme::9xYz", "gpt-4o-mini", 128_000, None),
    ("ft:gpt-4.1-nano-2025-04-14:org:support:AbC123", "gpt-4.1-nano", 1_047_576, None),
    ("ft:gpt-3.5-turbo-0125:personal::8f2kD", "gpt-3.5-turbo", 16_385, None),
    # newer versions of numbered families: the newest lower version, same variant
    ("gpt-5.7", "gpt-5.6-sol", 1_050_000, 922_000),
    ("gpt-5.7-2027-03-01", "gpt-5.6-sol", 1_050_000, 922_000),
    ("gpt-5.5-mini", "gpt-5.4-mini", 1_050_000, 922_000),
    ("gpt-5.6-nano", "gpt-5.4-nano", 1_050_000, 922_000),
    ("gpt-5.5-chat-latest", "gpt-5.3-chat-latest", 128_000, None),
    ("gpt-5.3-codex", "gpt-5.1-codex", 400_000, 272_000),
    ("gpt-6.2-sol", None, 1_050_000, 922_000),           # in the table since openai 3.60
    ("gpt-6.3-sol", "gpt-6.2-sol", 1_050_000, 922_000),
    ("gpt-6.3-luna", "gpt-6-luna", 1_050_000, 922_000),
    ("gpt-6.3-astra", "gpt-6.2-astra", 1_050_000, 922_000),
    # a name- prefix of a known model
    ("gpt-4o-realtime-preview", "gpt-4o", 128_000, None),
    ("GPT-4o", None, 128_000, None),
])
def test_resolution_rule_on_real_ids(model: str, source: str | None, window: int,
                                     max_input: int | None) -> None:
    spec = tokens.model_spec(model)
    assert spec is not None
    assert (spec.resolved_from, spec.context_window, spec.max_input) == (
        source, window, max_input)


@pytest.mark.parametrize("model", [
    "gpt-5.1-mini",              # not a real model
    "o1-preview-2024-09-12",     # a snapshot of an excluded model
    "gpt-3.5-turbo-0613",        # 4K: its alias's 16K would be wrong
    "gpt-6",                     # no plain gpt-6 in any family: nothing to take from
    "gpt-7.1-sol",               # no GPT-7 at all
    "claude-3-opus", "llama-3-70b", "",
])
def test_unknown_and_excluded_ids_do_not_resolve(model: str) -> None:
    assert tokens.model_spec(model) is None
    with pytest.raises(errors.UnknownModel, match="pass budget="):
        resolve_budget(model, None, 0)


def test_snapshots_share_their_models_shutdown_but_new_versions_do_not() -> None:
    assert tokens.model_spec("gpt-4o-2024-11-20").shutdown == date(2027, 1, 14)  # type: ignore[union-attr]
    assert tokens.model_spec("gpt-4o-2024-05-13").shutdown == date(2026, 10, 23)  # type: ignore[union-attr]
    assert tokens.model_spec("gpt-5.5-chat-latest").shutdown is None  # type: ignore[union-attr]
    assert tokens.model_spec("gpt-5.5").shutdown is None  # type: ignore[union-attr]


def test_register_model_overrides_and_teaches() -> None:
    try:
        tokens.register_model("acme-large", ModelSpec(context_window=32_000, max_input=30_000))
        assert tokens.model_spec("acme-large-2026-01-01").context_window == 32_000  # type: ignore[union-attr]
        assert resolve_budget("acme-large", None, 5_000) == 27_000
        tokens.register_model("gpt-5.1-mini", ModelSpec(context_window=100_000))
        assert tokens.model_spec("gpt-5.1-mini") is not None   # the user's word wins
    finally:
        MODELS.pop("acme-large", None)
        MODELS.pop("gpt-5.1-mini", None)
        tokens.model_spec.cache_clear()


def test_every_table_entry_is_consistent() -> None:
    for name, spec in MODELS.items():
        assert name == name.lower()
        assert spec.max_input is None or spec.max_input <= spec.context_window
        if spec.max_input is not None and spec.max_output is not None:
            assert spec.max_input + spec.max_output == spec.context_window, name
