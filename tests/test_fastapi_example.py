"""examples/fastapi_app.py works as a service: driven through an ASGI client, offline
(against convotree's local fake OpenAI server), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import httpx  # the dev extra: FastAPI's and httpx's ASGI client
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fastapi_app.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_fastapi_example_serves_a_branching_chat(
        db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVOTREE_URL", db_url)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    example = _load()

    async def scenario() -> None:
        app = example.app
        transport = httpx.ASGITransport(app=app)
        async with example.lifespan(app), httpx.AsyncClient(
                transport=transport, base_url="http://test") as http:
            tenant = {"x-tenant": "fastapi-test"}
            conv = (await http.post("/conversations", json={"title": "Lisbon"},
                                    headers=tenant)).json()
            base = f"/conversations/{conv['id']}"
            first = (await http.post(f"{base}/messages", json={"content": "Plan a trip"},
                                     headers=tenant)).json()
            assert first["role"] == "assistant" and first["content"].startswith("Notes:")
            three = (await http.post(f"{base}/messages", headers=tenant, json={
                "content": "Three days", "parent": first["id"]})).json()
            five = (await http.post(f"{base}/messages", headers=tenant, json={
                "content": "Five days", "parent": first["id"]})).json()
            again = (await http.post(f"{base}/regenerate", headers=tenant,
                                     json={"answer": five["id"]})).json()
            assert again["parent_id"] == five["parent_id"] and again["id"] != five["id"]
            leaves = (await http.get(f"{base}/branches", headers=tenant)).json()
            assert {leaf["id"] for leaf in leaves} == {three["id"], five["id"], again["id"]}
            tree = (await http.get(f"{base}/tree", headers=tenant)).json()
            assert len(tree) == 7
            # Another tenant cannot see it; an unknown conversation is a 404.
            other = await http.get(f"{base}/tree", headers={"x-tenant": "someone-else"})
            assert other.status_code == 404
            missing = await http.get(
                "/conversations/01a2a2a2-0000-7000-8000-000000000000/branches",
                headers=tenant)
            assert missing.status_code == 404

    asyncio.run(scenario())
