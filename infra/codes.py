"""Unguessable codes (ticket codes, access codes, simulated Stripe ids) from one read of the
operating system's random source per code: `secrets.choice` per character costs a system call
each, and an on-sale makes a dozen codes per purchase."""

from __future__ import annotations

import secrets


def random_code(alphabet: str, length: int) -> str:
    """`length` characters of `alphabet`, each uniformly drawn (bytes that would favour the
    first characters are dropped, not folded)."""
    size = len(alphabet)
    if not 1 < size <= 256:
        raise ValueError("the alphabet needs 2 to 256 characters")
    usable = 256 - 256 % size
    chosen: list[str] = []
    while len(chosen) < length:
        chosen.extend(alphabet[b % size] for b in secrets.token_bytes(length) if b < usable)
    return "".join(chosen[:length])
