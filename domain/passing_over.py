"""When seat suggestions pass over the seats offered to other buyers moments ago. In an on-sale
every buyer is otherwise offered the same best block, and all but one are refused at purchase.
A buyer who asks for seats near others (the spec: "same row first") is not moved away from them
for it: a suggestion passing over offered seats must then be in the rows of the best free ones,
side by side wherever those are. Without `near` the offered block is passed over whatever is
left: offering a party a block offered to someone else moments ago doubled the on-sale's seat
conflicts (README, performance findings), as such a block is usually bought."""

from __future__ import annotations

from collections.abc import Sequence

from domain.inventory.events import SeatRef


def _rows(seats: Sequence[SeatRef]) -> set[tuple[int, str]]:
    return {(seat.section_id, seat.row) for seat in seats}


def together(seats: Sequence[SeatRef]) -> bool:
    """Side by side in one row, as a party wants to sit."""
    if not seats:
        return True
    numbers = sorted(seat.seat_number for seat in seats)
    return len(_rows(seats)) <= 1 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))


def as_good(passing_over: Sequence[SeatRef], best: Sequence[SeatRef]) -> bool:
    """Whether seats chosen near a buyer's, passing over offered ones, do as well as the `best`
    free ones: as many, in the same rows, and side by side wherever the best are."""
    if len(passing_over) < len(best) or (together(best) and not together(passing_over)):
        return False
    return _rows(passing_over) == _rows(best)
