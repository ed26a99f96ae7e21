"""The live one-line status of long-running commands (``dev``, ``simulate``)."""

from __future__ import annotations

from typing import TextIO


class Status:
    """The live status line: rewritten in place on a terminal, else a line per change."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self._previous = ""

    def show(self, text: str) -> None:
        if self.tty:
            self.out.write("\r\x1b[2K" + text)
            self.out.flush()
        elif text != self._previous:
            self.out.write(text + "\n")
            self.out.flush()
        self._previous = text

    def end(self) -> None:
        if self.tty and self._previous:
            self.out.write("\n")
            self.out.flush()
