"""``convotree chat``: an interactive chat at the terminal, on any branch.

Lines you type are sent (streamed back) with ``convotree.Chat``; lines starting with
``/`` are commands to regenerate, edit, fork from a node, switch branches and look at
the tree. Everything is stored as it happens, so leaving and coming back with
``convotree chat ID`` resumes the conversation where it was.
"""

from __future__ import annotations

import argparse
import os

from ._common import CliError, Subparsers, add_db_options, console, err_console, open_store

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "chat", help="chat with an OpenAI model at the terminal, on any branch",
        description="Chat at the terminal through the OpenAI API. Starts a new conversation, "
                    "or resumes CONVERSATION at its current node. Needs OPENAI_API_KEY, or "
                    "--base-url for a compatible server. Type /help for the commands.")
    parser.add_argument("conversation", nargs="?", metavar="CONVERSATION",
                        help="the conversation to resume (id or unique part); default: new")
    parser.add_argument("--model", default=os.environ.get("CONVOTREE_MODEL", "gpt-4o-mini"),
                        help="the model (default: $CONVOTREE_MODEL, else gpt-4o-mini)")
    parser.add_argument("--api", choices=("chat", "responses"), default="chat",
                        help="Chat Completions or the Responses API (default: chat)")
    parser.add_argument("--base-url", metavar="URL",
                        help="an OpenAI-compatible endpoint (default: $OPENAI_BASE_URL or "
                             "OpenAI's)")
    parser.add_argument("--budget", type=int, metavar="TOKENS",
                        help="prompt budget (default: the model's context window)")
    parser.add_argument("--system", metavar="TEXT",
                        help="a system message for a new conversation")
    add_db_options(parser)
    parser.set_defaults(handler=run)


def _client(args: argparse.Namespace) -> object:
    key = os.environ.get("OPENAI_API_KEY")
    base_url = args.base_url or os.environ.get("OPENAI_BASE_URL")
    if not key and not base_url:
        raise CliError("convotree chat needs OPENAI_API_KEY in the environment (or --base-url "
                       "for an OpenAI-compatible server that needs no key)")
    import openai  # only this command needs the client

    return openai.OpenAI(api_key=key or "unused", base_url=base_url)


def run(args: argparse.Namespace) -> int:
    from ..chat import Chat
    from ._chat_session import Session
    from ._resolve import resolve_conversation

    client = _client(args)
    out, err = console(args), err_console()
    with open_store(args, create=True) as store:
        if args.conversation:
            conversation_id = resolve_conversation(store, args.conversation)
        else:
            conversation_id = store.create_conversation(title="convotree chat").id
            if args.system:
                store.append(conversation_id, role="system", content=args.system)
        chat = Chat(store, client, model=args.model, api=args.api, budget=args.budget)
        session = Session(store, chat, conversation_id, out, err)
        out.print(f"conversation {conversation_id} · {args.model} · /help for commands")
        session.loop()
    return 0
