"""A small FastAPI service on convotree's async API: branching chats over HTTP.

    CONVOTREE_URL=sqlite:///chat.db uvicorn examples.fastapi_app:app     # with a key: OpenAI
    python examples/fastapi_app.py                                        # offline demo

The engine, the store (schema checked or upgraded once) and the OpenAI client are made
once, in the app's lifespan; every request gets the store for its tenant
(``with_tenant``: a view, no query) and an ``AsyncChat``. No connection is held while
the model answers: each database step is its own short transaction. Without
``OPENAI_API_KEY`` the app talks to convotree's local fake server
(``convotree.testing.FakeOpenAI``), so it runs offline.

Endpoints:
    POST /conversations                      {"title": ...}          -> the conversation
    POST /conversations/{cid}/messages       {"content", "parent"?}  -> the stored answer
    POST /conversations/{cid}/regenerate     {"answer"}              -> a sibling answer
    GET  /conversations/{cid}/branches                               -> the leaves
    GET  /conversations/{cid}/tree                                   -> every node
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Annotated, Any

import openai
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import convotree
from convotree.testing import FakeOpenAI

MODEL = os.environ.get("CONVOTREE_MODEL", "gpt-4o-mini")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with AsyncExitStack() as stack:
        url = os.environ.get("CONVOTREE_URL", "sqlite:///convotree-fastapi.db")
        engine = convotree.create_async_engine(url)
        stack.push_async_callback(engine.dispose)
        # Create or upgrade the schema once, at start-up.
        store = await convotree.AsyncStore.open(engine, create=True)
        if os.environ.get("OPENAI_API_KEY"):
            client = openai.AsyncOpenAI()
        else:   # offline: the local server that speaks OpenAI's wire format
            server = stack.enter_context(FakeOpenAI())
            client = server.async_client()
        app.state.store, app.state.client = store, client
        yield


app = FastAPI(title="convotree chat", lifespan=lifespan)


async def chat_for(request: Request) -> convotree.AsyncChat:
    """Per request: the store for the caller's tenant (here from a header; in a real
    service, from authentication) and a chat on it."""
    store = request.app.state.store.with_tenant(request.headers.get("x-tenant", ""))
    return convotree.AsyncChat(store, request.app.state.client, model=MODEL)


ChatDep = Annotated[convotree.AsyncChat, Depends(chat_for)]


class NewConversation(BaseModel):
    title: str | None = None


class NewMessage(BaseModel):
    content: str
    parent: uuid.UUID | None = None   # any node: a fork if it has children already


class Regenerate(BaseModel):
    answer: uuid.UUID


def _node(node: convotree.Node) -> dict[str, Any]:
    return {"id": str(node.id), "parent_id": str(node.parent_id) if node.parent_id else None,
            "role": node.role, "content": node.content, "depth": node.depth,
            "kind": node.kind, "input_tokens": node.input_tokens}


@app.exception_handler(convotree.errors.NotFound)
async def not_found(request: Request, exc: convotree.errors.NotFound) -> JSONResponse:
    """An unknown (or another tenant's) conversation or node: 404."""
    return JSONResponse(status_code=404, content={"detail": str(exc)})


@app.exception_handler(convotree.errors.InvalidInput)
async def invalid(request: Request, exc: convotree.errors.InvalidInput) -> JSONResponse:
    """Input convotree refuses (a broken tool-call pair, a NUL byte...): 422."""
    return JSONResponse(status_code=422, content={"detail": str(exc)})


@app.post("/conversations")
async def create_conversation(body: NewConversation, chat: ChatDep) -> dict[str, Any]:
    conv = await chat.store.create_conversation(title=body.title)
    return {"id": str(conv.id), "title": conv.title}


@app.post("/conversations/{cid}/messages")
async def send(cid: uuid.UUID, body: NewMessage, chat: ChatDep) -> dict[str, Any]:
    at = await chat.store.node(cid, body.parent) if body.parent else cid
    return _node(await chat.send(at, body.content))


@app.post("/conversations/{cid}/regenerate")
async def regenerate(cid: uuid.UUID, body: Regenerate, chat: ChatDep) -> dict[str, Any]:
    answer = await chat.store.node(cid, body.answer)
    return _node(await chat.regenerate(answer))


@app.get("/conversations/{cid}/branches")
async def branches(cid: uuid.UUID, chat: ChatDep) -> list[dict[str, Any]]:
    return [_node(leaf) for leaf in await chat.store.leaves(cid)]


@app.get("/conversations/{cid}/tree")
async def tree(cid: uuid.UUID, chat: ChatDep) -> list[dict[str, Any]]:
    return [_node(node) for node in await chat.store.tree(cid)]


async def _demo() -> None:
    """Run the app in-process through an ASGI client and print one branching chat."""
    import httpx

    async with lifespan(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://convotree") as http:
        conv = (await http.post("/conversations", json={"title": "Lisbon"})).json()
        first = (await http.post(f"/conversations/{conv['id']}/messages",
                                 json={"content": "Plan a trip to Lisbon"})).json()
        await http.post(f"/conversations/{conv['id']}/messages",
                        json={"content": "Make it three days", "parent": first["id"]})
        await http.post(f"/conversations/{conv['id']}/messages",
                        json={"content": "Make it five days", "parent": first["id"]})
        leaves = (await http.get(f"/conversations/{conv['id']}/branches")).json()
        print(f"{len(leaves)} branches:", [leaf["content"] for leaf in leaves])


if __name__ == "__main__":
    import asyncio

    asyncio.run(_demo())
