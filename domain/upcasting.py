"""Upcasters: how an event stored in an older shape becomes the shape its type has now. The store
is append-only, so an event type that changes keeps its old events as they were written; each
change registers one step (type, old version) -> function of the raw JSON object, and a read
applies the steps in a chain up to the type's current version (`Event.schema_version`).

No event type has changed shape since events were first stored (fields were only added, with
defaults, which decode as they are), so the production registry is empty."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Raw = dict[str, Any]
Upcaster = Callable[[Raw], Raw]


class SchemaVersionError(LookupError):
    """A stored event's schema version cannot be turned into the current one: it is newer than
    this code (a newer writer, an older reader), or a step of the chain is missing. Decoding
    it as the current shape could silently misread it, so the read fails instead."""


class Upcasters:
    """The steps from each (type, version) to the next version of that type."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}

    def register(self, type_name: str, from_version: int, step: Upcaster) -> None:
        """`step` turns `type_name`'s raw data of `from_version` into `from_version + 1`."""
        key = (type_name, from_version)
        if key in self._steps:
            raise ValueError(f"{type_name} already has an upcaster from version {from_version}")
        self._steps[key] = step

    def upcast(self, type_name: str, raw: Raw, stored: int, current: int) -> Raw:
        """`raw`, stored at version `stored`, as version `current`."""
        if stored > current:
            raise SchemaVersionError(
                f"{type_name} version {stored} is newer than this code's version {current}"
            )
        for version in range(stored, current):
            step = self._steps.get((type_name, version))
            if step is None:
                raise SchemaVersionError(
                    f"no upcaster for {type_name} from version {version} to {version + 1}"
                )
            raw = step(raw)
        return raw


UPCASTERS = Upcasters()
