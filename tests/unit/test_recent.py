"""A process's capped memory (the openings it stored, the ticket ids it was asked about):
the oldest entry goes first, and keeping a key it holds forgets nothing else."""

from __future__ import annotations

from services.usecases.recent import Recent


def test_the_oldest_is_forgotten_when_full() -> None:
    recent: Recent[str, int] = Recent(2)
    assert recent.keep("a", 1) == 1
    recent.keep("b", 2)
    recent.keep("c", 3)
    assert recent == {"b": 2, "c": 3}


def test_keeping_a_key_again_forgets_nothing_else() -> None:
    recent: Recent[str, int] = Recent(2)
    recent.keep("a", 1)
    recent.keep("b", 2)
    recent.keep("a", 10)
    assert recent == {"a": 10, "b": 2}
    assert recent.pop("a") == 10 and recent.pop("a", None) is None
