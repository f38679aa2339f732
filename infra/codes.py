"""Unguessable codes (ticket codes, access codes, simulated Stripe ids) from one read of the
operating system's random source per code: `secrets.choice` per character costs a system call
each, and an on-sale makes a dozen codes per purchase."""

from __future__ import annotations

import functools
import secrets


@functools.cache
def _table(alphabet: str) -> dict[int, str | None]:
    """A byte-to-character translation that keeps every character equally likely: bytes that
    would favour the first characters (256 is rarely a multiple of the alphabet's size) are
    deleted rather than folded."""
    size = len(alphabet)
    if not 1 < size <= 256:
        raise ValueError("the alphabet needs 2 to 256 characters")
    usable = 256 - 256 % size
    return {b: alphabet[b % size] if b < usable else None for b in range(256)}


def random_code(alphabet: str, length: int) -> str:
    """`length` characters of `alphabet`, each uniformly drawn."""
    table = _table(alphabet)
    code = ""
    while len(code) < length:
        code += secrets.token_bytes(length).decode("latin-1").translate(table)
    return code[:length]
