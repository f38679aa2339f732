"""The Stripe simulator's objects on disk (services/dev/stripe_sim.py): Stripe does not forget a
payment because a process died, so a `linjerum run` killed and started again still knows the
PaymentIntents its buyers were paying and still delivers the webhooks it owed. Each change is one
JSON line, `[kind, value]`, appended before the request that made it is answered (a write to
the kernel, which outlives the process); read back at start, then written again compacted."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec

Line = tuple[str, dict[str, Any]]


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def read(self) -> list[Line]:
        """Every line written so far, in order; a line torn by a kill while it was written
        (the last one) is left out."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        lines = []
        for raw in text.splitlines():
            try:
                kind, value = msgspec.json.decode(raw)
            except (msgspec.DecodeError, ValueError):
                continue
            lines.append((kind, value))
        return lines

    def rewrite(self, lines: Iterable[Line]) -> None:
        """Replaces the file with `lines` (whole or not at all), then appends to it."""
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fresh = self.path.with_suffix(".tmp")
        fresh.write_bytes(_encoded(lines))
        fresh.replace(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, lines: Iterable[Line]) -> None:
        assert self._fd is not None, "rewrite() opens the journal"
        data = _encoded(lines)
        if data:
            os.write(self._fd, data)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _encoded(lines: Iterable[Line]) -> bytes:
    """msgspec, not json: the simulator writes an intent and its charge for each request."""
    return b"".join(_encoder.encode(line) + b"\n" for line in lines)


_encoder = msgspec.json.Encoder()
