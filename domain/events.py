"""The envelope every domain event shares, and the registry that turns stored type names back
into typed events, so replay never depends on pickled or ad-hoc dicts."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from domain import upcasting


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every domain event; subclasses register themselves under their class name.
    A type whose shape changes raises its `schema_version` and registers an upcaster from the
    old one (domain/upcasting.py): stored events keep the version they were written in."""

    registry: ClassVar[dict[str, type[Event]]] = {}
    schema_version: ClassVar[int] = 1

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__name__
        if name in Event.registry and Event.registry[name] is not cls:
            raise TypeError(f"event type {name} registered twice")
        Event.registry[name] = cls

    @property
    def type_name(self) -> str:
        return type(self).__name__


class UnknownEventType(LookupError):
    """A stored event names a type this code base does not know (newer writer, older reader)."""


_encoder = msgspec.json.Encoder()


def encode_event(event: Event) -> bytes:
    return _encoder.encode(event)


def _event_type(type_name: str) -> type[Event]:
    try:
        return Event.registry[type_name]
    except KeyError:
        raise UnknownEventType(type_name) from None


def current_data(type_name: str, data: bytes | str, schema_version: int) -> bytes | str:
    """A stored event's data (JSON) in its type's current shape: as stored when it was written
    in that shape, else upcast; raises SchemaVersionError when it cannot be."""
    current = _event_type(type_name).schema_version
    if schema_version == current:
        return data
    raw = upcasting.UPCASTERS.upcast(type_name, msgspec.json.decode(data), schema_version, current)
    return _encoder.encode(raw)


def decode_event(type_name: str, data: bytes | str, *, schema_version: int) -> Event:
    """A stored event as its type's current shape (`schema_version`: the one it was stored in)."""
    cls = _event_type(type_name)
    return msgspec.json.decode(current_data(type_name, data, schema_version), type=cls)
