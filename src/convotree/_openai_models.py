"""What convotree knows about OpenAI's models: windows, input caps, encodings, images,
announced shutdowns, and the rule that resolves ids the table does not name.

Pure data and string rules; no network. ``tests/test_openai_models.py`` walks every id
in the installed ``openai`` package's model literals (``ChatModel``, ``ResponsesModel``)
and fails when one neither resolves nor is in ``EXCLUDED`` with its reason, so a new
``openai`` release that adds a model fails CI until this table learns it; it also
checks ``SHUTDOWN`` against the deprecation notes the SDK ships.

Figures, per family, with their sources (OpenAI's own model pages where this machine
could read them, otherwise the consolidated tables that track them; see each comment).
A "max input" is the prompt cap where OpenAI publishes one; in the GPT-5 and GPT-6 lines
it is the window less the maximum output (272K = 400K - 128K; 922K = 1.05M - 128K).

Resolution rule (``resolve``), applied to ``model`` after lower-casing:

1. ``ft:BASE:org::id`` (a fine-tune) resolves as ``BASE``.
2. An id in ``EXCLUDED`` does not resolve (the reason says why; pass ``budget=``).
3. An exact id in the table.
4. A dated snapshot, ``NAME-YYYY-MM-DD`` or the old ``NAME-MMDD``, as ``NAME``.
5. A newer version of a numbered family, ``gpt-X.Y[-variant]`` (``gpt-5.7``,
   ``gpt-6.3-sol``, ``gpt-5.5-mini``): the table's newest ``gpt-X.Z[-variant]`` with
   the same major version, the same variant and ``Z < Y`` (``gpt-5`` counts as 5.0).
   Nothing of the same variant below it: unknown.
6. Otherwise the longest table id that is a ``NAME-`` prefix of it (``gpt-4o-foo``).

A spec found by rule 4-6 says which table entry it came from (``resolved_from``). A
snapshot shares its model's announced shutdown date unless it has its own; a model
found by rule 5 or 6 inherits none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date

__all__ = ["EXCLUDED", "MODELS", "SHUTDOWN", "ModelSpec", "resolve"]

DEFAULT_ENCODING = "o200k_base"


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What convotree needs to know about a model to fill its context window.

    ``context_window`` is the total of prompt and output; ``max_input`` caps the
    prompt alone where the model has a separate limit (the GPT-5 and GPT-6 lines);
    ``max_output`` is the most the model writes in one answer (informational).
    ``image_rule`` names how images are priced (see ``tokens.image_tokens``).
    ``shutdown``: the shutdown date OpenAI announced, if any: the model keeps working
    here (stored conversations still need counting) but is marked. ``resolved_from``:
    the table entry a snapshot, newer version or alias took its figures from.
    """

    context_window: int
    encoding: str = DEFAULT_ENCODING
    max_input: int | None = None
    image_rule: tuple[str, float, float] = ("tile", 85, 170)
    max_output: int | None = None
    shutdown: date | None = None
    resolved_from: str | None = None


# Image rules from OpenAI's "Images and vision: calculating costs" guide (tile models:
# base + per-512px tile; patch models: 32px patches times a multiplier).
_T4O = ("tile", 85, 170)
#: Images of a model convotree does not know are priced like GPT-4o's.
DEFAULT_IMAGE_RULE = _T4O
_T4O_MINI = ("tile", 2833, 5667)
_T_O = ("tile", 75, 150)
_T_GPT5 = ("tile", 70, 140)
_P_MINI = ("patch", 1.62, 0)
_P_NANO = ("patch", 2.46, 0)
_P_O4 = ("patch", 1.72, 0)
# GPT-5.2 and later: no rule is published; measured by users on the API as patches at
# x1.2 (community.openai.com, "Introducing GPT-5.4 mini and nano"). Higher than the
# GPT-5 tile rule for every image size, so budgets err on the safe side.
_P_NEW = ("patch", 1.2, 0)


def _spec(window: int, out: int | None = None, inp: int | None = None,
          image: tuple[str, float, float] = _T4O, encoding: str = DEFAULT_ENCODING
          ) -> ModelSpec:
    return ModelSpec(window, encoding, inp, image, out)


_GPT6 = _spec(1_050_000, 128_000, 922_000, _P_NEW)
_GPT5_NEW = _spec(1_050_000, 128_000, 922_000, _P_NEW)
_GPT5 = _spec(400_000, 128_000, 272_000, _T_GPT5)
_GPT5_2 = _spec(400_000, 128_000, 272_000, _P_NEW)
_CHAT_LATEST = _spec(128_000, 16_384, image=_T_GPT5)
_O = _spec(200_000, 100_000, image=_T_O)
_4O = _spec(128_000, 16_384, image=_T4O)
_AUDIO = _spec(128_000, 16_384)
_CL = "cl100k_base"

MODELS: dict[str, ModelSpec] = {
    # GPT-6 (Astra, Sol, Terra, Luna). OpenAI's models index
    # (developers.openai.com/api/docs/models: 1.05M context, 128K output) and the
    # "Using GPT-6" guide; 922K input: LiteLLM's day-0 notes (docs.litellm.ai/blog/
    # gpt_6_sol_luna, gpt-6-1-terra) and Google's partner-model cards (S3NS).
    # gpt-6.2-sol: its own page in OpenAI's models index (1,050,000 context, 922,000
    # input, 128,000 output). gpt-6.2-sol-healthcare (openai 3.60's model literals):
    # GPT-6.2 Sol with a clinical harness and medical search index, 1.1M / 128K
    # (OpenCode's model data, opencode.ai/data/openai/gpt-6-2-sol-healthcare).
    "gpt-6-astra": _GPT6, "gpt-6.2-astra": _GPT6, "gpt-6-sol": _GPT6, "gpt-6.1-sol": _GPT6,
    "gpt-6.2-sol": _GPT6, "gpt-6.2-sol-healthcare": _GPT6,
    "gpt-6.1-terra": _GPT6, "gpt-6-luna": _GPT6,
    # GPT-5.6 (Sol, Terra, Luna; "gpt-5.6" is Sol). OpenAI's models index, Vercel AI
    # Gateway, LiteLLM's model_prices_and_context_window.json: 1.05M / 128K.
    "gpt-5.6-sol": _GPT5_NEW, "gpt-5.6-terra": _GPT5_NEW, "gpt-5.6-luna": _GPT5_NEW,
    "gpt-5.6": replace(_GPT5_NEW, resolved_from="gpt-5.6-sol"),
    # GPT-5.5 and GPT-5.4 (+ pro, mini, nano). LiteLLM's table, OpenRouter ("1M+ (922K
    # input, 128K output)" for 5.4), Oxen and Venice model pages. mini/nano: LiteLLM
    # only; their image multipliers are the documented ones of the small models.
    "gpt-5.5": _GPT5_NEW, "gpt-5.5-pro": _GPT5_NEW, "gpt-5.4": _GPT5_NEW,
    "gpt-5.4-mini": replace(_GPT5_NEW, image_rule=_P_MINI),
    "gpt-5.4-nano": replace(_GPT5_NEW, image_rule=_P_NANO),
    # GPT-5, 5.1, 5.2 (+ pro, codex): 400K context, 272K input, 128K output (LiteLLM,
    # OpenRouter; OpenAI's GPT-5 page). The chat-latest aliases (the ChatGPT models):
    # 128K / 16,384 (LiteLLM; OpenRouter "gpt-5-chat").
    "gpt-5": _GPT5, "gpt-5-pro": _GPT5, "gpt-5-codex": _GPT5,
    "gpt-5-mini": replace(_GPT5, image_rule=_P_MINI),
    "gpt-5-nano": replace(_GPT5, image_rule=_P_NANO),
    "gpt-5.1": _GPT5, "gpt-5.1-codex": _GPT5, "gpt-5.1-codex-max": _GPT5,
    "gpt-5.2": _GPT5_2, "gpt-5.2-pro": _GPT5_2,
    "gpt-5-chat-latest": _CHAT_LATEST, "gpt-5.1-chat-latest": _CHAT_LATEST,
    "gpt-5.2-chat-latest": _CHAT_LATEST, "gpt-5.3-chat-latest": _CHAT_LATEST,
    # GPT-4.1: 1,047,576 / 32,768 (OpenAI's GPT-4.1 pages, LiteLLM, OpenRouter).
    "gpt-4.1": _spec(1_047_576, 32_768, image=_T4O),
    "gpt-4.1-mini": _spec(1_047_576, 32_768, image=_P_MINI),
    "gpt-4.1-nano": _spec(1_047_576, 32_768, image=_P_NANO),
    # o-series: 200K / 100K (LiteLLM, Vercel, OpenRouter); o3-mini takes no images.
    "o1": _O, "o1-pro": _O, "o3": _O, "o3-pro": _O, "o3-mini": _O,
    "o4-mini": replace(_O, image_rule=_P_O4),
    # o1-mini: 128K / 65,536 (OpenAI's former o1-mini page; in convotree's table before).
    "o1-mini": _spec(128_000, 65_536, image=_T_O),
    # Deep research: 200K / 100K (OpenAI's o4-mini-deep-research page; LiteLLM).
    "o3-deep-research": _O, "o4-mini-deep-research": _O,
    # Codex mini (Responses only): 200K / 100K (LiteLLM).
    "codex-mini-latest": replace(_O, image_rule=_P_O4),
    # GPT-4o and GPT-4o mini: 128K / 16,384; the 2024-05-13 snapshot writes 4,096
    # (LiteLLM, OpenRouter, Azure OpenAI's model table).
    "gpt-4o": _4O, "gpt-4o-2024-05-13": _spec(128_000, 4_096, image=_T4O),
    "chatgpt-4o-latest": _4O,
    "gpt-4o-mini": _spec(128_000, 16_384, image=_T4O_MINI),
    # Search preview and audio models: 128K / 16,384 (LiteLLM). Audio parts are priced
    # by convotree's documented estimate (tokens.AUDIO_TOKENS_PER_SECOND).
    "gpt-4o-search-preview": _4O, "gpt-4o-mini-search-preview": _4O,
    "gpt-4o-audio-preview": _AUDIO, "gpt-4o-mini-audio-preview": _AUDIO,
    "gpt-audio-mini": _AUDIO,
    # Computer use (Responses only): 8,192 / 1,024 (LiteLLM's Azure entry).
    "computer-use-preview": _spec(8_192, 1_024),
    # GPT-4 Turbo and GPT-4 (cl100k_base): 128K / 4,096 and 8,192 (LiteLLM, OpenRouter);
    # gpt-4-32k: 32,768 (OpenAI's former GPT-4 page; in convotree's table before).
    "gpt-4-turbo": _spec(128_000, 4_096, encoding=_CL),
    "gpt-4-turbo-preview": _spec(128_000, 4_096, encoding=_CL),
    "gpt-4-0125-preview": _spec(128_000, 4_096, encoding=_CL),
    "gpt-4-1106-preview": _spec(128_000, 4_096, encoding=_CL),
    "gpt-4": _spec(8_192, encoding=_CL), "gpt-4-32k": _spec(32_768, encoding=_CL),
    # GPT-3.5 Turbo (cl100k_base): 16,385 / 4,096 (LiteLLM, OpenRouter, Azure).
    "gpt-3.5-turbo": _spec(16_385, 4_096, encoding=_CL),
    "gpt-3.5-turbo-16k": _spec(16_385, 4_096, encoding=_CL),
}

#: Ids that do not resolve, with why (``model_spec`` returns None; ``UnknownModel``
#: carries the reason). Pass ``budget=`` for them, or ``tokens.register_model``.
EXCLUDED: dict[str, str] = {
    "gpt-5.1-mini": "not a model OpenAI serves (the SDK keeps the id for compatibility)",
    "gpt-daybreak-blue-latest": "a trusted-access alias whose limits are not published",
    "gpt-daybreak-red-latest": "a trusted-access alias whose limits are not published",
    "gpt-5.6-cyber": "a trusted-access cyber model whose limits are not published",
    "gpt-6-cyber": "a trusted-access cyber model whose limits are not published",
    "gpt-rosalind-research": "a trusted-access life-sciences model whose limits are not "
                             "published",
    "gpt-6-rosalind": "a trusted-access life-sciences model whose limits are not published",
    "gpt-6.2-astra-law": "no limits are published for this model",
    "o1-preview": "shut down on 2025-07-28; its limits are no longer documented",
    # In the model literals of openai releases before 2.x (the oldest supported is 1.66).
    "gpt-4.5-preview": "shut down in July 2025 (the GPT-4.5 research preview); its limits "
                       "are no longer documented",
    "gpt-4-vision-preview": "shut down on 2024-12-06; its limits are no longer documented",
    # The old MMDD snapshots did not share their alias's window (0613: 4,096, 0301 too):
    # the snapshot rule would price them wrong, so they are refused instead.
    "gpt-3.5-turbo-0301": "shut down on 2024-09-13; a 4K snapshot, not gpt-3.5-turbo's 16K",
    "gpt-3.5-turbo-0613": "shut down on 2024-09-13; a 4K snapshot, not gpt-3.5-turbo's 16K",
}

#: Announced shutdown dates by exact id (OpenAI's deprecations page, as the SDK's model
#: literals list them); a snapshot without its own entry takes its base's.
SHUTDOWN: dict[str, date] = {}


def _shutdowns(when: str, ids: str) -> None:
    for model in ids.split():
        SHUTDOWN[model] = date.fromisoformat(when)


_shutdowns("2027-04-01", "gpt-5.4-nano gpt-5.4-nano-2026-03-17 gpt-5.1 gpt-5.1-2025-11-13")
_shutdowns("2026-08-10", "gpt-5.3-chat-latest gpt-5.2-chat-latest")
_shutdowns("2026-07-23", "gpt-5.1-codex gpt-5.1-chat-latest gpt-5-chat-latest "
                         "gpt-4o-search-preview gpt-4o-mini-search-preview "
                         "gpt-4o-search-preview-2025-03-11 gpt-4o-mini-search-preview-2025-03-11")
_shutdowns("2026-12-11", "gpt-5 gpt-5-mini gpt-5-nano gpt-5-2025-08-07 gpt-5-mini-2025-08-07 "
                         "gpt-5-nano-2025-08-07 o3 o3-2025-04-16")
_shutdowns("2027-01-14", "gpt-4.1 gpt-4.1-mini gpt-4.1-2025-04-14 gpt-4.1-mini-2025-04-14 "
                         "gpt-4o gpt-4o-2024-11-20 gpt-4o-2024-08-06 gpt-4o-mini "
                         "gpt-4o-mini-2024-07-18")
_shutdowns("2026-10-23", "gpt-4.1-nano gpt-4.1-nano-2025-04-14 o4-mini o4-mini-2025-04-16 "
                         "o3-mini o3-mini-2025-01-31 o1 o1-2024-12-17 gpt-4o-2024-05-13 "
                         "gpt-4-turbo gpt-4-turbo-2024-04-09 gpt-4-1106-preview gpt-4 "
                         "gpt-4-0613 gpt-3.5-turbo gpt-3.5-turbo-0125")
_shutdowns("2025-07-28", "o1-preview o1-preview-2024-09-12")
_shutdowns("2025-10-27", "o1-mini o1-mini-2024-09-12")
_shutdowns("2027-01-20", "gpt-audio-mini gpt-audio-mini-2025-12-15")
_shutdowns("2026-05-07", "gpt-4o-audio-preview gpt-4o-audio-preview-2024-12-17 "
                         "gpt-4o-audio-preview-2025-06-03 gpt-4o-mini-audio-preview "
                         "gpt-4o-mini-audio-preview-2024-12-17")
_shutdowns("2025-10-10", "gpt-4o-audio-preview-2024-10-01")
_shutdowns("2026-02-17", "chatgpt-4o-latest")
_shutdowns("2026-02-12", "codex-mini-latest")
_shutdowns("2026-03-26", "gpt-4-0125-preview gpt-4-turbo-preview gpt-4-0314")
_shutdowns("2024-12-06", "gpt-4-vision-preview")
_shutdowns("2025-06-06", "gpt-4-32k gpt-4-32k-0314 gpt-4-32k-0613")
_shutdowns("2024-09-13", "gpt-3.5-turbo-16k gpt-3.5-turbo-0301 gpt-3.5-turbo-0613 "
                         "gpt-3.5-turbo-16k-0613")
_shutdowns("2026-09-28", "gpt-3.5-turbo-1106")

_DATED = re.compile(r"^(?P<base>.+?)-(?:\d{4}-\d{2}-\d{2}|\d{4})$")
_VERSIONED = re.compile(r"^gpt-(?P<major>\d+)(?:\.(?P<minor>\d+))?(?:-(?P<variant>[a-z][\w.-]*))?$")


def _version(name: str) -> tuple[int, int, str] | None:
    match = _VERSIONED.match(name)
    if match is None:
        return None
    return int(match["major"]), int(match["minor"] or 0), match["variant"] or ""


def _by_version(name: str, table: dict[str, ModelSpec]) -> str | None:
    """Rule 5: the newest lower version of the same family and variant."""
    wanted = _version(name)
    if wanted is None:
        return None
    major, minor, variant = wanted
    below = [(version[1], known) for known in table
             if (version := _version(known)) and version[0] == major
             and version[2] == variant and version[1] < minor]
    return max(below)[1] if below else None


def _prefixed(name: str, table: dict[str, ModelSpec]) -> str | None:
    """Rule 6: the longest table id that is a ``NAME-`` prefix of ``name``."""
    return max((known for known in table if name.startswith(known + "-")), key=len,
               default=None)


def resolve(model: str, table: dict[str, ModelSpec] | None = None) -> ModelSpec | None:
    """The spec of ``model`` by the module's rule, or None when it is unknown or excluded."""
    table = MODELS if table is None else table
    name = model.removeprefix("ft:").split(":", 1)[0].lower()
    source: str | None = None
    snapshot_of: str | None = None
    if name in table:
        found = table[name]
    else:
        if name in EXCLUDED:
            return None
        dated = _DATED.match(name)
        base = dated["base"] if dated else name
        if base in EXCLUDED and base not in table:
            return None     # a snapshot of an excluded model is excluded too
        if dated and base in table:
            source = snapshot_of = base
        else:
            source = _by_version(base, table) or _prefixed(base, table)
        if source is None:
            return None
        found = replace(table[source], resolved_from=table[source].resolved_from or source)
    # A snapshot shares its model's announced shutdown unless it has its own; a newer
    # version or a variant found by rule does not inherit one.
    shutdown = SHUTDOWN.get(name) or (SHUTDOWN.get(snapshot_of) if snapshot_of else None)
    return replace(found, shutdown=shutdown) if shutdown != found.shutdown else found


def excluded_reason(model: str) -> str | None:
    """Why ``model`` is refused: it, or the model it is a snapshot of, is in
    ``EXCLUDED`` (None otherwise)."""
    name = model.removeprefix("ft:").split(":", 1)[0].lower()
    dated = _DATED.match(name)
    return EXCLUDED.get(name) or (EXCLUDED.get(dated["base"]) if dated else None)
