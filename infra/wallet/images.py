"""The pass's icon and logo, drawn in code: a square of the organization's colour with a
ticket's punched stub, so a pass needs no image files of the partner's."""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Callable

RGB = tuple[int, int, int]

WHITE = (255, 255, 255)


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))


def png(width: int, height: int, pixel: Callable[[int, int], RGB]) -> bytes:
    """An 8-bit RGB PNG; `pixel(x, y)` gives each pixel's (r, g, b)."""
    rows = b"".join(
        b"\0" + b"".join(bytes(pixel(x, y)) for x in range(width)) for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(rows, 9))
        + _chunk(b"IEND", b"")
    )


@functools.lru_cache(maxsize=256)
def ticket_mark(width: int, height: int, color: RGB) -> bytes:
    """The colour with two white half-circle notches on the sides, as on a paper ticket."""
    radius = max(2, height // 6)
    middle = height / 2

    def pixel(x: int, y: int) -> RGB:
        for edge in (0, width - 1):
            if (x - edge) ** 2 + (y - middle) ** 2 <= radius**2:
                return WHITE
        return color

    return png(width, height, pixel)
