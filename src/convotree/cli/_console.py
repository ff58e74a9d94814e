"""The command line's rich console (imported only when a command prints)."""

from __future__ import annotations

import os
import sys

from rich.console import Console

__all__ = ["QuietPipeConsole"]


class QuietPipeConsole(Console):
    """rich's console, but a reader that leaves the pipe (``convotree show … | head``)
    ends the command quietly with status 0, as ``main`` does for ``BrokenPipeError``
    (rich's default exits with status 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())   # nothing more reaches the closed pipe
        raise BrokenPipeError
