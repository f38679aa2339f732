"""Upcasters: an event stored in an older shape is read as its type's current shape, step by
step, and a version the code cannot reach is an error, never a silent misreading."""

from __future__ import annotations

from typing import ClassVar

import msgspec
import pytest

from domain import upcasting
from domain.events import Event, current_data, decode_event, encode_event
from domain.upcasting import SchemaVersionError, Upcasters


class TurnstileCounted(Event, frozen=True):
    """Version 1 was `{"count": n}`, version 2 `{"visitors": n}`, version 3 adds the gate."""

    schema_version: ClassVar[int] = 3
    visitors: int
    gate: str


def _chain() -> Upcasters:
    chain = Upcasters()
    chain.register("TurnstileCounted", 1, lambda raw: {"visitors": raw["count"]})
    chain.register("TurnstileCounted", 2, lambda raw: {**raw, "gate": "main"})
    return chain


@pytest.fixture
def chain(monkeypatch: pytest.MonkeyPatch) -> Upcasters:
    registry = _chain()
    monkeypatch.setattr(upcasting, "UPCASTERS", registry)
    return registry


def test_a_chain_takes_each_old_version_to_the_current_one() -> None:
    chain = _chain()
    assert chain.upcast("TurnstileCounted", {"count": 4}, 1, 3) == {"visitors": 4, "gate": "main"}
    assert chain.upcast("TurnstileCounted", {"visitors": 4}, 2, 3) == {
        "visitors": 4,
        "gate": "main",
    }
    assert chain.upcast("TurnstileCounted", {"visitors": 4, "gate": "b"}, 3, 3) == {
        "visitors": 4,
        "gate": "b",
    }


def test_a_version_newer_than_the_code_is_refused() -> None:
    with pytest.raises(SchemaVersionError, match="version 4 is newer"):
        _chain().upcast("TurnstileCounted", {"visitors": 4, "gate": "b", "lane": 2}, 4, 3)


def test_a_missing_step_is_refused() -> None:
    partial = Upcasters()
    partial.register("TurnstileCounted", 2, lambda raw: {**raw, "gate": "main"})
    with pytest.raises(SchemaVersionError, match="from version 1 to 2"):
        partial.upcast("TurnstileCounted", {"count": 4}, 1, 3)


def test_a_step_is_registered_once() -> None:
    with pytest.raises(ValueError, match="already has an upcaster"):
        _chain().register("TurnstileCounted", 1, lambda raw: raw)


def test_decoding_applies_the_registry(chain: Upcasters) -> None:
    assert decode_event("TurnstileCounted", b'{"count": 7}', schema_version=1) == TurnstileCounted(
        visitors=7, gate="main"
    )
    current = encode_event(TurnstileCounted(visitors=7, gate="b"))
    assert current_data("TurnstileCounted", current, 3) is current
    with pytest.raises(SchemaVersionError):
        decode_event("TurnstileCounted", current, schema_version=9)


def test_without_an_upcaster_an_old_shape_is_an_error_not_a_guess() -> None:
    with pytest.raises(SchemaVersionError):
        decode_event("TurnstileCounted", b'{"count": 7}', schema_version=1)
    # What decoding the old shape as the current one would do: fail on a missing field at best.
    with pytest.raises(msgspec.ValidationError):
        decode_event("TurnstileCounted", b'{"count": 7}', schema_version=3)
