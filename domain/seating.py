"""Choosing seats against a venue's seat map and the seats already taken (checking a buyer's
own choice is domain/seat_selection.py). Pure, so the partner API's helper endpoints (against
the availability read model) and POST /purchases (against the event aggregate's own state) pick
seats by the very same rules.

How `best_available` scores seats (what ties remain go to the venue order, then to the lower
seat number, so the answer is deterministic):

- Only seated sections the ticket type may use are considered; taken seats are never offered
  and never more than `count` seats are returned (fewer when fewer are free).
- Venue order: sections by `display_order`, then id; rows front to back as listed in the
  section; a row's centre is the midpoint of its first and last seat number.
- Without `near`, the free seats are cut into blocks (maximal runs of free seats in one row).
  While seats are still needed: if some block can seat all of them, the seats come from the
  first such block (a row already used in this selection first, then venue order, then the
  block whose seats lie closest to the row's centre), as the run of seats closest to the
  centre. Otherwise the largest block is taken whole (ties: a row already used, then venue
  order) and the rest is found the same way. So a party sits together in the frontmost row
  that has room, centred; and when no row has room it is split into as few blocks and rows
  as possible.
- With `near` (the buyer's current selection, which is never returned again), seats are
  taken in tiers until enough are found:
  1. the rows of the near seats: first the free seats joined to a near seat by an unbroken
     run of free seats, then the rest of the row, each by seat-number distance to the
     nearest near seat, then by closeness to the row's centre;
  2. the other rows of the near seats' sections: nearest row first (by row distance), each
     row filled by seat-number distance to the near seats, then closeness to the centre;
  3. the other allowed sections, chosen as without `near`.
  Near seats outside the sections the type may use only stay out of the answer.
- The result is listed in venue order.
"""

from __future__ import annotations

from collections.abc import (
    Callable,
    Collection,
    Hashable,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
    Set,
)
from dataclasses import dataclass
from itertools import islice
from typing import Generic, TypeVar

from domain.inventory.events import SeatRef
from domain.venues import Row, Section

SeatKey = tuple[int, str, int]
FRONTS_KEPT = 8  # the ticket types' rows a snapshot remembers the full front of


def seat_key(seat: SeatRef) -> SeatKey:
    return (seat.section_id, seat.row, seat.seat_number)


def selected_keys(selected: Mapping[int, Iterable[SeatRef]]) -> set[SeatKey]:
    """The seats of a buyer's selection, whatever ticket type each was chosen for."""
    return {seat_key(seat) for seats in selected.values() for seat in seats}


RowKey = tuple[int, str]


class TakenSeats(Set[SeatKey]):
    """Seats grouped by row: finding a row's free runs then costs the row's taken seats, not a
    pass over every taken seat of the venue, and adding a buyer's few seats copies only their
    rows. Immutable, so one snapshot serves every request until the read model changes.

    A snapshot also remembers how many rows at the front of a ticket type's rows are full
    (`full_front`), and one made by `plus` starts from what its base knows: adding seats never
    frees one, and an on-sale fills its rows front to back, so every later choice would walk
    past the same full rows again."""

    __slots__ = ("_base", "_fronts", "_rows", "_size")

    def __init__(self, rows: Mapping[RowKey, Set[int]], base: TakenSeats | None = None) -> None:
        self._rows = rows
        self._size = sum(map(len, rows.values()))
        self._base = base
        self._fronts: _ByIdentity[int] = _ByIdentity(FRONTS_KEPT)

    @classmethod
    def of(cls, seats: Iterable[SeatKey]) -> TakenSeats:
        if isinstance(seats, TakenSeats):
            return seats
        rows: dict[RowKey, set[int]] = {}
        for section_id, row, number in seats:
            rows.setdefault((section_id, row), set()).add(number)
        return cls({key: frozenset(numbers) for key, numbers in rows.items()})

    def plus(self, rows: Mapping[RowKey, Collection[int]]) -> TakenSeats:
        """These seats and the given numbers per row. A row that gains nothing keeps its very
        set, so what is cached by a row's set (`_fills`) still holds."""
        if not rows:
            return self
        merged = dict(self._rows)
        for key, numbers in rows.items():
            had = merged.get(key)
            if had is None:
                merged[key] = frozenset(numbers)
            elif not had.issuperset(numbers):
                merged[key] = _union(frozenset(had), numbers)
        return TakenSeats(merged, base=self)

    def full_front(self, places: Sequence[_Place]) -> int:
        """How many of `places`, from the front, have no free seat."""

        def count() -> int:
            front = 0 if self._base is None else self._base.full_front(places)
            while front < len(places):
                row = places[front].row
                numbers = self.in_row(places[front].section.id, row.identifier)
                if not _fills(numbers, row.start, row.end):
                    break
                front += 1
            return front

        return self._fronts.get(places, None, count)

    def in_row(self, section_id: int, row: str) -> Set[int]:
        return self._rows.get((section_id, row), frozenset())

    def __contains__(self, seat: object) -> bool:
        if not isinstance(seat, tuple) or len(seat) != 3:
            return False
        return seat[2] in self._rows.get((seat[0], seat[1]), ())

    def __iter__(self) -> Iterator[SeatKey]:
        for (section_id, row), numbers in self._rows.items():
            for number in numbers:
                yield (section_id, row, number)

    def __len__(self) -> int:
        return self._size


def by_row(seats: Iterable[SeatKey]) -> dict[RowKey, list[int]]:
    rows: dict[RowKey, list[int]] = {}
    for section_id, row, number in seats:
        rows.setdefault((section_id, row), []).append(number)
    return rows


def seats_of(section: Section) -> list[SeatRef]:
    """Every seat of a section in venue order; a standing section has none."""
    if section.seating_mode != "seated":
        return []
    return [
        SeatRef(section_id=section.id, row=row.identifier, seat_number=n)
        for row in section.rows
        for n in range(row.start, row.end + 1)
    ]


def _in_venue_order(sections: Iterable[Section]) -> list[Section]:
    return sorted(sections, key=lambda s: (s.display_order, s.id))


# ---- choosing seats --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Place:
    """One row of the venue with its rank in venue order."""

    rank: int
    section: Section
    row: Row

    def seat(self, number: int) -> SeatRef:
        return SeatRef(section_id=self.section.id, row=self.row.identifier, seat_number=number)

    def is_free(self, number: int, taken: Set[SeatKey]) -> bool:
        return (self.section.id, self.row.identifier, number) not in taken

    def off_centre(self, number: int) -> int:
        """Distance of a seat from the row's centre, doubled so it stays an integer."""
        return abs(2 * number - self.row.start - self.row.end)


@dataclass(frozen=True)
class _Block:
    """A maximal run of free seats, first..last, in one row."""

    place: _Place
    first: int
    last: int

    @property
    def size(self) -> int:
        return self.last - self.first + 1

    def window(self, need: int) -> range:
        """The `need` adjacent seats of the block closest to the row's centre (lower seat
        numbers on a tie)."""
        row = self.place.row
        ideal = (row.start + row.end - need + 1) // 2
        start = min(max(ideal, self.first), self.last - need + 1)
        return range(start, start + need)

    def off_centre(self, need: int) -> int:
        """Distance of the window's middle from the row's centre, doubled."""
        seats = self.window(need)
        return abs(seats[0] + seats[-1] - self.place.row.start - self.place.row.end)


@dataclass(frozen=True)
class _Places:
    """The rows a ticket type may use, in venue order, and each row's rank by its key."""

    rows: list[_Place]
    rank_of: dict[RowKey, int]


T = TypeVar("T")


class _ByIdentity(Generic[T]):
    """Answers computed from an object that never changes, kept by its identity and a key (the
    object is kept alive here, so its id is never reused while cached), the last `size` of
    them: in an on-sale every decision and auto-select asks about the same few seat maps and
    rows."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._kept: dict[tuple[int, Hashable], tuple[object, T]] = {}

    def get(self, of: object, key: Hashable, compute: Callable[[], T]) -> T:
        kept = self._kept.get((id(of), key))
        if kept is not None and kept[0] is of:
            return kept[1]
        answer = compute()
        if len(self._kept) >= self._size:
            self._kept.clear()
        self._kept[(id(of), key)] = (of, answer)
        return answer


# Building a ticket type's rows walks every row of the venue; the sections list of a seat map
# is the catalog's, the same object for as long as the seat map does not change.
_PLACES: _ByIdentity[_Places] = _ByIdentity(64)
# A row's set of taken seats is shared by every later snapshot that leaves the row as it is,
# and every auto-select walks past the full rows at the front. A desk's own state holds sets
# it changes in place: those are looked at each time.
_FULL: _ByIdentity[bool] = _ByIdentity(4096)
# Every auto-select adds the seats offered moments ago (frozen per row until the row's offers
# change) to the same taken rows.
_UNIONS: _ByIdentity[frozenset[int]] = _ByIdentity(4096)
# Every suggestion of an on-sale sold by several gateways asks for its lane of the seat map.
_LANES: _ByIdentity[dict[RowKey, frozenset[int]]] = _ByIdentity(64)


def _union(had: frozenset[int], numbers: Collection[int]) -> frozenset[int]:
    """The same two frozen rows give the very same merged row, so what is cached by a row's set
    (`_fills`) holds across requests; a row still changing in place is merged afresh."""
    if not isinstance(numbers, frozenset):
        return had.union(numbers)
    return _UNIONS.get(had, numbers, lambda: had.union(numbers))


def _places(sections: Sequence[Section], allowed_section_ids: Sequence[int]) -> _Places:
    def build() -> _Places:
        allowed = set(allowed_section_ids)
        usable = [s for s in sections if s.id in allowed and s.seating_mode == "seated"]
        rows = [(s, row) for s in _in_venue_order(usable) for row in s.rows]
        places = [_Place(rank, section, row) for rank, (section, row) in enumerate(rows)]
        return _Places(places, {(p.section.id, p.row.identifier): p.rank for p in places})

    return _PLACES.get(sections, tuple(allowed_section_ids), build)


def _fills(numbers: Set[int], start: int, end: int) -> bool:
    if len(numbers) <= end - start:
        return False

    def full() -> bool:
        return numbers.issuperset(range(start, end + 1))

    if not isinstance(numbers, frozenset):
        return full()
    return _FULL.get(numbers, (start, end), full)


def _row_blocks(place: _Place, taken: TakenSeats) -> list[_Block]:
    """The gaps between a row's taken seats."""
    start, end = place.row.start, place.row.end
    numbers = taken.in_row(place.section.id, place.row.identifier)
    if _fills(numbers, start, end):
        return []  # sold out: an on-sale fills its rows front to back
    blocks = []
    first = start
    for number in sorted(numbers):
        if number > end:
            break
        if number >= first:
            if number > first:
                blocks.append(_Block(place, first, number - 1))
            first = number + 1
    if first <= end:
        blocks.append(_Block(place, first, end))
    return blocks


def _by_blocks(places: Sequence[_Place], taken: TakenSeats, count: int) -> list[SeatRef]:
    """Whole parties in the best block that seats them; else the largest blocks first.

    In an on-sale this runs for every buyer who asks, so the usual case, a party that fits in
    one row, looks at rows front to back only until one has room, starting after the rows the
    snapshot already knows are full."""
    if count <= 0:
        return []
    blocks: list[_Block] = []
    for place in islice(places, taken.full_front(places), None):
        in_row = _row_blocks(place, taken)
        fitting = [b for b in in_row if b.size >= count]
        if fitting:
            block = min(fitting, key=lambda b: b.off_centre(count))
            return [place.seat(n) for n in block.window(count)]
        blocks += in_row
    used: set[int] = set()
    chosen: list[SeatRef] = []
    while len(chosen) < count and blocks:
        need = count - len(chosen)
        fitting = [b for b in blocks if b.size >= need]
        if fitting:
            block = min(
                fitting, key=lambda b: (b.place.rank not in used, b.place.rank, b.off_centre(need))
            )
        else:
            block = min(blocks, key=lambda b: (-b.size, b.place.rank not in used, b.place.rank))
        blocks.remove(block)
        used.add(block.place.rank)
        chosen += [block.place.seat(n) for n in block.window(min(need, block.size))]
    return chosen


def _distance(number: int, near_numbers: Sequence[int]) -> int:
    return min(abs(number - m) for m in near_numbers)


def _joined(place: _Place, near_numbers: Set[int], taken: Set[SeatKey]) -> set[int]:
    """Free seats reachable from a near seat along the row without crossing a taken seat."""
    joined: set[int] = set()
    for origin in near_numbers:
        for step in (-1, 1):
            n = origin + step
            while place.row.start <= n <= place.row.end and (
                n in near_numbers or place.is_free(n, taken)
            ):
                joined.add(n)
                n += step
    return joined - near_numbers


def _near_rows(places: Sequence[_Place], near: Sequence[SeatRef]) -> dict[int, list[int]]:
    """Seat numbers of the near seats by the rank of their row (rows the type may use)."""
    rank_of = {(p.section.id, p.row.identifier): p.rank for p in places}
    rows: dict[int, list[int]] = {}
    for seat in near:
        rank = rank_of.get((seat.section_id, seat.row))
        if rank is not None:
            rows.setdefault(rank, []).append(seat.seat_number)
    return rows


def _near_candidates(
    places: Sequence[_Place], near: Sequence[SeatRef], taken: Set[SeatKey]
) -> list[tuple[tuple[int, ...], SeatRef]]:
    """Free seats in the near seats' sections with their sort keys (tiers 1 and 2); none
    without near seats (the sales desk choosing a purchase's seats asks so, twice a purchase:
    mapping every row's rank for nothing was an eighth of its choice)."""
    if not near:
        return []
    near_rows = _near_rows(places, near)
    by_section: dict[int, list[int]] = {}
    for rank in near_rows:
        by_section.setdefault(places[rank].section.id, []).append(rank)
    candidates = []
    for place in places:
        ranks = by_section.get(place.section.id)
        if ranks is None:
            continue
        own = near_rows.get(place.rank)
        joined = _joined(place, set(own), taken) if own else set()
        numbers = own or [n for r in ranks for n in near_rows[r]]
        row_distance = min(abs(place.rank - r) for r in ranks)
        for n in range(place.row.start, place.row.end + 1):
            if not place.is_free(n, taken):
                continue
            spread = (_distance(n, numbers), place.off_centre(n))
            key = (0, n not in joined, *spread) if own else (1, row_distance, place.rank, *spread)
            candidates.append(((*key, place.rank, n), place.seat(n)))
    return candidates


def best_available(
    sections: Sequence[Section],
    allowed_section_ids: Sequence[int],
    taken: Set[SeatKey],
    count: int,
    near: Sequence[SeatRef] = (),
) -> list[SeatRef]:
    """Up to `count` free seats for a ticket type allowed in `allowed_section_ids`, scored as
    the module docstring describes."""
    if count <= 0:
        return []
    known = _places(sections, allowed_section_ids)
    places = known.rows
    unavailable = TakenSeats.of(taken).plus(by_row(map(seat_key, near)))
    candidates = sorted(_near_candidates(places, near, unavailable), key=lambda c: c[0])
    chosen = [seat for _, seat in candidates[:count]]
    # Short of seats, every free seat of the near seats' sections is chosen by now, so the
    # blocks found next lie in the other sections.
    unavailable = unavailable.plus(by_row(map(seat_key, chosen)))
    chosen += _by_blocks(places, unavailable, count - len(chosen))
    return sorted(chosen, key=lambda s: (known.rank_of[(s.section_id, s.row)], s.seat_number))


def outside_lane(
    sections: Sequence[Section], lanes: int, lane: int
) -> dict[RowKey, frozenset[int]]:
    """Every seat of the rows outside lane `lane` of `lanes`, each section's rows dealt out in
    turn from the front (lane 0 the first row, lane 1 the second, ...). Taken as if sold, they
    keep one gateway's suggestions out of the rows others suggest from at the same moment."""
    return _LANES.get(
        sections,
        (lanes, lane),
        lambda: {
            (section.id, row.identifier): frozenset(range(row.start, row.end + 1))
            for section in sections
            if section.seating_mode == "seated"
            for index, row in enumerate(section.rows)
            if index % lanes != lane
        },
    )
