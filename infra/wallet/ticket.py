"""One ticket as both wallets show it: the code on its barcode, the event, the place and the
holder, in the organization's colour."""

from __future__ import annotations

from datetime import date, datetime

import msgspec

GENERAL_ADMISSION = "General admission"


class WalletTicket(msgspec.Struct, frozen=True, kw_only=True):
    ticket_id: int
    # How many times the ticket was transferred: each transfer is a new code and a new pass.
    generation: int
    code: str
    voided: bool
    organization_name: str
    color: str  # #RRGGBB
    # The event or attraction, as `event-<id>` or `attraction-<id>` (the Google class).
    product_key: str
    product_name: str
    ticket_type_name: str
    starts_at: datetime | None
    visit_date: date | None
    venue_name: str
    venue_address: str | None
    section_name: str | None
    row: str | None
    seat_number: int | None
    holder_name: str | None
    scannable_until: datetime | None

    @property
    def serial(self) -> str:
        return f"{self.ticket_id}-{self.generation}"

    @property
    def seated(self) -> bool:
        return self.seat_number is not None


def rgb(color: str) -> tuple[int, int, int]:
    """#RRGGBB as numbers."""
    value = int(color.lstrip("#"), 16)
    return value >> 16 & 0xFF, value >> 8 & 0xFF, value & 0xFF


def text_color(color: str) -> tuple[int, int, int]:
    """Black or white, whichever reads better on `color` (by its relative luminance)."""
    r, g, b = rgb(color)
    return (0, 0, 0) if 0.2126 * r + 0.7152 * g + 0.0722 * b > 150 else (255, 255, 255)
