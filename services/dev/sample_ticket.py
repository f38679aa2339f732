"""A ticket page as the demo's Aarhus Teater prints one for Hamlet: a seated ticket with Danish
text, for reading a rendered PDF back and for timing the renderer."""

from __future__ import annotations

from datetime import UTC, datetime

from infra.tickets_pdf import TicketPage

SEATED_TICKET = TicketPage(
    organization_name="Aarhus Teater",
    organization_color="#8B1E3F",
    product_name="Hamlet – Prins af Danmark",
    starts_at=datetime(2026, 5, 1, 17, tzinfo=UTC),
    doors_open=datetime(2026, 5, 1, 16, 15, tzinfo=UTC),
    visit_date=None,
    venue_name="Store Scene",
    venue_address="Teatergaden 1, 8000 Aarhus C",
    section_name="Parket",
    row="A",
    seat_number=12,
    holder_name="Søren Ærø Åberg",
    ticket_type_name="Voksen",
    price_cents=35000,
    currency="DKK",
    ticket_code="LJ-7F3K-9Q2X",
    scan_code="LJ7F3K9Q2XB4M8TW",
)
