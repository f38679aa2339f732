"""Checking the seats a buyer chose against a venue's seat map and the seats already taken.
Pure, so the partner API's seat validation (against the availability read model) and POST
/purchases (against the event aggregate's own state) refuse seats by the very same rules; a
seat that does not exist, lies where its ticket type may not go or is chosen twice is the
caller's mistake (InvalidCommand), a taken one a conflict."""

from __future__ import annotations

from collections.abc import Mapping, Sequence, Set

from domain.catalog import TicketType
from domain.errors import InvalidCommand
from domain.inventory.events import SeatRef
from domain.seating import SeatKey, seat_key
from domain.venues import Section


def check_seat(sections: Mapping[int, Section], seat: SeatRef, field: str) -> None:
    """The seat exists in the venue (a seated section, a row of it, a number in the row)."""
    section = sections.get(seat.section_id)
    rows = section.rows if section is not None and section.seating_mode == "seated" else []
    if not any(
        row.identifier == seat.row and row.start <= seat.seat_number <= row.end for row in rows
    ):
        raise InvalidCommand(
            f"seat {seat.section_id}/{seat.row}/{seat.seat_number} is not in the venue", field
        )


def check_selection(
    sections: Sequence[Section],
    selection: Mapping[int, Sequence[SeatRef]],
    ticket_types: Mapping[int, TicketType],
) -> None:
    """Every ticket type is the event's, every seat exists and lies in a section its ticket
    type may use; else InvalidCommand naming the field, e.g. `selected_seats.45[0]`."""
    by_id = {s.id: s for s in sections}
    for type_id, seats in selection.items():
        ticket_type = ticket_types.get(type_id)
        if ticket_type is None:
            raise InvalidCommand(
                f"ticket type {type_id} is not sold for this event", f"selected_seats.{type_id}"
            )
        for i, seat in enumerate(seats):
            field = f"selected_seats.{type_id}[{i}]"
            check_seat(by_id, seat, field)
            if seat.section_id not in ticket_type.section_ids:
                raise InvalidCommand(
                    f"ticket type {type_id} cannot be used in section {seat.section_id}", field
                )


def check_distinct(selection: Mapping[int, Sequence[SeatRef]]) -> None:
    """No seat is selected twice, in one ticket type or across two: else InvalidCommand naming
    the second mention (types in id order, as a purchase takes them). A malformed request,
    not a conflict: the same selection is refused by the purchase for the same reason."""
    seen: set[SeatKey] = set()
    for type_id, seats in sorted(selection.items()):
        for i, seat in enumerate(seats):
            key = seat_key(seat)
            if key in seen:
                raise InvalidCommand("a seat is selected twice", f"selected_seats.{type_id}[{i}]")
            seen.add(key)


def conflicts(
    sections: Sequence[Section],
    selection: Mapping[int, Sequence[SeatRef]],
    ticket_types: Mapping[int, TicketType],
    taken: Set[SeatKey],
) -> list[SeatRef]:
    """The selected seats that are taken, in the order of the selection. The selection is
    checked first (`check_selection`, `check_distinct`): a seat that does not exist or is
    selected twice is a malformed request, not a conflict."""
    check_selection(sections, selection, ticket_types)
    check_distinct(selection)
    return [seat for seats in selection.values() for seat in seats if seat_key(seat) in taken]


def seated_sections(sections: Sequence[Section], ticket_type: TicketType) -> list[Section]:
    """The seated sections a ticket type may use; none for standing or unseated types."""
    allowed = set(ticket_type.section_ids)
    return [s for s in sections if s.id in allowed and s.seating_mode == "seated"]
