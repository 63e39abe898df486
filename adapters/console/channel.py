"""The console channel: ``esoteric chat`` in a terminal or with piped stdin."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import re
import sys
from typing import TextIO

from core.conversation import ConversationService
from core.errors import EsotericError
from core.messages import Choice, Inbound, Reply, Target, parse_command

log = logging.getLogger(__name__)

CHANNEL = "console"
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def render(reply: Reply) -> str:
    """Plain text for a terminal: markdown markers dropped, choices numbered."""
    text = _BOLD.sub(r"\1", reply.text)
    if reply.choices:
        options = "  ".join(f"[{i}] {c.label}" for i, c in enumerate(reply.choices, 1))
        text += f"\n{options}"
    if reply.citations:
        sources = "; ".join(
            f"{c.source} ({c.heading})" if c.heading else c.source for c in reply.citations
        )
        text += f"\nSources: {sources}"
    return text


class ConsoleChannel:
    """Reads lines, hands each to the core, prints each reply."""

    name = CHANNEL

    def __init__(
        self,
        service: ConversationService,
        out: TextIO | None = None,
        user: str | None = None,
        interactive: bool | None = None,
    ) -> None:
        self.service = service
        self.out = out or sys.stdout
        self.user = user or _local_user()
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        self._choices: tuple[Choice, ...] = ()

    @property
    def chat_key(self) -> str:
        return f"local:{self.user}"

    # -- outbound port ---------------------------------------------------------------------------

    async def send(self, target: Target, reply: Reply) -> None:
        self._choices = reply.choices
        prefix = "esoteric> " if self.interactive else ""
        self.out.write(prefix + render(reply) + "\n\n")
        self.out.flush()

    async def typing(self, target: Target) -> None:
        return None

    # -- inbound -----------------------------------------------------------------------------------

    def to_inbound(self, line: str) -> Inbound:
        text = line.strip()
        if self._choices and text.isdigit() and 1 <= int(text) <= len(self._choices):
            text = self._choices[int(text) - 1].value
        return Inbound(
            channel=CHANNEL,
            chat_key=self.chat_key,
            sender_id=self.user,
            sender_name=self.user,
            text=text,
            command=parse_command(text),
        )

    async def _read_line(self) -> str | None:
        if self.interactive:
            with contextlib.suppress(ImportError):
                import readline  # noqa: F401  (line editing and history for input())
            try:
                return await asyncio.to_thread(input, "you> ")
            except EOFError:
                return None
        line = await asyncio.to_thread(sys.stdin.readline)
        return line if line else None

    async def run(self) -> None:
        if self.interactive:
            self.out.write("Esoteric loan assistant. Type /help for help, Ctrl-D to quit.\n\n")
        while True:
            line = await self._read_line()
            if line is None:
                return
            if not line.strip():
                continue
            try:
                await self.service.handle(self.to_inbound(line))
            except EsotericError as exc:
                print(f"esoteric: could not handle that message: {exc}", file=sys.stderr)


def _local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # getuser raises several types when no login name exists
        return "local"
