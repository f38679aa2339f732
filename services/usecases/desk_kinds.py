"""What a sales desk (services/usecases/desk.py) keeps: an aggregate's state cached as of a
version, and the kind of aggregate it sells from, whose pure functions of the domain build,
evolve, copy and decide that state. Apart from the desk's batching, so that its snapshots, the
inventories the sales desks sell (services/usecases/sales_desks.py) and the tests' own kinds
say what a desk keeps without it."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from domain.events import Event
from domain.sale_commands import Decision

S = TypeVar("S")


@dataclass
class Cached(Generic[S]):
    """An aggregate's state as of `version`, evolved in place."""

    state: S
    version: int = 0


@dataclass(frozen=True)
class Aggregate(Generic[S]):
    """How a desk builds, evolves and copies an aggregate's state."""

    initial: Callable[[], S]
    evolve: Callable[[S, Event], S]
    clone: Callable[[S], S]


@dataclass(frozen=True)
class Kind(Aggregate[S]):
    """The desk's own aggregate, and how a command is decided on it (with the states of the
    companion streams the command names, by stream id: each of them a `companion`)."""

    decide: Callable[[Any, S, Mapping[str, Any]], Decision]
    companion: Aggregate[Any] | None = None
    # What a command must have and no other may take too (the seats its buyer chose): pledged
    # while a forecast purchase creates its PaymentIntent (services/usecases/desk_pledges.py).
    claims: Callable[[Any], frozenset[Hashable]] | None = None
