"""What PostgreSQL's text and jsonb can hold: every string except those with a NUL character
or an unpaired surrogate. Such a string fails the whole statement it is in, and with it every
other row or event written by that statement, so input is checked at the edges and what is only
recorded (a log row, an error message) is made storable."""

from __future__ import annotations

import re

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> bool:
    return _UNSTORABLE.search(text) is None


def make_storable(text: str) -> str:
    """`text` with each character PostgreSQL cannot hold replaced by U+FFFD."""
    return _UNSTORABLE.sub("\ufffd", text)
