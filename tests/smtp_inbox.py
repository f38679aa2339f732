"""A real SMTP server for tests: aiosmtpd on a loopback port, keeping what it accepts."""

from __future__ import annotations

import asyncio
import contextlib
import email
from collections.abc import Iterator
from email import policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller


class Inbox:
    """An aiosmtpd handler that keeps every accepted message and answers "451 try again" to the
    first `refuse_first` deliveries."""

    def __init__(self, refuse_first: int = 0, delay: float = 0.0) -> None:
        self.messages: list[EmailMessage] = []
        self.refused = 0
        self._refuse_first = refuse_first
        self._delay = delay

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        await asyncio.sleep(self._delay)
        if self.refused < self._refuse_first:
            self.refused += 1
            return "451 4.3.0 try again"
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for message in self.messages]


@contextlib.contextmanager
def smtp_server(inbox: Inbox, port: int, **smtp_options: Any) -> Iterator[None]:
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **smtp_options)
    controller.start()
    try:
        yield
    finally:
        controller.stop()
