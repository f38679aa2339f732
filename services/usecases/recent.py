"""A process's memory of what it did lately (the openings it stored, the ticket ids of the
purchases it was asked about), capped: the oldest is forgotten first, as it is seldom asked for
again and can always be read from the event store."""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


class Recent(dict[K, V]):
    """A dict of at most `most` entries, in the order they were first kept."""

    def __init__(self, most: int) -> None:
        super().__init__()
        self._most = most

    def keep(self, key: K, value: V) -> V:
        if key not in self and len(self) >= self._most:
            del self[next(iter(self))]
        self[key] = value
        return value
