"""The read-send-print loop of ``convotree chat`` and its slash commands."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from rich.console import Console

from ..chat import Chat, ChatStream
from ..errors import ConvotreeError
from ..models import Node
from ..store import Store
from ._common import CliError, scrub
from ._render import tree_lines
from ._resolve import resolve_node, short

__all__ = ["HELP", "Session"]

HELP = """commands:
  /regen            a new answer to the last prompt (a sibling branch)
  /edit TEXT        replace the last prompt with TEXT (a sibling branch) and answer it
  /fork NODE        continue from NODE (an id or unique part of one): the next message forks there
  /branches         the branches (leaves) of this conversation
  /switch NODE      same as /fork: move the conversation to NODE
  /tree             the whole tree, the current branch marked
  /help, /quit      this text; leave (Ctrl-D works too)"""


class Session:
    """The read-send-print loop, and the slash commands."""

    def __init__(self, store: Store, chat: Chat, conversation_id: uuid.UUID, out: Console,
                 err: Console) -> None:
        self.store, self.chat, self.out, self.err = store, chat, out, err
        self.conversation_id = conversation_id
        self.commands: dict[str, Callable[[str], None]] = {
            "/regen": self.regen, "/edit": self.edit, "/fork": self.fork,
            "/switch": self.fork, "/branches": self.branches, "/tree": self.tree,
            "/help": lambda _: self.out.print(HELP),
        }

    def loop(self) -> None:
        while True:
            try:
                line = input("you> ").strip()
            except EOFError:
                self.out.print()
                return
            if not line:
                continue
            if line in ("/quit", "/exit"):
                return
            name, _, rest = line.partition(" ")
            try:
                if name.startswith("/"):
                    command = self.commands.get(name)
                    if command is None:
                        self.err.print(f"unknown command {name}; /help lists them")
                        continue
                    command(rest.strip())
                else:
                    self.show(self.chat.stream(self.conversation_id, line))
            except (ConvotreeError, CliError) as exc:
                self.err.print(scrub(f"error: {exc}"))
            except Exception as exc:   # the API's errors: say so, keep the session
                # scrub: an API error may quote the key or the endpoint's URL.
                self.err.print(scrub(f"the API call failed ({type(exc).__name__}: {exc}); "
                                     "your message is stored: /regen after it to try again"))

    def show(self, stream: ChatStream) -> None:
        self.out.print("ai> ", end="")
        with stream:
            for delta in stream:
                self.out.print(delta, end="", markup=False, highlight=False)
        self.out.print()
        node = stream.node
        if node is not None:
            self.out.print(f"[dim]{short(node.id)} · {node.input_tokens} in / "
                           f"{node.output_tokens} out tokens[/dim]")

    def _current(self) -> Node:
        node = self.store.current(self.conversation_id)
        if node is None:
            raise CliError("nothing to do yet: send a message first")
        return node

    def regen(self, _: str) -> None:
        node = self._current()
        if node.role == "assistant" and node.parent_id is not None:
            prompt = self.store.node(self.conversation_id, node.parent_id)
        elif node.role == "user":
            prompt = node   # the last call failed: answer the stored prompt
        else:
            raise CliError("/regen needs an answer or a prompt at the current node")
        self.show(self.chat.stream_reply(prompt))

    def edit(self, text: str) -> None:
        if not text:
            raise CliError("/edit needs the new text of the prompt")
        node = self._current()
        prompt = node if node.role == "user" else (
            self.store.node(self.conversation_id, node.parent_id) if node.parent_id else None)
        if prompt is None or prompt.role != "user":
            raise CliError("the current node does not answer a prompt to edit")
        edited = self.store.edit(prompt, text)
        self.show(self.chat.stream_reply(edited))

    def fork(self, text: str) -> None:
        if not text:
            raise CliError("/fork needs a node id (see /tree or /branches)")
        node = resolve_node(self.store, self.conversation_id, text)
        self.store.set_current(self.conversation_id, node)
        self.out.print(f"now at {short(node.id)} ({node.role}): the next message goes under it")

    def branches(self, _: str) -> None:
        current = self.store.get_conversation(self.conversation_id).current_node_id
        for leaf in self.store.leaves(self.conversation_id):
            mark = " ← current" if leaf.id == current else ""
            text = (leaf.content or "").replace("\n", " ")[:60]
            self.out.print(f"{short(leaf.id)}  depth {leaf.depth}  {leaf.role}: {text}{mark}",
                           markup=False)

    def tree(self, _: str) -> None:
        current = self.store.get_conversation(self.conversation_id).current_node_id
        for line in tree_lines(self.store.tree(self.conversation_id), current,
                               self.out.width):
            self.out.print(line)
