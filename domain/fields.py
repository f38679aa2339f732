"""What every catalog command shares: value types that refuse unknown fields, and checks that
name the field they refuse, so a partner's 422 says which field to fix whichever aggregate
decides the command."""

from __future__ import annotations

import re
from datetime import datetime

import msgspec

from domain.errors import InvalidCommand

SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*\Z")
COLOR = re.compile(r"^#[0-9A-Fa-f]{6}\Z")
# What a person's name printed on a ticket or shown at a gate must not carry: control characters
# (a terminal's escapes, line breaks) and the direction overrides and isolates that make a name
# read as another.
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


class Struct(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Value types of the catalog: immutable, strict about unknown fields."""


def require(condition: bool, field: str, detail: str) -> None:
    if not condition:
        raise InvalidCommand(detail, field)


def aware(value: datetime | None, field: str) -> None:
    require(value is None or value.tzinfo is not None, field, f"{field} must carry a timezone")


def text(value: str, field: str, limit: int = 200) -> None:
    """A name or title: one line of printable text (a NUL or a lone surrogate, which no
    PostgreSQL text holds, failed the command's append with the database's traceback)."""
    require(bool(value.strip()), field, f"{field} must not be empty")
    require(len(value) <= limit, field, f"{field} is longer than {limit} characters")
    printable(value, field)


def printable(value: str | None, field: str) -> None:
    require(
        value is None or _UNPRINTABLE.search(value) is None,
        field,
        "must not contain control characters or text direction overrides",
    )


def slug(value: str, field: str = "slug") -> None:
    require(
        bool(SLUG.match(value)) and len(value) <= 100,
        field,
        f"{field} must be lowercase letters, digits and single hyphens",
    )
