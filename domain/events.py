"""The envelope every domain event shares, and the registry that turns stored type names back
into typed events, so replay never depends on pickled or ad-hoc dicts."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every domain event; subclasses register themselves under their class name."""

    registry: ClassVar[dict[str, type[Event]]] = {}

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


def decode_event(type_name: str, data: bytes | str) -> Event:
    try:
        cls = Event.registry[type_name]
    except KeyError:
        raise UnknownEventType(type_name) from None
    return msgspec.json.decode(data, type=cls)
