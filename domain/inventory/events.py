"""What is taken from an event's seats and ticket types, or an attraction's days: holds made
by purchases and their release. Recorded on the event's (or attraction's) own stream, so the
optimistic concurrency of that one stream is what keeps a seat from being sold twice."""

from __future__ import annotations

from datetime import date, datetime

import msgspec

from domain.events import Event


class SeatRef(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    section_id: int
    row: str
    seat_number: int


class HeldSeat(SeatRef, frozen=True, kw_only=True):
    ticket_type_id: int


class SeatsHeld(Event, frozen=True):
    """Seats and ticket-type counts taken by one purchase (counts include the seated ones)."""

    event_id: int
    purchase_token: str
    seats: list[HeldSeat]
    counts: dict[int, int]
    expires_at: datetime


class SeatsReleased(Event, frozen=True):
    event_id: int
    purchase_token: str
    seats: list[HeldSeat]
    counts: dict[int, int]
    reason: str


class AttractionTicketsHeld(Event, frozen=True):
    attraction_id: int
    purchase_token: str
    visit_date: date | None
    counts: dict[int, int]
    expires_at: datetime


class AttractionTicketsReleased(Event, frozen=True):
    attraction_id: int
    purchase_token: str
    visit_date: date | None
    counts: dict[int, int]
    reason: str


class SeatsReturned(Event, frozen=True):
    """Part of a purchase's hold given back (its refunded tickets' seats and counts): the rest
    stays held by the purchase."""

    event_id: int
    purchase_token: str
    seats: list[HeldSeat]
    counts: dict[int, int]
    reason: str


class AttractionTicketsReturned(Event, frozen=True):
    """Part of a purchase's places on a day given back; the rest stays held."""

    attraction_id: int
    purchase_token: str
    visit_date: date | None
    counts: dict[int, int]
    reason: str
